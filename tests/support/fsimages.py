"""Tiny synthetic file systems in memory, for the free-space readers' unit tests (provision.agent.capture):
only the structures the readers look at, laid out as the formats say, so that each field can be damaged.

- ``Disk``: a bytearray with ``read`` (the readers' ``Read``) and little-endian field writers.
- ``tiny_ext(...)``: ext2/ext4-like, 1 KiB blocks, ``groups`` groups of 1024 blocks (the last one ``last``
  blocks), 128 inodes of 128 bytes per group; ``used`` data blocks marked in the bitmaps (counts kept right);
  options: 64-byte descriptors (64bit), metadata_csum (crc32c checksums), gdt_csum, group 1 ``BLOCK_UNINIT``.
- ``tiny_fat(bits)``: FAT12/16/32 with two FATs, clusters ``used`` allocated (end of chain).
- ``tiny_ntfs(...)``: NTFS with 4 KiB clusters, 1 KiB MFT records 0 ($MFT), 2 ($LogFile), 3 ($Volume) and 6
  ($Bitmap) with their update sequences; clusters ``used`` marked in ``$Bitmap``.
- ``write_gpt`` (protective MBR, primary and backup headers with their CRC32s) and ``write_mbr`` (primary and
  logical partitions, EBRs) partition a ``Disk``.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterable, Sequence

from provision.agent.capture.common import crc16, crc32c


class Disk:
    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset : offset + length])

    def put(self, fmt: str, at: int, *values: int | bytes) -> None:
        struct.pack_into("<" + fmt, self.data, at, *values)

    def u16(self, at: int) -> int:
        return int(struct.unpack_from("<H", self.data, at)[0])


# --- ext ----------------------------------------------------------------------------------------------------
EXT_BS, EXT_BPG, EXT_ITB = 1024, 1024, 16  # block size, blocks per group, inode table blocks (128 x 128 bytes)


def ext_meta(group: int) -> list[int]:
    """The blocks of group ``group``'s own metadata: superblock copy, descriptors, bitmaps, inode table."""
    first = 1 + group * EXT_BPG
    return list(range(first, first + 4 + EXT_ITB))


