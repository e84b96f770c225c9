"""Write a partition table onto a raw disk file: GPT (protective MBR, both headers and entry arrays) or MBR.

The counterpart of ``partitions.py``: synthetic disks for tests and benchmarks, and a pure-Python way for a
builder to lay out a fresh raw disk without ``sfdisk``. Only the table sectors are written, so a sparse file
stays sparse.
"""

from __future__ import annotations

import os
import random
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from provision.images.partitions import (
    GPT_ENTRY,
    GPT_HEADER,
    GPT_SIGNATURE,
    MBR_ENTRY,
    MBR_SIGNATURE,
    Partition,
    PartitionTable,
    guid,
)

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
LINUX_SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
MS_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"

ALIGN = 1 << 20
GPT_ENTRIES = 128


@dataclass(frozen=True)
class NewPartition:
    """A partition to create. Sizes in bytes; ``size=0`` takes the rest of the disk; ``start=None`` puts it
    after the previous one, aligned to 1 MiB. ``type`` is a GPT type GUID, or 2 hex digits for MBR."""

    size: int
    type: str = LINUX_FS
    name: str = ""
    start: int | None = None
    bootable: bool = False


def _place(parts: Sequence[NewPartition], first: int, last: int, sector_size: int) -> list[tuple[int, int]]:
    """(first sector, sector count) of each partition inside the usable sectors first..last."""
    placed: list[tuple[int, int]] = []
    cursor = first
    for p in parts:
        aligned = -(-cursor * sector_size // ALIGN) * ALIGN // sector_size  # next 1 MiB boundary
        start = aligned if p.start is None else p.start // sector_size
        count = p.size // sector_size if p.size else last + 1 - start
        if start < first or count <= 0 or start + count - 1 > last:
            raise ValueError(f"partition {len(placed) + 1} ({p.size} bytes at {start}) does not fit the disk")
        placed.append((start, count))
        cursor = start + count
    return placed


def _pwrite(f: BinaryIO, offset: int, data: bytes) -> None:
    f.seek(offset)
    f.write(data)


def _gpt_header(
    my: int, alt: int, first: int, last: int, disk_guid: bytes, entries_lba: int, crc: int, sector_size: int
) -> bytes:
    fields = [GPT_SIGNATURE, 0x00010000, 92, 0, 0, my, alt, first, last, disk_guid, entries_lba, GPT_ENTRIES, 128, crc]
    header = bytearray(GPT_HEADER.pack(*fields))
    struct.pack_into("<I", header, 16, zlib.crc32(header))
    return bytes(header).ljust(sector_size, b"\0")


def write_gpt(
    f: BinaryIO, disk_size: int, parts: Sequence[NewPartition], *, sector_size: int = 512, seed: int | None = None
) -> PartitionTable:
    """Write a GPT for a disk of ``disk_size`` bytes into ``f`` (resized to ``disk_size``, sparse).
    GUIDs are random, or derived from ``seed`` for reproducible images. Returns the table as written."""
    rng = random.Random(seed) if seed is not None else random.SystemRandom()  # nosec B311  # noqa: S311 - GUIDs, not secrets

    def new_guid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    sectors = disk_size // sector_size
    array_sectors = GPT_ENTRIES * 128 // sector_size
    first, last = 2 + array_sectors, sectors - 2 - array_sectors
    placed = _place(parts, first, last, sector_size)
    f.truncate(disk_size)
    array = bytearray(GPT_ENTRIES * 128)
    table: list[Partition] = []
    for number, (p, (start, count)) in enumerate(zip(parts, placed, strict=True), start=1):
        part_guid = new_guid()
        name = p.name.encode("utf-16-le")[:72]
        type_raw = uuid.UUID(p.type).bytes_le
        GPT_ENTRY.pack_into(array, (number - 1) * 128, type_raw, part_guid.bytes_le, start, start + count - 1, 0, name)
        table.append(Partition(number, start, count, p.type.upper(), p.name, guid(part_guid.bytes_le)))
    disk_guid = new_guid().bytes_le
    crc = zlib.crc32(array)
    mbr = bytearray(512)
    MBR_ENTRY.pack_into(mbr, 446, 0, b"\0\x02\0", 0xEE, b"\xff\xff\xff", 1, min(sectors - 1, 0xFFFFFFFF))
    mbr[510:512] = MBR_SIGNATURE
    _pwrite(f, 0, bytes(mbr))
    _pwrite(f, sector_size, _gpt_header(1, sectors - 1, first, last, disk_guid, 2, crc, sector_size))
    _pwrite(f, 2 * sector_size, bytes(array))
    _pwrite(f, (last + 1) * sector_size, bytes(array))
    _pwrite(
        f, (sectors - 1) * sector_size, _gpt_header(sectors - 1, 1, first, last, disk_guid, last + 1, crc, sector_size)
    )
    return PartitionTable("gpt", guid(disk_guid), sector_size, tuple(table), first, last)


def write_mbr(
    f: BinaryIO, disk_size: int, parts: Sequence[NewPartition], *, sector_size: int = 512, disk_id: int | None = None
) -> PartitionTable:
    """Write an MBR with up to 4 primary partitions (``type`` as 2 hex digits, e.g. ``83``)."""
    if len(parts) > 4:
        raise ValueError("an MBR holds at most 4 primary partitions")
    sectors = disk_size // sector_size
    placed = _place(parts, ALIGN // sector_size, sectors - 1, sector_size)
    f.truncate(disk_size)
    mbr = bytearray(512)
    ident = disk_id if disk_id is not None else int.from_bytes(os.urandom(4), "little")
    struct.pack_into("<I", mbr, 440, ident)
    table: list[Partition] = []
    for i, (p, (start, count)) in enumerate(zip(parts, placed, strict=True)):
        status = 0x80 if p.bootable else 0
        MBR_ENTRY.pack_into(mbr, 446 + 16 * i, status, b"\xfe\xff\xff", int(p.type, 16), b"\xfe\xff\xff", start, count)
        table.append(Partition(i + 1, start, count, f"{int(p.type, 16):02x}", bootable=p.bootable))
    mbr[510:512] = MBR_SIGNATURE
    _pwrite(f, 0, bytes(mbr))
    return PartitionTable("dos", f"0x{ident:08x}", sector_size, tuple(table))
