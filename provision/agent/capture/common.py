"""What the free-space readers share: the disk reader, a partition's bounded view of it, the problem they raise
instead of guessing, bit and table runs, and the two checksums ext4 uses (CRC32C, CRC16).

- ``Volume`` reads bytes of one partition by their offset inside it and refuses a read that would leave the
  partition or comes back short (``FsProblem``): a bitmap block "outside the partition" is a damaged file system.
- ``clear_bit_runs``: runs of clear bits of a bitmap in LSB-first order (ext4 block bitmaps and the NTFS
  ``$Bitmap`` both number bit ``i`` as bit ``i % 8`` of byte ``i // 8``), found with a regular expression over the
  bytes so that full (``0xff``) bytes cost nothing in Python; ``zero_entry_runs`` does the same for FAT16/FAT32
  entries (runs of all-zero entries of 2 or 4 bytes).
- ``crc32c`` is the kernel's ``crc32c()`` (Castagnoli polynomial 0x82F63B78, reflected, no final inversion: the
  caller passes the seed, ext4 passes ``~0``); ``crc16`` is lib/crc16.c (polynomial 0x8005 reflected, 0xA001),
  used by the older ``uninit_bg`` (gdt_csum) group descriptor checksum.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from provision.wire.capture import FsKind

Read = Callable[[int, int], bytes]  # (absolute offset on the disk, length) -> bytes (short only at the end)
Range = tuple[int, int]  # (start, length)


class FsProblem(Exception):
    """A file system that does not read as its format says: nothing of it is taken as free. ``fs`` is the kind
    recognised (by its magic), ``block_size`` its allocation unit when already known."""

    def __init__(self, fs: FsKind, message: str, *, block_size: int = 0, label: str | None = None) -> None:
        super().__init__(message)
        self.fs, self.message, self.block_size, self.label = fs, message, block_size, label


@dataclass(frozen=True)
class Found:
    """What a reader found: the kind, the allocation unit, the free ranges (absolute, in any order) and a label."""

    fs: FsKind
    block_size: int
    free: list[Range]
    label: str | None = None


class Volume:
    """One partition of the disk: ``read(at, length, what)`` reads at ``at`` bytes from its start."""

    def __init__(self, read: Read, offset: int, size: int, fs: FsKind) -> None:
        self.raw, self.offset, self.size, self.fs = read, offset, size, fs
        self.block_size = 0  # told to FsProblem once known
        self.label: str | None = None

    def problem(self, message: str) -> FsProblem:
        return FsProblem(self.fs, message, block_size=self.block_size, label=self.label)

    def read(self, at: int, length: int, what: str) -> bytes:
        if at < 0 or length < 0 or at + length > self.size:
            raise self.problem(f"{what} at byte {at} (+{length}) is outside the partition ({self.size} bytes)")
        data = self.raw(self.offset + at, length)
        if len(data) != length:
            raise self.problem(f"{what} at byte {at}: short read ({len(data)} of {length} bytes)")
        return bytes(data)


def u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little")


def u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


_NOT_FULL = re.compile(rb"[^\xff]+")  # bytes with a clear bit in them
_CLEAR = re.compile("0+")


def clear_bit_runs(bitmap: bytes, nbits: int) -> Iterator[Range]:
    """The runs ``(first bit, count)`` of clear bits among the first ``nbits`` bits (LSB first), merged. Full
    bytes are skipped and all-zero stretches taken whole by regular expressions over the bytes; a stretch of
    mixed bytes is spelled out as a string of bits (``bin``, reversed: LSB first) and its runs of ``0`` found."""
    data = bitmap[: (nbits + 7) // 8]
    for match in _NOT_FULL.finditer(data):
        first, end = match.span()
        base = first * 8
        if base >= nbits:
            return
        piece = data[first:end]
        if piece.count(0) == len(piece):
            yield base, min(len(piece) * 8, nbits - base)
            continue
        bits = bin(int.from_bytes(piece, "little") | 1 << len(piece) * 8)[3:][::-1][: nbits - base]
        for run in _CLEAR.finditer(bits):
            yield base + run.start(), run.end() - run.start()


def zero_entry_runs(table: bytes, width: int, first: int, count: int) -> Iterator[Range]:
    """The runs ``(first entry, count)`` of all-zero ``width``-byte entries among entries ``first`` ..
    ``first + count - 1`` of ``table`` (a run of zero bytes, trimmed to whole entries, holds exactly the zero
    entries inside it)."""
    data = table[first * width : (first + count) * width]
    for match in re.finditer(rb"\x00{%d,}" % width, data):
        begin = -(-match.start() // width)
        end = match.end() // width
        if end > begin:
            yield first + begin, end - begin


def _table(poly: int, width_mask: int) -> tuple[int, ...]:
    out = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        out.append(crc & width_mask)
    return tuple(out)


_CRC32C = _table(0x82F63B78, 0xFFFFFFFF)
_CRC16 = _table(0xA001, 0xFFFF)


def crc32c(seed: int, data: bytes) -> int:
    """The kernel's ``crc32c(seed, data)``: no inversion before or after (ext4 seeds with ``~0``)."""
    crc, table = seed & 0xFFFFFFFF, _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def crc16(seed: int, data: bytes) -> int:
    """lib/crc16.c's ``crc16(seed, data)`` (the ``uninit_bg`` group descriptor checksum)."""
    crc, table = seed & 0xFFFF, _CRC16
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc
