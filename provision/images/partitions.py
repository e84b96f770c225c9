"""Read the partition table of a raw disk: GPT (both headers checked) or MBR (with logical partitions).

Pure Python, so unit tests and the import need no tool. Only what the store and the agent need is read:
for each partition its number, first sector, size in sectors, type, name and GUID. A file that is not a
disk, or a disk cut short (GPT backup header missing, a partition beyond the end), is refused with an
``ImageError`` naming the file and what is wrong.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from provision.images.errors import ImageError

GPT_SIGNATURE = b"EFI PART"
MBR_SIGNATURE = b"\x55\xaa"
MBR_PROTECTIVE = 0xEE
MBR_EXTENDED = frozenset({0x05, 0x0F, 0x85})
MAX_GPT_ENTRIES_BYTES = 1 << 20
MAX_LOGICAL = 256

GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # 92 bytes
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")  # 128 bytes
MBR_ENTRY = struct.Struct("<B3sB3sII")  # 16 bytes


@dataclass(frozen=True)
class Partition:
    """One partition. ``start`` and ``size`` are in sectors of the table's sector size."""

    number: int
    start: int
    size: int
    type: str  # GPT: type GUID in upper case (as sfdisk shows it); MBR: the type byte as 2 hex digits
    name: str = ""
    uuid: str | None = None  # GPT unique partition GUID
    bootable: bool = False  # MBR active flag
    attrs: int = 0  # GPT attribute bits

    @property
    def end(self) -> int:
        """First sector after the partition."""
        return self.start + self.size

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "start": self.start,
            "size": self.size,
            "type": self.type,
            "name": self.name,
            "uuid": self.uuid,
            "bootable": self.bootable,
            "attrs": self.attrs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Partition:
        return cls(
            number=int(data["number"]),
            start=int(data["start"]),
            size=int(data["size"]),
            type=str(data["type"]),
            name=str(data.get("name", "")),
            uuid=None if data.get("uuid") is None else str(data["uuid"]),
            bootable=bool(data.get("bootable", False)),
            attrs=int(data.get("attrs", 0)),
        )


@dataclass(frozen=True)
class PartitionTable:
    """The disk label: ``gpt`` or ``dos`` (MBR), its identifier and partitions in table order."""

    label: Literal["gpt", "dos"]
    id: str  # GPT disk GUID, or the MBR disk signature as 0x%08x
    sector_size: int
    partitions: tuple[Partition, ...]
    first_lba: int | None = None  # GPT usable area
    last_lba: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "id": self.id,
            "sector_size": self.sector_size,
            "first_lba": self.first_lba,
            "last_lba": self.last_lba,
            "partitions": [p.to_dict() for p in self.partitions],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionTable:
        label = data["label"]
        if label not in ("gpt", "dos"):
            raise ValueError(f"unknown partition table label {label!r}")
        return cls(
            label=label,
            id=str(data["id"]),
            sector_size=int(data["sector_size"]),
            partitions=tuple(Partition.from_dict(p) for p in data["partitions"]),
            first_lba=None if data.get("first_lba") is None else int(data["first_lba"]),
            last_lba=None if data.get("last_lba") is None else int(data["last_lba"]),
        )


class _Disk:
    def __init__(self, f: BinaryIO, size: int, sector_size: int, path: str) -> None:
        self.f, self.size, self.ss, self.path = f, size, sector_size, path
        self.sectors = size // sector_size

    def fail(self, what: str) -> ImageError:
        return ImageError(f"{self.path}: {what}", path=self.path)

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > self.size:
            raise self.fail(f"needs bytes {offset}..{offset + length} but the file has only {self.size}: truncated?")
        self.f.seek(offset)
        data = self.f.read(length)
        if len(data) != length:
            raise self.fail(f"short read at byte {offset}: truncated?")
        return data

    def check_inside(self, what: str, start: int, end: int) -> None:
        if end > self.sectors:
            raise self.fail(
                f"{what} ends at sector {end - 1}, beyond the end of the file ({self.sectors} sectors of "
                f"{self.ss} bytes): the disk image is truncated"
            )


def read_partition_table(f: BinaryIO, size: int, *, sector_size: int = 512, path: str = "disk") -> PartitionTable:
    """Parse the partition table of the disk in ``f`` (``size`` bytes). Raises ImageError if there is none
    or if it describes a disk larger than the file."""
    if sector_size < 512 or sector_size & (sector_size - 1):
        raise ImageError(f"{path}: sector size {sector_size} is not a power of two >= 512", path=path)
    if size == 0:
        raise ImageError(f"{path}: empty file, not a disk image", path=path)
    if size % sector_size:
        raise ImageError(
            f"{path}: size {size} is not a multiple of the sector size {sector_size}: not a whole disk image",
            path=path,
        )
    disk = _Disk(f, size, sector_size, path)
    if disk.sectors < 2:
        raise disk.fail("too small to hold a partition table")
    mbr = disk.read(0, 512)
    gpt = disk.read(sector_size, sector_size)
    entries = [MBR_ENTRY.unpack_from(mbr, 446 + 16 * i) for i in range(4)]
    has_mbr = mbr[510:512] == MBR_SIGNATURE
    protective = has_mbr and any(e[2] == MBR_PROTECTIVE for e in entries)
    if gpt[:8] == GPT_SIGNATURE:
        return _read_gpt(disk, gpt)
    if protective:
        raise disk.fail("protective MBR (type 0xee) but no GPT header at LBA 1")
    if has_mbr:
        return _read_mbr(disk, mbr)
    raise disk.fail("no partition table: neither an MBR signature (55 aa at byte 510) nor a GPT header at LBA 1")


