"""The files of a version's root file system, read without mounting anything.

The root partition (GPT type "root x86-64", else the partition named ``root``, else an MBR Linux partition,
else the largest) is written from the version's chunks into a sparse file of its own; ``debugfs -R "rdump /
DIR"`` (e2fsprogs, in user space: no kernel file system driver, no loop device, no root needed) copies its
tree into a private folder, and every path is walked: kind, mode, owner, size, and the sha256 of each file
(a link: its target). The copy is removed as soon as the manifest is made. Device nodes, FIFOs and sockets
are not copied by ``rdump`` and so are not compared. Only ext2/3/4 root file systems are read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from provision.images.diff import FileEntry
from provision.images.errors import ImageError
from provision.images.index import ImageVersion
from provision.images.partitions import Partition
from provision.images.versions import Versions

log = logging.getLogger(__name__)

ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
EXT_MAGIC_AT = 1080  # s_magic in the superblock, 1024 bytes into the file system
EXT_MAGIC = b"\x53\xef"
DEBUGFS_TIMEOUT = 1800.0


def root_partition(version: ImageVersion) -> Partition | None:
    """The partition that holds the root file system, by type, then name, then size."""
    parts = version.index.layout.partitions
    for found in (
        [p for p in parts if p.type.upper() == ROOT_X86_64],
        [p for p in parts if p.name == "root"],
        [p for p in parts if p.type == "83"],
        list(parts),
    ):
        if found:
            return max(found, key=lambda p: p.size)
    return None


def partition_key(part: Partition) -> str:
    return f"{part.number} {part.name}".strip()


def write_partition(store: Versions, version: ImageVersion, part: Partition, out: Path) -> int:
    """Write the bytes of ``part`` (from the version's chunks, each checked) into the sparse file ``out``.
    Returns the partition's size in bytes."""
    ix = version.index
    first = part.start * ix.layout.sector_size
    end = part.end * ix.layout.sector_size
    with out.open("wb") as f:
        for i, c in enumerate(ix.chunks):
            start = ix.offset(i)
            if c.sha256 is None or start + c.length <= first or start >= end:
                continue
            data = store.chunks.read(c.sha256, c.length)
            lo, hi = max(start, first), min(start + c.length, end)
            f.seek(lo - first)
            f.write(data[lo - start : hi - start])
        f.truncate(end - first)
    return end - first


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def manifest(tree: Path) -> dict[str, FileEntry]:
    """path ("/etc/hostname") -> FileEntry of every path below ``tree`` (not following links)."""
    found: dict[str, FileEntry] = {}
    for folder, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            path = Path(folder, name)
            st = os.lstat(path)
            rel = "/" + path.relative_to(tree).as_posix()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                entry = FileEntry("dir", mode, st.st_uid, st.st_gid, st.st_size)
            elif stat.S_ISLNK(st.st_mode):
                entry = FileEntry("link", mode, st.st_uid, st.st_gid, st.st_size, str(path.readlink()))
            elif stat.S_ISREG(st.st_mode):
                entry = FileEntry("file", mode, st.st_uid, st.st_gid, st.st_size, _sha256(path))
            else:
                entry = FileEntry("other", mode, st.st_uid, st.st_gid, 0)
            found[rel] = entry
    return found


def dump_tree(device: Path, out: Path, *, what: str) -> None:
    """``debugfs -R "rdump / OUT" DEVICE``: the file system's tree into ``out``. ImageError when debugfs is
    missing, or the file is not an ext2/3/4 file system."""
    with device.open("rb") as f:
        f.seek(EXT_MAGIC_AT)
        if f.read(2) != EXT_MAGIC:
            raise ImageError(f"{what}: not an ext2/3/4 file system: its files cannot be read", what=what)
    if shutil.which("debugfs") is None:
        raise ImageError(f"{what}: debugfs is missing: install e2fsprogs to compare files", what=what)
    if '"' in str(out):  # debugfs splits its request on blanks; the folder is quoted, so it cannot hold a quote
        raise ImageError(f"{what}: the scratch folder {str(out)!r} holds a double quote: choose another", what=what)
    out.mkdir()
    try:
        done = subprocess.run(
            ["debugfs", "-R", f'rdump / "{out}"', str(device)],
            capture_output=True,
            text=True,
            timeout=DEBUGFS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: debugfs did not read the files within {DEBUGFS_TIMEOUT:.0f} s", what=what) from None
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    if done.returncode != 0:
        raise ImageError(f"{what}: debugfs failed (exit {done.returncode}): {tail[0]}", what=what)
    if not any(out.iterdir()):  # debugfs exits 0 when rdump fails (a folder it cannot write, a full disk)
        raise ImageError(f"{what}: debugfs wrote no file (its last words: {tail[0]})", what=what)


def read_root_files(store: Versions, version: ImageVersion, scratch: Path) -> tuple[dict[str, FileEntry], str]:
    """The manifest of ``version``'s root file system and which partition it is ("3 root"). Works in a
    private folder below ``scratch``, removed before returning. ImageError when there is none to read."""
    part = root_partition(version)
    if part is None:
        raise ImageError(f"{version.ref}: no partition: no files to compare", ref=version.ref)
    key = partition_key(part)
    work = Path(tempfile.mkdtemp(prefix="provision-diff-", dir=scratch))
    try:
        device = work / "partition.img"
        size = write_partition(store, version, part, device)
        log.info("image diff: %s partition %s (%d bytes) written to %s", version.ref, key, size, device)
        dump_tree(device, work / "tree", what=f"{version.ref} partition {key}")
        device.unlink()
        return manifest(work / "tree"), key
    finally:
        shutil.rmtree(work, ignore_errors=True)
