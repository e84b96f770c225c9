"""The partitions of a disk, read from its GPT or MBR (pure Python: struct + zlib.crc32), for the capture.

- GPT (UEFI specification 2.10, section 5.3): a protective MBR (a partition of type 0xEE) means GPT. The header
  at LBA 1 is checked (signature ``EFI PART``, header size, header CRC32 computed with its CRC field zeroed,
  ``MyLBA``, the entry array inside the disk and its CRC32); a damaged primary falls back to the backup header
  at the disk's last LBA (a warning logged). Entries with a zero type GUID are unused; the others must lie
  within the usable LBAs. ``rootpart.Gpt`` reads only the primary of an opened disk and raises the grow step's
  error, so this reads through a ``Read`` and reuses its CRC helper.
- MBR: the four primary entries at byte 446 (type at +4, first LBA at +8, sectors at +12) numbered 1-4 by slot,
  and the logical partitions of an extended one (types 0x05, 0x0F, 0x85), numbered from 5: each EBR's first
  entry is relative to that EBR, its second points to the next EBR relative to the extended partition's start.
- No 0x55AA signature and no GPT: no partition table, ``()``.
- Partitions that overlap are refused: the free space of one file system would be another one's data.

A problem is a ``PartitionTableError`` (an ``AgentError``) with every fact (LBA, CRCs, sizes).
"""

from __future__ import annotations

import itertools
import logging
import struct
import zlib
from collections.abc import Callable
from typing import NamedTuple

from provision.agent.capture.common import Read
from provision.agent.errors import AgentError
from provision.agent.rootpart import gpt_crc

log = logging.getLogger(__name__)

EXTENDED = (0x05, 0x0F, 0x85)
PROTECTIVE = 0xEE
MAX_LOGICAL = 128
MAX_ENTRIES_BYTES = 1 << 20


class Partition(NamedTuple):
    number: int  # GPT entry index + 1, MBR slot 1-4, logical 5..
    offset: int  # bytes from the disk's start
    size: int  # bytes


class PartitionTableError(AgentError):
    """The disk's partition table cannot be read: ``problem`` and the facts say what and where."""

    def __init__(self, problem: str, **facts: object) -> None:
        super().__init__(f"partition table not usable: {problem}", problem=problem, **facts)
        self.problem = problem


def partitions(read: Read, disk_size: int, sector_size: int) -> tuple[Partition, ...]:
    """The disk's partitions, in number order: from its GPT (primary, else backup) or its MBR."""
    facts = {"disk_size": disk_size, "sector_size": sector_size}
    if sector_size < 512 or sector_size & (sector_size - 1) or disk_size < 2 * sector_size:
        raise PartitionTableError(f"{sector_size}-byte sectors on a disk of {disk_size} bytes", **facts)
    mbr = read(0, 512)
    if len(mbr) != 512:
        raise PartitionTableError(f"sector 0 does not read ({len(mbr)} bytes)", **facts)
    signed = mbr[510:512] == b"\x55\xaa"
    types = [mbr[446 + 16 * i + 4] for i in range(4)] if signed else []
    if PROTECTIVE in types or read(sector_size, 8) == b"EFI PART":
        return _apart(_gpt(read, disk_size, sector_size), sector_size)
    if not signed:
        return ()
    return _apart(_mbr(read, mbr, disk_size, sector_size), sector_size)


def _apart(found: tuple[Partition, ...], ss: int) -> tuple[Partition, ...]:
    """The partitions, none overlapping another: one file system's free space must not be another's data."""
    ordered = sorted(found, key=lambda p: p.offset)
    for a, b in itertools.pairwise(ordered):
        if a.offset + a.size > b.offset:
            raise PartitionTableError(
                f"partitions {a.number} (LBA {a.offset // ss}+{a.size // ss}) and {b.number} "
                f"(LBA {b.offset // ss}+{b.size // ss}) overlap",
                partitions=[a.number, b.number], sector_size=ss,
            )  # fmt: skip
    return found


class _Bad(Exception):
    def __init__(self, problem: str, **facts: object) -> None:
        super().__init__(problem)
        self.problem, self.facts = problem, facts


def _gpt(read: Read, disk_size: int, ss: int) -> tuple[Partition, ...]:
    sectors = disk_size // ss
    try:
        return _gpt_at(read, 1, sectors, ss)
    except _Bad as primary:
        try:
            found = _gpt_at(read, sectors - 1, sectors, ss)
        except _Bad as backup:
            raise PartitionTableError(
                f"primary GPT: {primary.problem}; backup GPT: {backup.problem}",
                disk_size=disk_size, sector_size=ss, primary=primary.facts, backup=backup.facts,
            ) from None  # fmt: skip
        log.warning("primary GPT not usable (%s): the backup header at LBA %d is read", primary.problem, sectors - 1)
        return found


