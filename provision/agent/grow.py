"""Grow the root partition and its ext4 file system to the end of the disk, after a verified write.

Pure-Python GPT (struct + zlib.crc32, read and checked by ``rootpart.Gpt``): checked first (``GptInvalid``,
nothing written), then the backup GPT written at the disk's end (fsync), then the primary and the protective
MBR (fsync). The kernel is told with ``BLKRRPART`` (``partx -u`` when busy); ``e2fsck -f -p`` and
``resize2fs`` run on the partition node or on an offset loop device. Every step and choice:
``docs/agent.md``, "Growing the root file system".
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import subprocess
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from provision.agent.errors import GrowToolFailed
from provision.agent.inventory import Runner
from provision.agent.rootpart import (
    BLKRRPART,
    LINUX_FS,
    NODE_TIMEOUT,
    ROOT_X86_64,
    TOOL_TIMEOUT,
    FsInfo,
    Gpt,
    MiB,
    Part,
    RawDisk,
    Tools,
    drop_cache,
    find_partition_node,
    find_root,
    gpt_crc,
    read_fs,
    tell_kernel,
)

_tell_kernel = tell_kernel  # its name before rootpart.py

__all__ = [
    "BLKRRPART", "LINUX_FS", "NODE_TIMEOUT", "ROOT_X86_64", "TOOL_TIMEOUT", "FsInfo", "GrowResult",
    "find_partition_node", "grow_root", "read_fs",
]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrowResult:
    """What ``grow_root`` did. ``grown``: the root partition or its file system got bigger in this run."""

    device: str
    grown: bool
    reason: str | None  # why nothing grew
    partition: int | None
    sector_size: int
    disk_bytes: int
    partition_grown: bool = False
    old_end_lba: int | None = None
    new_end_lba: int | None = None
    old_size_bytes: int | None = None
    new_size_bytes: int | None = None
    gpt_moved: bool = False  # the backup GPT was moved to the end of the disk
    kernel: str = "unchanged"  # how the kernel learned the new partition size
    fs_type: str | None = None
    fs_resized: bool = False
    fs_note: str = ""
    fs_size_before: int | None = None
    fs_size_after: int | None = None
    fs_device: str | None = None  # where e2fsck and resize2fs ran
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


class _GrowGpt(Gpt):
    """The checked primary GPT, and how to write it back moved to the end of the disk."""

    def header_for(self, my: int, alt: int, last: int, entries_lba: int) -> bytes:
        header = bytearray(self.header)
        struct.pack_into("<QQ", header, 24, my, alt)
        struct.pack_into("<Q", header, 48, last)
        struct.pack_into("<Q", header, 72, entries_lba)
        struct.pack_into("<I", header, 88, zlib.crc32(self.entries))
        gpt_crc(header, self.size)
        return bytes(header)

    def write(self, disk: RawDisk, root: Part | None, new_end: int | None) -> None:
        """Move the backup GPT to the end of the disk and give ``root`` its ``new_end``, in the safe order."""
        ss, old_alt = disk.ss, self.alt
        self.alt, self.last = disk.sectors - 1, disk.sectors - 2 - self.array_sectors
        if root is not None and new_end is not None:
            struct.pack_into("<Q", self.entries, (root.number - 1) * self.entry_size + 40, new_end)
        disk.write((self.last + 1) * ss, bytes(self.entries))
        disk.write(self.alt * ss, self.header_for(self.alt, 1, self.last, self.last + 1))
        os.fsync(disk.fd)
        disk.write(self.entries_lba * ss, bytes(self.entries))
        disk.write(ss, self.header_for(1, self.alt, self.last, self.entries_lba))
        mbr = bytearray(disk.read(0, 512))
        protective = [at for at in range(446, 510, 16) if mbr[at + 4] == 0xEE] if mbr[510:] == b"\x55\xaa" else []
        if protective:
            struct.pack_into("<I", mbr, protective[0] + 12, min(disk.sectors - 1, 0xFFFFFFFF))
            disk.write(0, bytes(mbr))
        os.fsync(disk.fd)
        if old_alt <= self.last:  # the old backup header, now free space (or inside the root): not a GPT any more
            disk.write(old_alt * ss, bytes(ss))
            os.fsync(disk.fd)


def grow_root(
    target: Path | str, *, run: Runner = subprocess.run, sector_size: int | None = None,
    node_timeout: float = NODE_TIMEOUT, tool_timeout: float = TOOL_TIMEOUT, sys_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"),
) -> GrowResult:  # fmt: skip
    """Grow the root partition of ``target`` (a disk, or a file standing in for one) and its ext file system
    to the end of the disk. Raises ``GptInvalid``, ``GrowToolFailed`` or ``TargetError``."""
    started, path, notes = time.monotonic(), Path(target), list[str]()
    disk = RawDisk(path, sector_size)
    try:
        gpt = _GrowGpt(disk)
        root, reason = find_root(gpt.parts)
        last_ok, new_end, new_last = reason is None, None, disk.sectors - 2 - gpt.array_sectors
        if root is not None and reason is None:
            end = root.first + (new_last + 1 - root.first) * disk.ss // MiB * MiB // disk.ss - 1
            new_end = end if end > root.last else None
            if new_end is None:
                reason = (f"nothing to grow: root partition {root.number} ends at LBA {root.last}, the last usable "
                          f"LBA is {new_last}: no whole MiB to gain")  # fmt: skip
        moved = gpt.alt != disk.sectors - 1
        if new_end is not None or moved:
            gpt.write(disk, root, new_end)
        kernel, scans = ("unchanged", True) if disk.block else ("regular file: nothing to tell", False)
        if disk.block and root is not None and new_end is not None:
            kernel, scans = tell_kernel(disk.fd, disk.name, root.number, run)
    finally:
        os.close(disk.fd)
    ss = disk.ss
    result = GrowResult(disk.name, new_end is not None, reason, None, ss, disk.size, gpt_moved=moved, kernel=kernel)
    if root is None:
        return _done(result, started, notes)
    end = new_end or root.last
    part_bytes, offset = (end - root.first + 1) * ss, root.first * ss
    result = replace(result, partition=root.number, partition_grown=new_end is not None, old_end_lba=root.last,
                     new_end_lba=end, old_size_bytes=(root.last + 1 - root.first) * ss,
                     new_size_bytes=part_bytes)  # fmt: skip
    if not last_ok:
        return _done(result, started, notes)
    fs = read_fs(path, offset)
    result = replace(result, fs_type=fs.type, fs_size_before=fs.size)
    if fs.size is None or fs.block_size is None:
        return _done(result, started, notes, fs_note=f"not resized: {fs.type}")
    if fs.size >= part_bytes // fs.block_size * fs.block_size:
        return _done(result, started, notes, fs_size_after=fs.size, fs_note="already fills its partition")
    facts = {"partition": root.number, "partition_grown": result.partition_grown,
             "old_end_lba": root.last, "new_end_lba": result.new_end_lba, "fs_size": fs.size}  # fmt: skip
    tools = Tools(run, tool_timeout, disk.name, facts, notes, GrowToolFailed)
    with contextlib.ExitStack() as stack:
        node = None
        if disk.block:
            wait = node_timeout if scans else 0.0
            node = find_partition_node(path, root.number, part_bytes, timeout=wait, sys_root=sys_root,
                                       dev_root=dev_root, start=offset)  # fmt: skip
            if node is None:
                notes.append(f"no partition node {root.number} of {part_bytes} bytes after {wait:g} s: offset loop")
            else:
                drop_cache(node)  # pages cached before the write (a probe of the old disk's partition)
        device = str(node) if node else stack.enter_context(tools.offset_loop(disk.name, offset, part_bytes))
        tools(["e2fsck", "-f", "-p", device], ok=(0, 1))
        tools(["resize2fs", device], meaning="resize failed")
        after = read_fs(device, 0) if disk.block else read_fs(path, offset)  # a file's loop shares its page cache
    if disk.block:
        drop_cache(path)  # the disk's own cached pages of the file system are stale now
    return _done(result, started, notes, grown=True, reason=None, fs_resized=True, fs_size_after=after.size,
                 fs_device=device if node else f"{device} (loop at offset {offset} of {disk.name})",
                 fs_note=f"resized from {fs.size} to {after.size} bytes")  # fmt: skip


def _done(result: GrowResult, started: float, notes: list[str], **changes: Any) -> GrowResult:
    done = replace(result, seconds=round(time.monotonic() - started, 3), notes=tuple(notes), **changes)
    log.info("grow %s: %s", done.device, done.fs_note or done.reason or "grown")
    return done
