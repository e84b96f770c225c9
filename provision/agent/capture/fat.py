"""Free clusters of a FAT12/16/32 file system (an EFI system partition is FAT32 or FAT16), from its FAT
(Microsoft "FAT: General Overview of On-Disk Format", version 1.03, "Boot Sector and BPB", "FAT Type
Determination", "FAT Data Structure").

- The boot sector's BPB: ``BPB_BytsPerSec`` (512 .. 4096), ``BPB_SecPerClus`` (a power of 2), ``BPB_RsvdSecCnt``,
  ``BPB_NumFATs``, ``BPB_RootEntCnt``, ``BPB_TotSec16/32``, ``BPB_Media``, ``BPB_FATSz16``, and for FAT32
  ``BPB_FATSz32`` and ``BPB_ExtFlags`` (bit 7: only the active FAT of bits 0-3 is used, else all are mirrors);
  the volume label when ``BS_BootSig`` is 0x29.
- The type: FAT32 when ``BPB_FATSz16`` is 0 (as Linux and dosfstools decide; the root directory is then a
  cluster chain and ``BPB_RootEntCnt`` must be 0), else FAT12 below 4085 clusters and FAT16 below 65525.
- The regions: reserved sectors, the FATs, the FAT12/16 root directory, then the data region, cluster 2 first;
  all of it but the data region's clusters is used, and so are the sectors after the last whole cluster.
- A cluster is free when its FAT entry is 0 (FAT32: the low 28 bits) in every FAT copy in use: a copy that
  disagrees keeps the cluster as data. ``FAT[0]``'s low byte must be ``BPB_Media``.

A volume whose clean-shutdown bit (FAT[1]) is clear is read as it is: FAT has no journal, the FAT on disk is what
fsck and every driver go by. The FAT is trusted as the file system trusts it.
"""

from __future__ import annotations

import logging
import struct

from provision.agent.capture.common import Found, Range, Volume, zero_entry_runs

log = logging.getLogger(__name__)

PIECE = 4 << 20  # bytes of a FAT read at once (a multiple of 4)
_HIGH_NIBBLE = bytes(b & 0x0F for b in range(256))  # FAT32 entries: the top 4 bits are reserved


def looks_fat(boot: bytes) -> bool:
    """A boot sector with a jump, the 0x55AA signature and a plausible BPB (not NTFS or exFAT)."""
    if len(boot) < 512 or boot[510:512] != b"\x55\xaa" or boot[0] not in (0xEB, 0xE9):
        return False
    if boot[3:11] in (b"NTFS    ", b"EXFAT   "):
        return False
    bps, spc, rsvd, fats = struct.unpack_from("<HBHB", boot, 11)
    return bps in (512, 1024, 2048, 4096) and spc in (1, 2, 4, 8, 16, 32, 64, 128) and rsvd > 0 and fats > 0


