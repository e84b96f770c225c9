"""In-place rebuilds: the current version's disk, updated to the new root tree, so unchanged files keep their blocks.

1. ``export_previous``: the current version's raw disk out of the store into the build folder, sparse (holes
   and all-zero 4 KiB blocks are not written).
2. ``check_previous``: ``e2fsck -f -n`` of its root file system, whose figures (fragmentation, blocks used)
   ``mode.decide`` weighs before anything is changed.
3. ``clear_outside_root``: everything but the root file system is punched out (MBR, GPT, BIOS boot partition,
   ESP, backup GPT); the build then writes them as a fresh build does, so they are byte for byte the same.
4. ``reproducible.clamp_tree`` then ``update_root``: the tree's times clamped as a fresh build clamps them; the root
   file system mounted through a loop device (``mount -o loop,offset=,sizelimit=``,
   ``noload``: no journal, so the journal's blocks do not change and a rebuild does not rewrite 16 chunks of
   it; ``noatime``: reading every file changes no inode), then ``rsync -aHAX --delete --checksum --inplace
   --numeric-ids`` from the new tree. rsync is a well-kept tool that already does what hand code would:
   compare by content (a tree made again has new time stamps), rewrite a changed file in its own blocks,
   remove what is gone, carry hard links, ACLs, extended attributes (file capabilities), device nodes,
   sockets and FIFOs, owners by number. The root folder is then owned by 0:0 (mke2fs's ``root_owner``) and
   the file system unmounted. All of this runs in a mount namespace of its own (``provision.builder.mounted``
   under ``unshare --pid --fork --kill-child --mount``: no other namespace can hold a copy of the mount, and the
   kernel unmounts it when that process ends, whatever happens: a timeout kills every process inside); the
   build then waits for the loop device to be gone before it reads the file again.
5. ``scrub_free_blocks``: the discard and its check. The block bitmap (``dumpe2fs``'s free ranges) says which
   blocks are free; every one of them that still holds data in the raw file (blocks freed by the update) is
   read and punched out, so freed blocks read back zero: no stale data, and a chunk left with only free
   blocks is a hole. ``fstrim`` would do the same through the loop device, but this kernel refuses FITRIM on
   a file system mounted without its journal (EROFS), and it skips free extents smaller than the loop's
   discard granularity (4 KiB: a lone 1 KiB block of a small file system).

What rsync does not carry (and needs not): ext4 inode flags (``chattr``; mke2fs -d sets none either), file
change and birth times (the kernel's), the order of directory entries, lost+found (kept, excluded). Deleted
names and inodes stay in directory blocks and inode tables as on any ext4 in use (metadata, not file data).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.builder import disk
from provision.builder.errors import ImageBuildError
from provision.builder.mode import FsFigures, parse_e2fsck_summary
from provision.builder.runner import TOOL_PACKAGES, RecordingRunner, Runner
from provision.images.files import data_segments
from provision.images.index import ImageVersion
from provision.images.store import ImageStore

log = logging.getLogger(__name__)

BLOCK = 4096
TOOLS = ("mount", "umount", "rsync", "dumpe2fs", "losetup", "unshare")
DETACH_TIMEOUT = 30.0  # seconds for the loop device to go once the namespace has ended
_FALLOC_KEEP_SIZE = 0x01
_FALLOC_PUNCH_HOLE = 0x02


def unable(runner: Runner) -> str | None:
    """Why in-place rebuilds cannot run here (None: they can)."""
    if isinstance(runner, RecordingRunner):
        return "the build's runner runs no commands"
    if os.geteuid() != 0:
        return "they need root (mount, loop devices)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        packages = sorted({TOOL_PACKAGES.get(tool, tool) for tool in missing})
        return f"{', '.join(missing)} not installed (Debian packages: {', '.join(packages)})"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    return None


def _libc_fallocate() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    fallocate = libc.fallocate
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fallocate.restype = ctypes.c_int
    return fallocate


def punch(fd: int, offset: int, length: int) -> None:
    """Make ``length`` bytes at ``offset`` read back zero and take no space (a hole); zeros are written where
    the file system cannot punch."""
    if length <= 0:
        return
    if _libc_fallocate()(fd, _FALLOC_PUNCH_HOLE | _FALLOC_KEEP_SIZE, offset, length) == 0:
        return
    code = ctypes.get_errno()
    if code not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise OSError(code, f"fallocate punch hole at {offset} (+{length}): {os.strerror(code)}")
    zeros = bytes(min(length, 1 << 20))
    done = 0
    while done < length:
        done += os.pwrite(fd, zeros[: min(len(zeros), length - done)], offset + done)


def export_previous(store: ImageStore, version: ImageVersion, raw: Path) -> int:
    """Write ``version``'s raw disk to ``raw``, sparse; every chunk is checked against its sha256 on the way
    (ImageError names a missing or corrupt one). Returns the bytes written."""
    ix = version.index
    raw.unlink(missing_ok=True)
    written = 0
    zero_block = bytes(BLOCK)
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, ix.disk_size)
        items = [(c.sha256, c.length) for c in ix.chunks]
        offset = 0
        for (_sha, length), data in zip(items, store.chunks.read_many(items), strict=True):
            if isinstance(data, Exception):
                raise data
            if data is not None:
                view = memoryview(data)
                start = None
                for at in range(0, length, BLOCK):  # runs of non-zero blocks, written at once
                    if view[at : at + BLOCK] != zero_block[: min(BLOCK, length - at)]:
                        start = at if start is None else start
                        continue
                    if start is not None:
                        written += os.pwrite(fd, view[start:at], offset + start)
                        start = None
                if start is not None:
                    written += os.pwrite(fd, view[start:length], offset + start)
            offset += length
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def _block_size(dumpe2fs_header: str) -> int:
    found = re.search(r"^Block size:\s+(\d+)", dumpe2fs_header, re.MULTILINE)
    return int(found.group(1)) if found else BLOCK


def check_previous(runner: Runner, raw: Path, layout: disk.DiskLayout) -> FsFigures | None:
    """``e2fsck -f -n`` of the exported root file system: clean or not, fragmentation, blocks used."""
    target = f"{raw}?offset={layout.root_offset}"
    header = runner.run("previous", ["dumpe2fs", "-h", target], check=False)
    done = runner.run("previous", ["e2fsck", "-f", "-n", target], check=False)
    return parse_e2fsck_summary(done.stdout, clean=done.returncode == 0, block_size=_block_size(header.stdout))


def clear_outside_root(raw: Path, layout: disk.DiskLayout) -> None:
    """Punch out every byte outside the root file system: the build writes them again as a fresh build does."""
    fd = os.open(raw, os.O_RDWR | os.O_CLOEXEC)
    try:
        punch(fd, 0, layout.root_offset)
        end = layout.root_offset + layout.root_size
        punch(fd, end, layout.size - end)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ScrubFigures:
    """The free-block check: free bytes of the root file system, how many were still data in the raw file
    (read), and how many of those held non-zero bytes (punched out)."""

    free_bytes: int
    read_bytes: int
    stale_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"free_bytes": self.free_bytes, "read_bytes": self.read_bytes, "stale_bytes": self.stale_bytes}


_FREE = re.compile(r"^\s+Free blocks: (.*)$", re.MULTILINE)


def free_ranges(dumpe2fs: str) -> list[tuple[int, int]]:
    """(first block, count) of every free range of ``dumpe2fs``'s per-group listing."""
    ranges = []
    for line in _FREE.findall(dumpe2fs):
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            first, _, last = item.partition("-")
            start = int(first)
            ranges.append((start, int(last or first) - start + 1))
    return ranges


