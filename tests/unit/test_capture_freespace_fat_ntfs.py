"""FAT12/16/32 and NTFS free space (provision.agent.capture.fat, .ntfs) on tiny synthetic volumes: what the
FAT and ``$Bitmap`` say, and each damage gives a note with nothing free."""

from __future__ import annotations

import random

import pytest

from provision.agent.capture import FreeSpace, free_space
from tests.support.fsimages import (
    NTFS_BITMAP,
    NTFS_CLUSTER,
    NTFS_CLUSTERS,
    NTFS_LOG,
    NTFS_META,
    NTFS_MFT,
    NTFS_RECORD,
    Disk,
    fat_set,
    mft_record,
    non_resident,
    resident,
    restart_page,
    tiny_fat,
    tiny_ntfs,
)  # fmt: skip


def space(disk: Disk, offset: int = 0) -> FreeSpace:
    return free_space(disk.read, offset, len(disk.data) - offset)


def units(result: FreeSpace, first: int) -> set[int]:
    """The free allocation units, numbered from ``first`` (cluster 2 of FAT, cluster 0 of NTFS)."""
    size = result.block_size
    return {(s - result.offset) // size + i + first for s, n in result.free for i in range(n // size)}


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_fat_free_clusters_are_the_zero_entries(bits: int) -> None:
    disk, data, clusters = tiny_fat(bits, offset=4096)
    result = space(disk, 4096)
    assert (result.fs, result.block_size, result.note) == ("vfat", 512, None)
    assert min(s for s, _ in result.free) >= data  # the reserved sectors, FATs and root directory are used
    assert {(s - data) // 512 + 2 + i for s, n in result.free for i in range(n // 512)} == set(
        range(2, clusters + 2)
    ) - {2, 3, 4, 10}
    assert result.label == ("EFI" if bits == 32 else None)


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_fat_a_cluster_used_in_one_copy_stays_data(bits: int) -> None:
    disk, data, _ = tiny_fat(bits)
    fat_sectors = (
        (disk.u16(0x16) or int.from_bytes(disk.data[36:40], "little"))
        if bits != 32
        else int.from_bytes(disk.data[36:40], "little")
    )
    rsvd = disk.u16(0x0E)
    fat_set(disk, (rsvd + fat_sectors) * 512, bits, 7, 5)  # the second FAT only
    result = space(disk)
    assert result.note is None and data + 5 * 512 not in {s + i for s, n in result.free for i in range(0, n, 512)}


def test_fat32_reserved_high_bits_do_not_make_a_cluster_used() -> None:
    disk, data, _ = tiny_fat(32)
    for copy in (0, 1):
        fat_set(disk, (32 + copy * int.from_bytes(disk.data[36:40], "little")) * 512, 32, 20, 0xF0000000)
    assert (data + 18 * 512, 512) in [(s, 512) for s, n in space(disk).free for s in range(s, s + n, 512)]


FAT_DAMAGES = [
    ("media", 0x15, "B", 0xF0, "is not the media byte"),
    ("total sectors", 0x20, "I", 1 << 30, "do not fit the partition"),
    ("fat size", 0x24, "I", 10, "cannot hold"),
    ("root entries on FAT32", 0x11, "H", 512, "BPB_RootEntCnt 512"),
    ("active FAT", 0x28, "H", 0x85, "active FAT 5 of 2"),
    ("no data region", 0x10, "B", 200, "no data region"),
]


@pytest.mark.parametrize(("at", "fmt", "value", "words"), [d[1:] for d in FAT_DAMAGES], ids=[d[0] for d in FAT_DAMAGES])
def test_fat_damage_is_a_note(at: int, fmt: str, value: int, words: str) -> None:
    disk, _, _ = tiny_fat(32)
    disk.put(fmt, at, value)
    result = space(disk)
    assert result.fs == "vfat" and result.free == () and words in (result.note or ""), result.note


def test_fat_not_recognised_without_its_signature() -> None:
    disk, _, _ = tiny_fat(16)
    disk.data[510] = 0
    assert space(disk).fs == "unknown"


def test_ntfs_free_clusters_are_the_clear_bits() -> None:
    result = space(tiny_ntfs(offset=8192), 8192)
    assert (result.fs, result.block_size, result.label, result.note) == ("ntfs", 4096, "WIN", None)
    assert units(result, 0) == set(range(NTFS_CLUSTERS)) - {*NTFS_META, 20, 21, 22, 40}


def test_ntfs_clusters_past_the_volume_stay_data() -> None:
    disk = tiny_ntfs()
    disk.put("Q", 0x28, (NTFS_CLUSTERS - 10) * 8)  # 54 clusters: the bitmap's last bits are not clusters
    assert max(units(space(disk), 0)) == NTFS_CLUSTERS - 11


def test_ntfs_resident_bitmap() -> None:
    bitmap = bytearray(NTFS_CLUSTERS // 8)
    for c in {*NTFS_META, 33}:
        bitmap[c // 8] |= 1 << c % 8
    result = space(tiny_ntfs(bitmap_attr=resident(0x80, bytes(bitmap))))
    assert units(result, 0) == set(range(NTFS_CLUSTERS)) - {*NTFS_META, 33}


@pytest.mark.parametrize(
    ("log", "clean"),
    [(restart_page(10, 0xFFFF, 0) * 2, True), (restart_page(10, 0, 2) + restart_page(5, 0, 0), True),
     (restart_page(5, 0, 2) + restart_page(10, 0, 0), False), (restart_page(10, 0, 0) + bytes(4096), False)],
    ids=["no client", "newer clean", "newer unclean", "one unclean"],
)  # fmt: skip
def test_ntfs_log_file(log: bytes, clean: bool) -> None:
    result = space(tiny_ntfs(log=log))
    assert (result.note is None) == clean, result.note
    if not clean:
        assert result.free == () and "$LogFile: not clean" in (result.note or "")


def put_record(disk: Disk, number: int, record: bytes) -> None:
    at = NTFS_MFT * NTFS_CLUSTER + number * NTFS_RECORD
    disk.data[at : at + NTFS_RECORD] = record


def test_ntfs_dirty_volume() -> None:
    assert "marked dirty" in (space(tiny_ntfs(dirty=True)).note or "")


def test_ntfs_torn_record() -> None:
    disk = tiny_ntfs()
    disk.data[NTFS_MFT * NTFS_CLUSTER + 6 * NTFS_RECORD + 1022] ^= 0xFF  # the end of $Bitmap's second stride
    assert space(disk).note == "$Bitmap (MFT record 6): update sequence mismatch in stride 2 (a torn write)"


@pytest.mark.parametrize(
    ("record", "words"),
    [(mft_record([non_resident(0x80, [(NTFS_BITMAP, 1)], 8, flags=0x8000)]), "compressed, encrypted or sparse"),
     (mft_record([non_resident(0x80, [(None, 1)], 8)]), "sparse run"),
     (mft_record([non_resident(0x80, [(NTFS_CLUSTERS - 1, 4)], 8)]), "outside the volume"),
     (mft_record([non_resident(0x80, [(NTFS_BITMAP, 1)], 4)]), "4 bytes (4 initialized), 8 needed"),
     (mft_record([non_resident(0x80, [(NTFS_BITMAP, 1)], 8, initialized=2)]), "(2 initialized), 8 needed"),
     (mft_record([resident(0x20, bytes(32)), non_resident(0x80, [(NTFS_BITMAP, 1)], 8)]), "attribute list"),
     (mft_record([resident(0x80, bytes(4))]), "4 bytes resident, 8 needed"),
     (mft_record([non_resident(0x80, [(NTFS_BITMAP, 1)], 8)], in_use=False), "record not in use"),
     (b"BAAD" + bytes(NTFS_RECORD - 4), "magic b'BAAD'")],
    ids=["sparse flag", "sparse run", "run outside", "short", "uninitialized", "attribute list", "short resident",
         "not in use", "bad magic"],
)  # fmt: skip
def test_ntfs_bitmap_damage_is_a_note(record: bytes, words: str) -> None:
    disk = tiny_ntfs()
    put_record(disk, 6, record)
    result = space(disk)
    assert result.fs == "ntfs" and result.free == () and words in (result.note or ""), result.note


@pytest.mark.parametrize(
    ("at", "fmt", "value", "words"),
    [(0x0D, "B", 3, "sectors per cluster byte 0x03"), (0x30, "Q", 10**9, "MFT at cluster"),
     (0x40, "b", 3, "MFT record size 12288"), (0x28, "Q", 10**9, "do not fit the partition")],
)  # fmt: skip
def test_ntfs_boot_sector_damage(at: int, fmt: str, value: int, words: str) -> None:
    disk = tiny_ntfs()
    disk.put(fmt, at, value)
    assert words in (space(disk).note or "")


def test_ntfs_log_without_a_restart_page() -> None:
    log = bytes(8192)
    log = log[:0x10] + (4096).to_bytes(4, "little") + log[0x14:]
    assert "no restart page" in (space(tiny_ntfs(log=log)).note or "")
    assert NTFS_LOG  # the $LogFile's clusters are the builder's


def test_random_damage_never_crashes_and_never_frees_metadata() -> None:
    rng = random.Random(6)
    for _ in range(300):
        disk = tiny_ntfs()
        for _ in range(rng.randrange(1, 4)):
            record = rng.choice([0, 2, 3, 6])
            at = NTFS_MFT * NTFS_CLUSTER + record * NTFS_RECORD + rng.randrange(0x30, 0x180)
            disk.data[at] = rng.randrange(256)
        result = space(disk)
        assert result.note is not None or not units(result, 0) & set(NTFS_META)


@pytest.mark.parametrize(
    ("log", "words"),
    [(b"CHKD" + bytes(8188), "chkdsk was interrupted (CHKD page at byte 0)"),
     (b"\xff" * 4096 + restart_page(10, 0, 0), "$LogFile: not clean"),  # the kernel looks at 4096 too
     (restart_page(10, 0, 0)[:4096] + b"\xff" * 4096, "$LogFile: not clean")],
    ids=["chkdsk", "second page only", "first page only"],
)  # fmt: skip
def test_ntfs_log_pages_are_looked_for_where_the_kernel_looks(log: bytes, words: str) -> None:
    result = space(tiny_ntfs(log=log))
    assert result.free == () and words in (result.note or ""), result.note


def test_ntfs_mft_with_an_attribute_list_reads_its_first_extent() -> None:
    """A fragmented $MFT (an attribute list, its $DATA in extents): records 0-15 are in the first extent."""
    disk = tiny_ntfs()
    attrs = [resident(0x20, bytes(32)), non_resident(0x80, [(NTFS_MFT, 4)], 16 * NTFS_RECORD)]
    put_record(disk, 0, mft_record(attrs))
    assert space(disk).note is None
    put_record(disk, 0, mft_record([resident(0x20, bytes(32))]))  # no extent from VCN 0 in the base record
    assert "$MFT: $DATA split across records (an attribute list) or missing" in (space(disk).note or "")
