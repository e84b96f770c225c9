"""Partition tables in memory for the capture's unit tests: a GPT (protective MBR, primary and backup headers
with their CRC32s) and an MBR with primary and logical partitions, written into a ``tests.support.fsimages.Disk``.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence

from tests.support.fsimages import Disk

LINUX_FS = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")


def gpt_header(disk: Disk, lba: int, alt: int, entries_lba: int, entries: bytes, ss: int) -> None:
    sectors = len(disk.data) // ss
    head = bytearray(92)
    struct.pack_into("<8sIIIIQQQQ16sQIII", head, 0, b"EFI PART", 0x10000, 92, 0, 0, lba, alt, 34, sectors - 34,
                     bytes(16), entries_lba, 128, 128, zlib.crc32(entries))  # fmt: skip
    struct.pack_into("<I", head, 16, zlib.crc32(head))
    disk.data[lba * ss : lba * ss + ss] = bytes(head).ljust(ss, b"\0")


def write_gpt(disk: Disk, parts: Sequence[tuple[int, int]], ss: int = 512) -> None:
    """A GPT of ``parts`` ``(first LBA, last LBA)``, entries 1.. in order, primary and backup."""
    sectors = len(disk.data) // ss
    entries = bytearray(128 * 128)
    for i, (first, last) in enumerate(parts):
        struct.pack_into("<16s16sQQ", entries, i * 128, LINUX_FS.bytes_le, uuid.uuid4().bytes_le, first, last)
    disk.data[446 : 446 + 16] = struct.pack(
        "<B3sB3sII", 0, b"\0\0\2", 0xEE, b"\xff\xff\xff", 1, min(sectors - 1, 0xFFFFFFFF)
    )
    disk.data[510:512] = b"\x55\xaa"
    disk.data[2 * ss : 2 * ss + len(entries)] = entries
    backup_entries = sectors - 1 - len(entries) // ss
    disk.data[backup_entries * ss : backup_entries * ss + len(entries)] = entries
    gpt_header(disk, 1, sectors - 1, 2, bytes(entries), ss)
    gpt_header(disk, sectors - 1, 1, backup_entries, bytes(entries), ss)


def mbr_entry(sector: bytearray, slot: int, kind: int, start: int, count: int) -> None:
    struct.pack_into("<B3sB3sII", sector, 446 + 16 * slot, 0, b"\0\0\0", kind, b"\0\0\0", start, count)


def write_mbr(disk: Disk, primaries: Sequence[tuple[int, int, int]], logicals: Sequence[tuple[int, int]] = (),
              extended: tuple[int, int] | None = None) -> None:  # fmt: skip
    """An MBR of ``primaries`` ``(type, first LBA, sectors)``; with ``extended`` ``(first LBA, sectors)`` its
    ``logicals`` ``(first LBA, sectors)`` each after an EBR one sector before it (512-byte sectors)."""
    mbr = bytearray(512)
    for slot, (kind, start, count) in enumerate(primaries):
        mbr_entry(mbr, slot, kind, start, count)
    if extended:
        mbr_entry(mbr, len(primaries), 0x05, *extended)
        for i, (start, count) in enumerate(logicals):
            ebr = bytearray(512)
            mbr_entry(ebr, 0, 0x83, 1, count)
            if i + 1 < len(logicals):
                mbr_entry(ebr, 1, 0x05, logicals[i + 1][0] - 1 - extended[0], logicals[i + 1][1] + 1)
            ebr[510:512] = b"\x55\xaa"
            disk.data[(start - 1) * 512 : start * 512] = ebr
    mbr[510:512] = b"\x55\xaa"
    disk.data[:512] = mbr