def scrub_free_blocks(runner: Runner, raw: Path, layout: disk.DiskLayout, *, repair: bool = True) -> ScrubFigures:
    """Check that every free block of the root file system reads back zero; with ``repair``, punch out every
    free block that holds data. Returns the figures (``stale_bytes``: non-zero bytes found in free blocks)."""
    listing = runner.run("filesystems", ["dumpe2fs", f"{raw}?offset={layout.root_offset}"], check=True)
    size = _block_size(listing.stdout)
    free = read = stale = 0
    flags = os.O_RDWR if repair else os.O_RDONLY
    fd = os.open(raw, flags | os.O_CLOEXEC)
    try:
        for first, count in free_ranges(listing.stdout):
            start = layout.root_offset + first * size
            end = start + count * size
            free += end - start
            for seg_start, seg_end in data_segments(fd, start, end):
                at = seg_start
                while at < seg_end:
                    piece = os.pread(fd, min(1 << 20, seg_end - at), at)
                    if not piece:
                        break
                    read += len(piece)
                    if piece.count(0) != len(piece):
                        stale += (
                            sum(
                                1
                                for i in range(0, len(piece), size)
                                if piece[i : i + size].count(0) != len(piece[i : i + size])
                            )
                            * size
                        )
                        if repair:
                            punch(fd, at, len(piece))
                    at += len(piece)
    finally:
        os.close(fd)
    return ScrubFigures(free, read, stale)