def guid(raw: bytes) -> str:
    """A GPT GUID (mixed-endian on disk) in the upper-case text form sfdisk and gdisk show."""
    return str(uuid.UUID(bytes_le=raw)).upper()


def _gpt_header(disk: _Disk, data: bytes, where: str) -> tuple[Any, ...]:
    fields = GPT_HEADER.unpack_from(data)
    header_size, crc = fields[2], fields[3]
    if not 92 <= header_size <= disk.ss:
        raise disk.fail(f"{where} GPT header: header size {header_size} out of range")
    check = bytearray(data[:header_size])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != crc:
        raise disk.fail(f"{where} GPT header: CRC mismatch (corrupted)")
    return fields


def _read_gpt(disk: _Disk, data: bytes) -> PartitionTable:
    fields = _gpt_header(disk, data, "primary")
    _, _, _, _, _, my_lba, alt_lba, first_lba, last_lba, disk_guid, entries_lba, count, entry_size, entries_crc = fields
    if my_lba != 1:
        raise disk.fail(f"primary GPT header says it is at LBA {my_lba}, not 1")
    if entry_size < 128 or entry_size % 8 or count * entry_size > MAX_GPT_ENTRIES_BYTES:
        raise disk.fail(f"GPT partition entries: {count} of {entry_size} bytes is not a valid array")
    if alt_lba >= disk.sectors:
        raise disk.fail(
            f"GPT backup header expected at LBA {alt_lba} but the file has only {disk.sectors} sectors: "
            "the disk image is truncated"
        )
    backup = disk.read(alt_lba * disk.ss, disk.ss)
    if backup[:8] != GPT_SIGNATURE:
        raise disk.fail(f"GPT backup header missing at LBA {alt_lba} (last sector {disk.sectors - 1}): truncated?")
    _gpt_header(disk, backup, "backup")
    disk.check_inside("GPT usable area", first_lba, last_lba + 1)
    array_bytes = count * entry_size
    array = disk.read(entries_lba * disk.ss, array_bytes)
    if zlib.crc32(array) != entries_crc:
        raise disk.fail("GPT partition entries: CRC mismatch (corrupted)")
    parts: list[Partition] = []
    for number in range(1, count + 1):
        type_guid, part_guid, first, last, attrs, name = GPT_ENTRY.unpack_from(array, (number - 1) * entry_size)
        if type_guid == bytes(16):
            continue
        if last < first:
            raise disk.fail(f"GPT partition {number}: last LBA {last} before first LBA {first}")
        disk.check_inside(f"GPT partition {number}", first, last + 1)
        if first < first_lba or last > last_lba:
            raise disk.fail(
                f"GPT partition {number}: LBA {first}-{last} outside the usable area {first_lba}-{last_lba}"
            )
        text = name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        parts.append(Partition(number, first, last - first + 1, guid(type_guid), text, guid(part_guid), False, attrs))
    if not parts:
        raise disk.fail("GPT has no partitions")
    return PartitionTable("gpt", guid(disk_guid), disk.ss, tuple(parts), first_lba, last_lba)


def _read_mbr(disk: _Disk, mbr: bytes) -> PartitionTable:
    parts: list[Partition] = []
    for i in range(4):
        status, _, ptype, _, start, count = MBR_ENTRY.unpack_from(mbr, 446 + 16 * i)
        if status not in (0x00, 0x80):
            raise disk.fail(
                f"MBR entry {i + 1}: boot flag 0x{status:02x} is neither 0x00 nor 0x80: not a partition table"
            )
        if ptype == 0 or count == 0:
            continue
        if start == 0:
            raise disk.fail(f"MBR partition {i + 1} starts at sector 0 (over the MBR itself): not a partition table")
        disk.check_inside(f"MBR partition {i + 1}", start, start + count)
        parts.append(Partition(i + 1, start, count, f"{ptype:02x}", bootable=status == 0x80))
        if ptype in MBR_EXTENDED:
            parts.extend(_read_logical(disk, start, start + count))
    if not parts:
        raise disk.fail("MBR partition table is empty")
    (signature,) = struct.unpack_from("<I", mbr, 440)
    return PartitionTable("dos", f"0x{signature:08x}", disk.ss, tuple(parts))


def _read_logical(disk: _Disk, ext_start: int, ext_end: int) -> list[Partition]:
    """Follow the chain of extended boot records: each holds one logical partition and a link to the next."""
    parts: list[Partition] = []
    ebr_lba, seen = ext_start, set[int]()
    while len(parts) < MAX_LOGICAL:
        if ebr_lba in seen:
            raise disk.fail(f"extended partition: EBR chain loops at sector {ebr_lba}")
        seen.add(ebr_lba)
        disk.check_inside("extended boot record", ebr_lba, ebr_lba + 1)
        ebr = disk.read(ebr_lba * disk.ss, 512)
        if ebr[510:512] != MBR_SIGNATURE:
            raise disk.fail(f"extended boot record at sector {ebr_lba} has no 55 aa signature")
        status, _, ptype, _, rel, count = MBR_ENTRY.unpack_from(ebr, 446)
        if ptype and count:
            start = ebr_lba + rel
            if start + count > ext_end:
                disk.check_inside(f"logical partition {5 + len(parts)}", start, start + count)
                raise disk.fail(f"logical partition {5 + len(parts)} extends beyond its extended partition")
            parts.append(Partition(5 + len(parts), start, count, f"{ptype:02x}", bootable=status == 0x80))
        _, _, ntype, _, nrel, ncount = MBR_ENTRY.unpack_from(ebr, 462)
        if ntype == 0 or ncount == 0:
            return parts
        ebr_lba = ext_start + nrel
    raise disk.fail(f"extended partition: more than {MAX_LOGICAL} logical partitions")
