"""The initramfs: the prepared tree plus this build's additions, as one zstd-compressed cpio archive.

``pack_initrd`` walks the cached tree (sorted, without following symlinks; ``exclude`` drops paths, e.g.
the firmware folder whose selected files come back as additions), then writes the additions (``Item``s:
modules, firmware, agent code, scripts, keys, device nodes), which win over tree entries of the same path.
The archive is streamed into a ``zstandard`` compressor (Debian's kernel has ``CONFIG_RD_ZSTD``): nothing
is held in memory or written uncompressed. The output is written to a temporary file and renamed.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import zstandard

from provision.initramfs import CpioStream

log = logging.getLogger(__name__)

DEFAULT_LEVEL = 19
Kind = Literal["file", "dir", "symlink", "char"]


@dataclass(frozen=True)
class Item:
    """One entry added to the archive: bytes or a file on disk, a folder, a symlink or a device."""

    kind: Kind
    mode: int = 0o644
    data: bytes = b""
    source: Path | None = None
    target: str = ""
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def text(cls, text: str, mode: int = 0o644) -> Item:
        return cls("file", mode, text.encode())

    @classmethod
    def copy(cls, source: Path, mode: int | None = None) -> Item:
        return cls("file", stat.S_IMODE(source.stat().st_mode) if mode is None else mode, source=source)


@dataclass(frozen=True)
class PackStats:
    entries: int
    tree_entries: int
    added: int
    uncompressed: int  # bytes of the cpio archive
    compressed: int
    seconds: float


@dataclass(frozen=True)
class _Node:
    rel: str
    st: os.stat_result


def walk_tree(root: Path, exclude: Callable[[str], bool]) -> list[_Node]:
    """Every path under ``root`` (folders before their content, names sorted), minus ``exclude``d ones."""
    nodes: list[_Node] = []
    for current, dirs, files in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        kept = []
        for name in sorted(dirs):
            rel = prefix + name
            st = (Path(current) / name).lstat()
            if exclude(rel):
                continue
            nodes.append(_Node(rel, st))
            if stat.S_ISDIR(st.st_mode):
                kept.append(name)
        dirs[:] = kept  # symlinks to folders are listed, never entered
        for name in sorted(files):
            rel = prefix + name
            if not exclude(rel):
                nodes.append(_Node(rel, (Path(current) / name).lstat()))
    return nodes


def write_tree(
    cpio: CpioStream, root: Path, nodes: list[_Node], skip: set[str], dir_modes: Mapping[str, int] | None = None
) -> int:
    """Write ``nodes`` of ``root`` (except the names in ``skip``; folders in ``dir_modes`` get that mode);
    hard links keep their inode."""
    groups: dict[tuple[int, int], list[str]] = {}
    for node in nodes:
        if stat.S_ISREG(node.st.st_mode) and node.st.st_nlink > 1 and node.rel not in skip:
            groups.setdefault((node.st.st_dev, node.st.st_ino), []).append(node.rel)
    inodes: dict[tuple[int, int], int] = {}
    written = 0
    for node in nodes:
        if node.rel in skip:
            continue
        st, mode, mtime = node.st, stat.S_IMODE(node.st.st_mode), int(node.st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            cpio.directory(node.rel, (dir_modes or {}).get(node.rel, mode), mtime)
        elif stat.S_ISLNK(st.st_mode):
            cpio.symlink(node.rel, str((root / node.rel).readlink()), mtime)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            names = groups.get(key)
            if names is None or len(names) == 1:
                cpio.file_from(node.rel, root / node.rel, st.st_size, mode, mtime)
            else:
                ino = inodes.setdefault(key, cpio.next_ino())
                if node.rel == names[-1]:
                    cpio.file_from(node.rel, root / node.rel, st.st_size, mode, mtime, ino=ino, nlink=len(names))
                else:
                    cpio.link_name(node.rel, mode, mtime, ino=ino, nlink=len(names))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
            cpio.device(node.rel, kind, os.major(st.st_rdev), os.minor(st.st_rdev), mode, mtime)
        else:
            log.warning("live: %s is neither file, folder, link nor device: left out", node.rel)
            continue
        written += 1
    return written


def write_items(cpio: CpioStream, items: Mapping[str, Item], mtime: int) -> None:
    for rel in sorted(items, key=lambda r: (r.count("/"), r)):
        item = items[rel]
        if item.kind == "dir":
            cpio.directory(rel, item.mode, mtime)
        elif item.kind == "symlink":
            cpio.symlink(rel, item.target, mtime)
        elif item.kind == "char":
            cpio.device(rel, "c", item.rdev[0], item.rdev[1], item.mode, mtime)
        elif item.source is not None:
            cpio.file_from(rel, item.source, item.source.stat().st_size, item.mode, mtime)
        else:
            cpio.file(rel, item.data, item.mode, mtime)


def pack_initrd(
    out: Path,
    root: Path,
    items: Mapping[str, Item],
    *,
    exclude: Callable[[str], bool] = lambda rel: False,
    level: int = DEFAULT_LEVEL,
    threads: int = -1,
    mtime: int = 0,
) -> PackStats:
    """Write the tree at ``root`` plus ``items`` as a zstd-compressed newc archive to ``out`` (atomically)."""
    started = time.monotonic()
    items = {rel.strip("/"): item for rel, item in items.items()}
    nodes = walk_tree(root, exclude)
    overlap = {node.rel: node for node in nodes if node.rel in items}
    dir_modes: dict[str, int] = {}
    for rel, node in overlap.items():
        tree_dir = stat.S_ISDIR(node.st.st_mode)
        if tree_dir != (items[rel].kind == "dir"):  # a folder never becomes a file, nor the reverse
            raise ValueError(f"{rel}: an addition would replace a {'folder' if tree_dir else 'file'} of the tree")
        if tree_dir:  # written in the tree's place (before its content), with the addition's mode
            dir_modes[rel] = items[rel].mode
    skip = set(overlap) - set(dir_modes)
    items = {rel: item for rel, item in items.items() if rel not in dir_modes}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    compressor = zstandard.ZstdCompressor(level=level, threads=threads)
    try:
        with tmp.open("wb") as raw:
            with compressor.stream_writer(raw, closefd=False) as stream:
                cpio = CpioStream(stream)
                tree_entries = write_tree(cpio, root, nodes, skip, dir_modes)
                write_items(cpio, items, mtime)
                cpio.close()
            raw.flush()
            os.fsync(raw.fileno())
        tmp.chmod(0o644)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stats = PackStats(
        entries=cpio.entries,
        tree_entries=tree_entries,
        added=len(items),
        uncompressed=cpio.size,
        compressed=out.stat().st_size,
        seconds=time.monotonic() - started,
    )
    log.info(
        "live: initramfs %s: %d entries, %.1f MiB -> %.1f MiB (zstd %d) in %.1f s",
        out,
        stats.entries,
        stats.uncompressed / 2**20,
        stats.compressed / 2**20,
        level,
        stats.seconds,
    )
    return stats


def write_atomic(path: Path, data: bytes | BinaryIO, mode: int = 0o644) -> None:
    """``path`` replaced by ``data`` (bytes or a readable file) through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                while block := data.read(1 << 20):
                    handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