@dataclass(frozen=True)
class UpdateFigures:
    """What an in-place update of the root file system did."""

    rsync_stats: dict[str, str]  # rsync --stats lines of interest
    scrub: ScrubFigures

    def to_dict(self) -> dict[str, Any]:
        return {"rsync": self.rsync_stats, "free_blocks": self.scrub.to_dict()}


_STATS = (
    "Number of files",
    "Number of created files",
    "Number of deleted files",
    "Number of regular files transferred",
    "Total transferred file size",
)


def _rsync_stats(output: str) -> dict[str, str]:
    stats = {}
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in _STATS:
            stats[key.strip()] = value.strip()
    return stats


def _loops_of(runner: Runner, raw: Path) -> list[str]:
    attached = runner.run("filesystems", ["losetup", "--noheadings", "--output", "NAME", "-j", str(raw)], check=False)
    return attached.stdout.split()


def _wait_detached(runner: Runner, raw: Path, image: str) -> None:
    """The loop device of ``raw`` must be gone before the file is read: while it is attached, the file system
    may live on somewhere with writes not yet in the file."""
    deadline = time.monotonic() + DETACH_TIMEOUT
    while True:
        loops = _loops_of(runner, raw)
        if not loops:
            return
        if time.monotonic() > deadline:
            raise ImageBuildError(
                f"image {image}: the root file system of {raw} is still in use after its update "
                f"({', '.join(loops)} attached after {DETACH_TIMEOUT:.0f} s)",
                image=image, step="filesystems", loops=loops,
            )  # fmt: skip
        time.sleep(0.2)


def mounted_argv(raw: Path, layout: disk.DiskLayout, tree: Path, mountpoint: Path, rsync: str = "rsync") -> list[str]:
    """The command that mounts, updates and unmounts the root file system in a mount namespace of its own."""
    return [
        # --pid --fork --kill-child: the helper is the first process of a PID namespace of its own and dies with
        # unshare (a build timeout kills unshare): every process in it (rsync) goes too, so the mount does
        "unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--",
        sys.executable, "-m", "provision.builder.mounted",
        f"--raw={raw}", f"--offset={layout.root_offset}", f"--size={layout.root_size}",
        f"--tree={tree}", f"--mountpoint={mountpoint}", f"--rsync={rsync}",
    ]  # fmt: skip


def update_root(runner: Runner, raw: Path, layout: disk.DiskLayout, tree: Path, work: Path) -> UpdateFigures:
    """Apply ``tree`` to the root file system of ``raw`` in place (``provision.builder.mounted`` in a private
    mount namespace: mount, rsync, unmount), wait until its loop device is gone, then punch out its free blocks
    and count the stale bytes they held."""
    mountpoint = work / "root-mount"
    mountpoint.mkdir(mode=0o700, exist_ok=True)
    try:
        done = runner.run("filesystems", mounted_argv(raw, layout, tree, mountpoint))
    except BaseException:
        try:  # the update's own failure is the one to tell; a loop device still attached is only logged
            _wait_detached(runner, raw, layout.image)
        except ImageBuildError as exc:
            log.warning("image %s: after a failed update: %s", layout.image, exc)
        raise
    _wait_detached(runner, raw, layout.image)
    scrub = scrub_free_blocks(runner, raw, layout)
    runner.log.write(
        f"  free blocks: {scrub.free_bytes} bytes, {scrub.read_bytes} of them held data (read, punched out), "
        f"{scrub.stale_bytes} non-zero"
    )
    return UpdateFigures(_rsync_stats(done.stdout), scrub)
