"""In-place rebuilds in e2e tests (issue 17): a store copied with hard links, a definition with one more package,
the goal of a rebuild, and the checks of a rebuilt disk (e2fsck, free blocks that read zero).

- ``linked_store(store, dest)``: a copy of ``store`` whose files are hard links (stored files are never changed
  in place: a new version adds files and rewrites ``current`` by rename), so a build into the copy leaves the
  original as it was, for a few KiB of disk.
- ``with_package(definition, folder, package)``: the definition written into ``folder`` (its overlays copied
  beside it) with one more package; the image name stays, so a build updates that image's current version.
- ``Goal``: new chunks <= change / 4 MiB + 10 and <= 5 % of the image's stored chunks (issue 17).
- ``root_of(version)``: the root file system's offset and size on the disk (the last partition).
- ``e2fsck_root(raw, version)``: ``e2fsck -f -n`` of the root file system of a raw disk: (exit code, output).
- ``stale_free_blocks(raw, version)``: the free-block check, read independently of the builder: every block
  the root file system's bitmap calls free (``dumpe2fs``) is read from the raw disk; returns the free bytes,
  the bytes read (the rest are holes) and the blocks that hold anything but zeros; ``plant(raw, version,
  block)`` writes non-zero bytes into one block of the root file system (the check must then find it).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from provision.images.files import data_segments
from provision.images.index import ImageVersion
from provision.images.store import ImageStore

MiB = 1 << 20
PIECE = 1 << 20


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst)


def linked_store(store: ImageStore, dest: Path) -> ImageStore:
    """A copy of ``store`` at ``dest`` made of hard links (copies across file systems); its lock is its own."""
    shutil.copytree(store.root, dest, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("lock"))
    return ImageStore(dest)


def with_package(definition: Path, folder: Path, package: str) -> Path:
    """``definition`` with ``package`` in one more package group, written into ``folder`` with its overlays."""
    spec = yaml.safe_load(definition.read_text())
    spec["packages"] = {**spec["packages"], "added": [package]}
    for overlay in spec.get("overlays", []):
        shutil.copytree(definition.parent / overlay, folder / overlay, symlinks=True)
    path = folder / definition.name
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


@dataclass(frozen=True)
class Goal:
    """Issue 17's goal for one rebuild: new chunks <= change / 4 MiB + 10, and <= 5 % of the stored chunks."""

    new_chunks: int
    stored_chunks: int
    change_bytes: int

    @property
    def by_change(self) -> int:
        return self.change_bytes // (4 * MiB) + 10

    @property
    def by_share(self) -> int:
        return self.stored_chunks * 5 // 100

    @property
    def met(self) -> bool:
        return self.new_chunks <= self.by_change and self.new_chunks <= self.by_share

    def line(self) -> str:
        share = 100 * self.new_chunks / max(self.stored_chunks, 1)
        return (
            f"{self.new_chunks} new chunks of {self.stored_chunks} stored ({share:.1f} %), change "
            f"{self.change_bytes / MiB:.2f} MiB: goal <= {self.by_change} (change / 4 MiB + 10) and <= "
            f"{self.by_share} (5 %): {'met' if self.met else 'NOT met'}"
        )


def change_bytes(rsync_stats: dict[str, str]) -> int:
    """rsync's "Total transferred file size" (bytes of every file whose content differs) of an update."""
    text = rsync_stats.get("Total transferred file size", "").replace(",", "").split(" ")[0]
    return int(text) if text.isdigit() else 0


def root_of(version: ImageVersion) -> tuple[int, int]:
    """(offset, size) in bytes of the root file system (the last partition) of ``version``'s disk."""
    index = version.index
    root = max(index.layout.partitions, key=lambda p: p.start)
    return root.start * index.sector_size, root.size * index.sector_size


def e2fsck_root(raw: Path, version: ImageVersion) -> tuple[int, str]:
    offset, _ = root_of(version)
    done = subprocess.run(["e2fsck", "-f", "-n", f"{raw}?offset={offset}"], capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


_FREE = re.compile(r"^\s+Free blocks: (.*)$", re.MULTILINE)
_BLOCK_SIZE = re.compile(r"^Block size:\s+(\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class FreeBlocks:
    block_size: int
    last_free: int | None  # the last free block (a test writes into it to show the check finds stale data)
    free_bytes: int
    read_bytes: int  # free bytes that are data in the raw file (the rest are holes)
    stale: list[int]  # free blocks (numbers in the file system) holding anything but zeros


def stale_free_blocks(raw: Path, version: ImageVersion) -> FreeBlocks:
    """Read every block ``dumpe2fs`` lists as free in the root file system of ``raw``."""
    offset, _ = root_of(version)
    listing = subprocess.run(["dumpe2fs", f"{raw}?offset={offset}"], capture_output=True, text=True, check=True)
    found = _BLOCK_SIZE.search(listing.stdout)
    assert found, listing.stdout[:2000]
    size = int(found.group(1))
    free = read = 0
    last: int | None = None
    stale: list[int] = []
    fd = os.open(raw, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for line in _FREE.findall(listing.stdout):
            for item in filter(None, (part.strip() for part in line.split(","))):
                first, _, final = item.partition("-")
                start, end = offset + int(first) * size, offset + (int(final or first) + 1) * size
                last = int(final or first)
                free += end - start
                for seg_start, seg_end in data_segments(fd, start, end):
                    for at in range(seg_start, seg_end, PIECE):
                        piece = os.pread(fd, min(PIECE, seg_end - at), at)
                        read += len(piece)
                        if piece.count(0) != len(piece):
                            stale += [
                                (at + i - offset) // size
                                for i in range(0, len(piece), size)
                                if piece[i : i + size].count(0) != len(piece[i : i + size])
                            ]
    finally:
        os.close(fd)
    return FreeBlocks(size, last, free, read, stale)


def plant(raw: Path, version: ImageVersion, block: int, block_size: int) -> None:
    """Write non-zero bytes into ``block`` of the root file system of ``raw`` (stale data, for the check)."""
    offset, _ = root_of(version)
    fd = os.open(raw, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, b"stale data " * 8, offset + block * block_size)
    finally:
        os.close(fd)