def tiny_ext(
    groups: int = 2, last: int = 1024, used: Iterable[int] = range(21, 100), *, bit64: bool = False,
    csum: bool = False, gdt_csum: bool = False, uninit: bool = False, offset: int = 0,
) -> Disk:  # fmt: skip
    blocks = 1 + (groups - 1) * EXT_BPG + last
    disk = Disk(offset + blocks * EXT_BS + 4096)
    sb = offset + 1024
    incompat = 0x2 | (0x80 | 0x40 if bit64 else 0)
    ro = 0x1 | (0x400 if csum else 0x10 if gdt_csum else 0)
    disk.put("IIIIIIIIII", sb, 128 * groups, blocks, 0, 0, 0, 1, 0, 0, EXT_BPG, EXT_BPG)
    disk.put("I", sb + 0x28, 128)
    disk.put("HHH", sb + 0x38, 0xEF53, 1, 1)
    disk.put("I", sb + 0x4C, 1)
    disk.put("IH", sb + 0x54, 11, 128)
    disk.put("III", sb + 0x5C, 0, incompat, ro)
    disk.data[sb + 0x68 : sb + 0x78] = bytes(range(1, 17))
    disk.data[sb + 0x78 : sb + 0x7D] = b"tiny\0"
    desc_size = 64 if bit64 else 32
    disk.put("H", sb + 0xFE, desc_size if bit64 else 0)
    disk.data[sb + 0x175] = 1 if csum else 0
    used = set(used)
    seed = crc32c(0xFFFFFFFF, bytes(range(1, 17)))
    for g in range(groups):
        first, count = 1 + g * EXT_BPG, EXT_BPG if g < groups - 1 else last
        meta = ext_meta(g)
        bitmap = bytearray(EXT_BS)
        for n in range(EXT_BPG):
            if n >= count or first + n in meta or first + n in used:
                bitmap[n // 8] |= 1 << n % 8
        free = sum(1 for n in range(count) if not bitmap[n // 8] >> n % 8 & 1)
        flags = 0x2 if uninit and g == 1 else 0
        if not flags:
            disk.data[offset + meta[2] * EXT_BS : offset + (meta[2] + 1) * EXT_BS] = bitmap
        desc = bytearray(desc_size)
        struct.pack_into("<IIIHHHH", desc, 0, meta[2], meta[3], meta[4], free, 128, 0, flags)
        if csum:
            bcs = crc32c(seed, bytes(bitmap[: EXT_BPG // 8]))
            struct.pack_into("<H", desc, 0x18, bcs & 0xFFFF)
            if bit64:
                struct.pack_into("<H", desc, 0x38, bcs >> 16)
            gcs = crc32c(seed, struct.pack("<I", g) + bytes(desc)) & 0xFFFF
        elif gdt_csum:
            gcs = crc16(
                crc16(crc16(0xFFFF, bytes(range(1, 17))), struct.pack("<I", g)), bytes(desc[:0x1E] + desc[0x20:])
            )
        else:
            gcs = 0
        struct.pack_into("<H", desc, 0x1E, gcs)
        for copy in (0, 1):  # the descriptor table in group 0 and its backup in group 1
            if copy < groups:
                at = offset + (2 + copy * EXT_BPG) * EXT_BS + g * desc_size
                disk.data[at : at + desc_size] = desc
    if csum:
        disk.put("I", sb + 0x3FC, crc32c(0xFFFFFFFF, bytes(disk.data[sb : sb + 0x3FC])))
    return disk


def ext_fix_super(disk: Disk, offset: int = 0) -> None:
    """The superblock's crc32c recomputed after a change (metadata_csum)."""
    sb = offset + 1024
    disk.put("I", sb + 0x3FC, crc32c(0xFFFFFFFF, bytes(disk.data[sb : sb + 0x3FC])))


# --- FAT ----------------------------------------------------------------------------------------------------
def tiny_fat(bits: int, used: Iterable[int] = (2, 3, 4, 10), *, offset: int = 0) -> tuple[Disk, int, int]:
    """A FAT volume: the disk, the first data byte (cluster 2) and the cluster count; 512-byte clusters."""
    clusters = {12: 2000, 16: 5000, 32: 70000}[bits]
    fat_sectors = -(-(clusters + 2) * bits // 8 // 512) + 1
    root = 0 if bits == 32 else 32  # sectors of the FAT12/16 root directory (512 entries)
    rsvd = 32 if bits == 32 else 1
    data_first = rsvd + 2 * fat_sectors + root
    total = data_first + clusters
    disk = Disk(offset + total * 512)
    boot = offset
    disk.data[boot : boot + 3] = b"\xeb\x3c\x90"
    disk.data[boot + 3 : boot + 11] = b"mkfs.fat"
    disk.put(
        "HBHBHHBH", boot + 11, 512, 1, rsvd, 2, 0 if bits == 32 else 512, 0, 0xF8, 0 if bits == 32 else fat_sectors
    )
    disk.put("I", boot + 32, total)
    if bits == 32:
        disk.put("IHHI", boot + 36, fat_sectors, 0, 0, 2)
        disk.data[boot + 0x42] = 0x29
        disk.data[boot + 0x47 : boot + 0x52] = b"EFI        "
    else:
        disk.data[boot + 0x26] = 0x29
        disk.data[boot + 0x2B : boot + 0x36] = b"NO NAME    "
    disk.data[boot + 510 : boot + 512] = b"\x55\xaa"
    entries = {0: 0xFFFFFF8 if bits == 32 else 0xFF8, 1: 0xFFFFFFF if bits == 32 else 0xFFFF if bits == 16 else 0xFFF}
    entries.update({c: 0xFFFFFFF if bits == 32 else (1 << bits) - 1 for c in used})
    for copy in (0, 1):
        base = boot + (rsvd + copy * fat_sectors) * 512
        for n, value in entries.items():
            fat_set(disk, base, bits, n, value)
    return disk, boot + data_first * 512, clusters


def fat_set(disk: Disk, base: int, bits: int, n: int, value: int) -> None:
    """FAT entry ``n`` of the FAT at byte ``base`` set to ``value``."""
    if bits == 12:
        at = base + n + n // 2
        old = disk.u16(at)
        disk.put("H", at, (old & 0x000F) | value << 4 if n & 1 else (old & 0xF000) | value)
    elif bits == 16:
        disk.put("H", base + 2 * n, value)
    else:
        disk.put("I", base + 4 * n, value)


# --- NTFS ---------------------------------------------------------------------------------------------------
NTFS_CLUSTER, NTFS_CLUSTERS, NTFS_RECORD = 4096, 64, 1024
NTFS_MFT, NTFS_LOG, NTFS_BITMAP = 4, 8, 10  # first clusters: MFT (4 clusters), $LogFile (2), $Bitmap (1)
NTFS_META = [0, *range(NTFS_MFT, NTFS_BITMAP + 1)]


def run_list(runs: Iterable[tuple[int | None, int]]) -> bytes:
    """Mapping pairs of ``(lcn or None for sparse, clusters)`` runs."""
    out, prev = bytearray(), 0
    for lcn, count in runs:
        length = count.to_bytes((count.bit_length() + 8) // 8, "little")
        if lcn is None:
            out += bytes([len(length)]) + length
            continue
        delta = lcn - prev
        off = delta.to_bytes(max(1, (delta.bit_length() + 8) // 8), "little", signed=True)
        out += bytes([len(off) << 4 | len(length)]) + length + off
        prev = lcn
    return bytes(out + b"\0")


def resident(kind: int, value: bytes) -> bytes:
    length = -(-(24 + len(value)) // 8) * 8
    head = struct.pack("<IIBBHHHIHBB", kind, length, 0, 0, 24, 0, 0, len(value), 24, 0, 0)
    return (head + value).ljust(length, b"\0")


def non_resident(kind: int, runs: list[tuple[int | None, int]], size: int, *, flags: int = 0,
                 initialized: int | None = None) -> bytes:  # fmt: skip
    pairs = run_list(runs)
    length = -(-(64 + len(pairs)) // 8) * 8
    clusters = sum(n for _, n in runs)
    head = struct.pack("<IIBBHHH", kind, length, 1, 0, 64, flags, 0)
    head += struct.pack("<QQHBx4xQQQ", 0, clusters - 1, 64, 0, clusters * NTFS_CLUSTER, size,
                        size if initialized is None else initialized)  # fmt: skip
    return (head + pairs).ljust(length, b"\0")


def mft_record(attrs: Iterable[bytes], *, usn: int = 1, in_use: bool = True) -> bytes:
    """A 1 KiB MFT record holding ``attrs``, its update sequence applied (as on disk)."""
    rec = bytearray(NTFS_RECORD)
    body = b"".join(attrs) + b"\xff\xff\xff\xff\0\0\0\0"
    rec[:4] = b"FILE"
    struct.pack_into("<HHQHHHHII", rec, 4, 0x30, 3, 0, 1, 1, 0x38, int(in_use), 0x38 + len(body), NTFS_RECORD)
    rec[0x38 : 0x38 + len(body)] = body
    struct.pack_into("<H", rec, 0x30, usn)
    for i in (1, 2):
        end = i * 512 - 2
        rec[0x30 + 2 * i : 0x32 + 2 * i] = rec[end : end + 2]
        struct.pack_into("<H", rec, end, usn)
    return bytes(rec)


def restart_page(lsn: int, in_use: int, flags: int) -> bytes:
    """A 4 KiB $LogFile restart page (``RSTR``) whose restart area says ``in_use`` and ``flags``."""
    page = bytearray(4096)
    page[:4] = b"RSTR"
    struct.pack_into("<HHQIIH", page, 4, 0x1E, 9, 0, 4096, 4096, 0x40)
    struct.pack_into("<QHHHH", page, 0x40, lsn, 1, 0xFFFF, in_use, flags)
    struct.pack_into("<H", page, 0x1E, 7)
    for i in range(1, 9):
        end = i * 512 - 2
        page[0x1E + 2 * i : 0x20 + 2 * i] = page[end : end + 2]
        struct.pack_into("<H", page, end, 7)
    return bytes(page)


def tiny_ntfs(used: Iterable[int] = (20, 21, 22, 40), *, offset: int = 0, dirty: bool = False,
              log: bytes | None = None, bitmap_attr: bytes | None = None) -> Disk:  # fmt: skip
    """A 64-cluster NTFS volume at ``offset``; ``log``: the $LogFile's 8 KiB (default all 0xFF: empty)."""
    disk = Disk(offset + NTFS_CLUSTERS * NTFS_CLUSTER + 512)
    boot = offset
    disk.data[boot : boot + 11] = b"\xeb\x52\x90NTFS    "
    disk.put("HB", boot + 0x0B, 512, 8)
    disk.put("QQQ", boot + 0x28, NTFS_CLUSTERS * 8, NTFS_MFT, 2)
    disk.put("b", boot + 0x40, -10)
    disk.data[boot + 510 : boot + 512] = b"\x55\xaa"
    bitmap = bytearray(NTFS_CLUSTER)
    for c in {*NTFS_META, *used}:
        bitmap[c // 8] |= 1 << c % 8
    records = {
        0: [non_resident(0x80, [(NTFS_MFT, 4)], 16 * NTFS_RECORD)],
        2: [non_resident(0x80, [(NTFS_LOG, 2)], 2 * NTFS_CLUSTER)],
        3: [
            resident(0x60, "WIN".encode("utf-16-le")),
            resident(0x70, bytes(8) + bytes([3, 1]) + struct.pack("<H", int(dirty))),
        ],
        6: [bitmap_attr or non_resident(0x80, [(NTFS_BITMAP, 1)], NTFS_CLUSTERS // 8)],
    }
    for number, attrs in records.items():
        at = offset + NTFS_MFT * NTFS_CLUSTER + number * NTFS_RECORD
        disk.data[at : at + NTFS_RECORD] = mft_record(attrs)
    at = offset + NTFS_LOG * NTFS_CLUSTER
    disk.data[at : at + 2 * NTFS_CLUSTER] = log if log is not None else b"\xff" * (2 * NTFS_CLUSTER)
    at = offset + NTFS_BITMAP * NTFS_CLUSTER
    disk.data[at : at + NTFS_CLUSTER] = bitmap
    return disk


# --- partition tables ---------------------------------------------------------------------------------------
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