def read_fat(vol: Volume) -> Found:
    """The free clusters of the FAT file system of ``vol`` (absolute disk ranges), or ``FsProblem``."""
    boot = vol.read(0, 512, "boot sector")
    bps, spc, rsvd, fats, root_entries, tot16, media, fat16 = struct.unpack_from("<HBHBHHBH", boot, 11)
    tot32, fat32_size, ext_flags = struct.unpack_from("<IIH", boot, 32)
    is32 = fat16 == 0
    sig, label_at = (0x42, 0x47) if is32 else (0x26, 0x2B)
    if boot[sig] == 0x29:
        label = boot[label_at : label_at + 11].decode("latin-1").rstrip(" \0")
        vol.label = label if label and label != "NO NAME" else None
    vol.block_size = cluster = bps * spc
    fat_sectors = fat32_size if is32 else fat16
    total = tot16 or tot32
    if is32 and root_entries:
        raise vol.problem(f"FAT32 (BPB_FATSz16 0) with BPB_RootEntCnt {root_entries}")
    if fat_sectors == 0 or total == 0:
        raise vol.problem(f"BPB_FATSz {fat_sectors}, BPB_TotSec {total}: not a FAT volume")
    if total * bps > vol.size:
        raise vol.problem(f"{total} sectors of {bps} bytes do not fit the partition ({vol.size} bytes)")
    root_sectors = -(-root_entries * 32 // bps)
    data_first = rsvd + fats * fat_sectors + root_sectors
    clusters = (total - data_first) // spc if total > data_first else 0
    if clusters < 1:
        raise vol.problem(f"no data region: {total} sectors, the data region would start at sector {data_first}")
    bits = 32 if is32 else 12 if clusters < 4085 else 16
    if bits == 16 and clusters >= 65525:
        raise vol.problem(f"{clusters} clusters: too many for FAT16 (BPB_FATSz16 {fat16})")
    if fat_sectors * bps * 8 // bits < clusters + 2:
        raise vol.problem(f"a FAT of {fat_sectors} sectors cannot hold {clusters + 2} entries of {bits} bits")
    copies = [ext_flags & 0x0F] if is32 and ext_flags & 0x80 else list(range(fats))
    if copies[0] >= fats:
        raise vol.problem(f"active FAT {copies[0]} of {fats} (BPB_ExtFlags 0x{ext_flags:04x})")
    fat_bytes = -(-(clusters + 2) * bits // 8)
    starts = [(rsvd + copy * fat_sectors) * bps for copy in copies]
    head = _merged(vol, starts, 0, min(fat_bytes, 8))
    if head[0] != media:
        raise vol.problem(f"FAT[0] low byte 0x{head[0]:02x} is not the media byte 0x{media:02x}")
    clean = (struct.unpack_from("<I", head, 4)[0] >> 27 & 1) if is32 else (head[3] >> 7 if bits == 16 else 1)
    if not clean:
        log.warning("FAT at byte %d: the clean-shutdown bit is clear (read as it is)", vol.offset)
    runs = _free_runs(vol, starts, bits, clusters, fat_bytes)
    first_byte = data_first * bps
    free = [(vol.offset + first_byte + (c - 2) * cluster, n * cluster) for c, n in runs]
    return Found("vfat", cluster, free, vol.label)


def _merged(vol: Volume, starts: list[int], at: int, length: int) -> bytes:
    """Bytes ``at`` .. of every FAT copy in use, OR-ed: an entry is zero only when zero in all of them."""
    out = 0
    for i, start in enumerate(starts):
        out |= int.from_bytes(vol.read(start + at, length, f"FAT copy {i} bytes {at}-{at + length}"), "little")
    return out.to_bytes(length, "little")


def _free_runs(vol: Volume, starts: list[int], bits: int, clusters: int, fat_bytes: int) -> list[Range]:
    """Runs ``(first cluster, count)`` of free clusters 2 .. clusters + 1."""
    last = clusters + 1
    if bits == 12:
        table = _merged(vol, starts, 0, fat_bytes)
        runs: list[Range] = []
        for n in range(2, last + 1):
            value = struct.unpack_from("<H", table, n + n // 2)[0]
            if not (value >> 4 if n & 1 else value & 0xFFF):
                if runs and sum(runs[-1]) == n:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                else:
                    runs.append((n, 1))
        return runs
    width = bits // 8
    runs = []
    for at in range(0, fat_bytes, PIECE):
        piece = bytearray(_merged(vol, starts, at, min(PIECE, fat_bytes - at)))
        if width == 4:
            piece[3::4] = piece[3::4].translate(_HIGH_NIBBLE)
        base = at // width
        lo, hi = max(2, base), min(last, base + len(piece) // width - 1)
        if lo > hi:
            continue
        for first, n in zero_entry_runs(bytes(piece), width, lo - base, hi - lo + 1):
            if runs and sum(runs[-1]) == first + base:
                runs[-1] = (runs[-1][0], runs[-1][1] + n)
            else:
                runs.append((first + base, n))
    return runs