def _gpt_at(read: Read, lba: int, sectors: int, ss: int) -> tuple[Partition, ...]:
    header = bytearray(read(lba * ss, ss))
    if len(header) < 92 or header[:8] != b"EFI PART":
        raise _Bad(f"no GPT signature at LBA {lba}", lba=lba, found=bytes(header[:8]).hex())
    size, stored, _, my_lba, _alt, first, last = struct.unpack_from("<IIIQQQQ", header, 12)
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    if not 92 <= size <= ss:
        raise _Bad(f"header size {size} at LBA {lba}", lba=lba, header_size=size)
    computed = gpt_crc(bytearray(header), size)
    if computed != stored:
        raise _Bad(f"header CRC 0x{stored:08x} stored, 0x{computed:08x} computed at LBA {lba}",
                   lba=lba, stored_crc=stored, computed_crc=computed)  # fmt: skip
    array = count * entry_size
    array_sectors = -(-array // ss)
    if my_lba != lba or entry_size < 128 or entry_size % 8 or array > MAX_ENTRIES_BYTES:
        raise _Bad(f"header at LBA {lba}: MyLBA {my_lba}, {count} entries of {entry_size} bytes",
                   lba=lba, my_lba=my_lba, entries=count, entry_size=entry_size)  # fmt: skip
    if not (entries_lba > 0 and entries_lba + array_sectors <= sectors and 0 < first <= last < sectors):
        raise _Bad(f"header at LBA {lba}: entries at LBA {entries_lba}, usable LBAs {first}-{last}, "
                   f"not in {sectors} sectors (truncated?)", lba=lba, entries_lba=entries_lba,
                   first_usable_lba=first, last_usable_lba=last, disk_sectors=sectors)  # fmt: skip
    entries = read(entries_lba * ss, array)
    computed = zlib.crc32(entries)
    if len(entries) != array or computed != entries_crc:
        raise _Bad(f"entry array at LBA {entries_lba}: CRC 0x{entries_crc:08x} stored, 0x{computed:08x} computed",
                   lba=entries_lba, stored_crc=entries_crc, computed_crc=computed)  # fmt: skip
    found: list[Partition] = []
    for i in range(count):
        raw = entries[i * entry_size : i * entry_size + 128]
        if raw[:16] == bytes(16):
            continue
        start, end = struct.unpack_from("<QQ", raw, 32)
        if not first <= start <= end <= last:
            raise _Bad(f"partition {i + 1} at LBA {start}-{end} is outside the usable LBAs {first}-{last}",
                       partition=i + 1, first_lba=start, last_lba=end)  # fmt: skip
        found.append(Partition(i + 1, start * ss, (end - start + 1) * ss))
    return tuple(found)


def _entries(sector: bytes) -> list[tuple[int, int, int]]:
    """(type, first LBA, sectors) of the four entries of an MBR or EBR."""
    return [(sector[446 + 16 * i + 4], *struct.unpack_from("<II", sector, 446 + 16 * i + 8)) for i in range(4)]


def _mbr(read: Read, mbr: bytes, disk_size: int, ss: int) -> tuple[Partition, ...]:
    sectors = disk_size // ss
    found: list[Partition] = []

    def add(number: int, start: int, count: int, where: str) -> None:
        if start == 0 or start + count > sectors:
            raise PartitionTableError(
                f"partition {number} ({where}) at LBA {start}+{count} is outside the disk's {sectors} sectors",
                partition=number, first_lba=start, sectors=count, disk_sectors=sectors, sector_size=ss,
            )  # fmt: skip
        found.append(Partition(number, start * ss, count * ss))

    extended = None
    for slot, (kind, start, count) in enumerate(_entries(mbr), start=1):
        if kind == 0 or count == 0:
            continue
        if kind in EXTENDED:
            if extended is not None:
                raise PartitionTableError("two extended partitions in the MBR", slot=slot, sector_size=ss)
            add(slot, start, count, "extended")
            found.pop()  # the container itself holds no file system of its own
            extended = (start, count)
        else:
            add(slot, start, count, "primary")
    if extended is not None:
        _logical(read, extended, ss, add)
    return tuple(sorted(found))


def _logical(read: Read, extended: tuple[int, int], ss: int, add: Callable[[int, int, int, str], None]) -> None:
    """The logical partitions: the EBR chain from the extended partition's first sector."""
    base, size = extended
    ebr, seen, number = base, set[int](), 5
    while True:
        if ebr in seen or number - 5 >= MAX_LOGICAL:
            raise PartitionTableError(f"the EBR chain loops or passes {MAX_LOGICAL} logical partitions",
                                      lba=ebr, sector_size=ss)  # fmt: skip
        seen.add(ebr)
        sector = read(ebr * ss, 512)
        if len(sector) != 512 or sector[510:512] != b"\x55\xaa":
            raise PartitionTableError(f"EBR at LBA {ebr} without the 0x55AA signature", lba=ebr, sector_size=ss)
        (kind, start, count), (next_kind, next_start, _), *_ = _entries(sector)
        if kind and count:
            if not ebr + start + count <= base + size:
                raise PartitionTableError(
                    f"logical partition {number} at LBA {ebr + start}+{count} leaves the extended partition "
                    f"(LBA {base}+{size})", partition=number, lba=ebr, sector_size=ss,
                )  # fmt: skip
            add(number, ebr + start, count, f"logical, EBR at LBA {ebr}")
            number += 1
        if next_kind not in EXTENDED or not next_start:
            return
        ebr = base + next_start
