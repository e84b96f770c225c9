"""The free space of one partition, as its file system's own allocation bitmap says (issue 17's capture: the
agent sends it as zeros, so chunks of free space are holes). What ``CapturedFs`` reports per partition.

``free_space(read, offset, size)`` recognises the file system at ``offset`` by its magic (ext2/3/4: 0xEF53 at
byte 1080; NTFS: ``NTFS    `` at byte 3; FAT: a boot sector with a BPB, see ``fat.looks_fat``) and asks its
reader (``ext``, ``fat``, ``ntfs``). Anything else is ``unknown``, all of it data. Two signatures at once (an
ext superblock beside a FAT boot sector, or beside a LUKS, LVM2, XFS, swap, btrfs or md RAID signature: one of
them left over by an earlier file system) are refused as blkid refuses an "ambivalent" probe: reading the stale
one's bitmaps would free the live one's data.

Data safety comes first: calling a used block free destroys data in the captured image, so a reader that meets
anything it cannot account for (a bad magic, a count that does not add up, a checksum that does not match, a
bitmap outside the partition, a journal to replay, a short read) gives ``free=()`` with a ``note`` in plain
words, and a warning is logged with the offset. A bitmap that reads right is trusted as the file system itself
trusts it. The free ranges are absolute disk byte ranges, sorted, merged, inside the partition and in whole
allocation units.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from provision.agent.capture.common import Found, FsProblem, Range, Read, Volume
from provision.agent.capture.ext import MAGIC as EXT_MAGIC
from provision.agent.capture.ext import kind_of, read_ext
from provision.agent.capture.fat import looks_fat, read_fat
from provision.agent.capture.ntfs import read_ntfs
from provision.agent.ranges import merge
from provision.wire.capture import CapturedFs, FsKind

log = logging.getLogger(__name__)

__all__ = ["FreeSpace", "Read", "free_space"]

MAX_NOTE, MAX_LABEL = 500, 128  # CapturedFs limits
KINDS: dict[str, FsKind] = {"ext2": "ext2", "ext3": "ext3", "ext4": "ext4", "vfat": "vfat", "ntfs": "ntfs"}
HEAD = 65536 + 4096  # bytes read first: every signature below
OTHERS = (
    (0, b"LUKS\xba\xbe", "LUKS"), (512, b"LABELONE", "LVM2"), (0, b"XFSB", "xfs"),
    (4086, b"SWAPSPACE2", "swap"), (4086, b"SWAP-SPACE", "swap"), (65536 + 64, b"_BHRfS_M", "btrfs"),
    (0, b"\xfc\x4e\x2b\xa9", "md RAID"), (4096, b"\xfc\x4e\x2b\xa9", "md RAID"),
)  # fmt: skip


@dataclass(frozen=True)
class FreeSpace:
    """One partition's file system and the disk byte ranges it marks free (``note``: why none, when none)."""

    fs: FsKind
    offset: int  # the partition's first byte on the disk
    size: int  # the partition's bytes
    block_size: int  # the allocation unit (ext block, FAT cluster, NTFS cluster); 0 when unknown
    free: tuple[tuple[int, int], ...]  # absolute (start, length): sorted, merged, inside, whole units
    label: str | None = None
    note: str | None = None  # why nothing was taken as free

    @property
    def free_bytes(self) -> int:
        return sum(length for _, length in self.free)

    def captured(self, partition: int) -> CapturedFs:
        """The wire record of this partition (number ``partition``)."""
        return CapturedFs(
            partition=partition, offset=self.offset, size=self.size, fs=self.fs, block_size=self.block_size,
            free_bytes=self.free_bytes, label=self.label[:MAX_LABEL] if self.label else None,
            note=self.note[:MAX_NOTE] if self.note else None,
        )  # fmt: skip


def free_space(read: Read, offset: int, size: int) -> FreeSpace:
    """The file system at ``offset`` (``size`` bytes) of the disk ``read`` reads, and its free ranges."""
    kind: FsKind = "unknown"
    try:
        head = read(offset, min(size, HEAD)) if size >= 2048 else b""
        if len(head) < min(size, HEAD) or len(head) < 2048:
            return _fallback(FsProblem(kind, f"the partition's first bytes do not read ({len(head)} read)"),
                             offset, size)  # fmt: skip
        found_kinds = signatures(head)
        if len(found_kinds) > 1:  # blkid's "ambivalent": one of them is stale, nothing tells which
            problem = f"signatures of {' and '.join(found_kinds)} at once: which one is stale is not known"
            kind = KINDS.get(found_kinds[0], "unknown")
            return _fallback(FsProblem(kind, problem), offset, size)
        if struct.unpack_from("<H", head, 1024 + 56)[0] == EXT_MAGIC:
            kind = kind_of(head[1024:])
            found = read_ext(Volume(read, offset, size, kind))
        elif head[3:11] == b"NTFS    ":
            kind = "ntfs"
            found = read_ntfs(Volume(read, offset, size, kind))
        elif looks_fat(head[:512]):
            kind = "vfat"
            found = read_fat(Volume(read, offset, size, kind))
        else:
            return FreeSpace("unknown", offset, size, 0, (), note="no ext2/3/4, vfat or NTFS file system found")
    except FsProblem as problem:
        return _fallback(problem, offset, size)
    except OSError as exc:
        return _fallback(FsProblem(kind, f"read error: {exc}"), offset, size)
    except (struct.error, ValueError, IndexError, OverflowError) as exc:  # a field the checks did not foresee
        return _fallback(FsProblem(kind, f"unreadable ({type(exc).__name__}: {exc})"), offset, size)
    return _result(found, offset, size)


def signatures(head: bytes) -> list[str]:
    """The file systems and containers whose signature the partition's first ``HEAD`` bytes carry (the ones
    read here, and others that overwrite an old superblock: LUKS, LVM2, XFS, swap, btrfs, md RAID 1.1/1.2)."""
    found: list[str] = []
    if struct.unpack_from("<H", head, 1024 + 56)[0] == EXT_MAGIC:
        found.append(kind_of(head[1024:2048]))
    if head[3:11] == b"NTFS    ":
        found.append("ntfs")
    elif looks_fat(head[:512]):
        found.append("vfat")
    for at, magic, name in OTHERS:
        if head[at : at + len(magic)] == magic:
            found.append(name)
    return found


def _fallback(problem: FsProblem, offset: int, size: int) -> FreeSpace:
    log.warning("partition at byte %d (%d bytes, %s): nothing taken as free: %s", offset, size, problem.fs,
                problem.message)  # fmt: skip
    return FreeSpace(problem.fs, offset, size, problem.block_size, (), problem.label, problem.message)


def _result(found: Found, offset: int, size: int) -> FreeSpace:
    """The reader's ranges merged; each checked inside the partition and in whole units (else nothing free)."""
    unit = found.block_size
    free: list[Range] = merge(found.free)
    for start, length in free:
        if start < offset or start + length > offset + size or unit <= 0 or (start - offset) % unit or length % unit:
            problem = f"free range {start}+{length} is outside the partition or not in {unit}-byte units"
            return _fallback(FsProblem(found.fs, problem, block_size=unit, label=found.label), offset, size)
    space = FreeSpace(found.fs, offset, size, unit, tuple(free), found.label)
    log.info("partition at byte %d: %s, %d-byte units, %d bytes free in %d ranges", offset, found.fs, unit,
             space.free_bytes, len(free))  # fmt: skip
    return space
