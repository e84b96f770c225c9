"""ext2/3/4 free blocks (provision.agent.capture.ext) on tiny synthetic file systems: what the bitmaps say,
BLOCK_UNINIT groups computed, 64-byte descriptors, checksums; and each damage gives a note with nothing free."""

from __future__ import annotations

import random
from typing import Any

import pytest

from provision.agent.capture import FreeSpace, free_space
from tests.support.fsimages import EXT_BPG, EXT_BS, Disk, ext_fix_super, ext_meta, tiny_ext

SB = 1024


def space(disk: Disk, offset: int = 0, size: int | None = None) -> FreeSpace:
    return free_space(disk.read, offset, (len(disk.data) - offset) if size is None else size)


def free_blocks(result: FreeSpace) -> set[int]:
    return {(s - result.offset) // EXT_BS + i for s, n in result.free for i in range(n // EXT_BS)}


def expected_free(groups: int = 2, last: int = 1024, used: range = range(21, 100)) -> set[int]:
    blocks = 1 + (groups - 1) * EXT_BPG + last
    meta = {b for g in range(groups) for b in ext_meta(g)}
    return set(range(1, blocks)) - meta - set(used)


@pytest.mark.parametrize(
    "options",
    [{}, {"bit64": True}, {"csum": True}, {"bit64": True, "csum": True}, {"gdt_csum": True},
     {"gdt_csum": True, "bit64": True}],
    ids=str,
)  # fmt: skip
def test_free_blocks_are_the_clear_bits(options: dict[str, Any]) -> None:
    result = space(tiny_ext(**options))
    assert result.note is None and result.label == "tiny" and result.block_size == 1024
    assert free_blocks(result) == expected_free()
    assert result.fs == ("ext4" if options.get("bit64") else "ext2")


@pytest.mark.parametrize("options", [{"gdt_csum": True}, {"csum": True, "bit64": True}], ids=str)
def test_block_uninit_group_is_computed_as_the_kernel_does(options: dict[str, Any]) -> None:
    result = space(tiny_ext(uninit=True, used=range(30, 40), **options))
    assert result.note is None
    assert free_blocks(result) == expected_free(used=range(30, 40))


def test_block_uninit_is_ignored_without_a_descriptor_checksum() -> None:
    result = space(tiny_ext(uninit=True))  # the kernel reads the (absent: zero) bitmap, whose count is wrong
    assert result.free == () and "group 1: bitmap has 1024 free blocks, its descriptor says 1004" in (result.note or "")


def test_blocks_past_the_file_system_in_the_partition_stay_data() -> None:
    disk = tiny_ext(groups=3, last=300, offset=4096)
    result = space(disk, 4096)
    fs_end = 4096 + (1 + 2 * EXT_BPG + 300) * EXT_BS
    assert result.note is None and max(s + n for s, n in result.free) == fs_end
    assert result.size > fs_end - 4096  # the partition goes on past the file system


def test_a_used_block_marked_free_is_trusted_when_the_counts_agree() -> None:
    """The damage e2fsck alone could find (a data block of a file cleared in the bitmap, the free count raised
    to match): the bitmap is trusted, as the kernel trusts it; nothing crashes."""
    disk = tiny_ext()
    disk.data[3 * EXT_BS + 50 // 8] &= ~(1 << 50 % 8) & 0xFF  # block 51 (group 0 bit 50)
    desc = 2 * EXT_BS
    disk.put("H", desc + 0xC, disk.u16(desc + 0xC) + 1)
    result = space(disk)
    assert result.note is None and 51 in free_blocks(result)


def test_a_used_block_marked_free_without_its_count_is_refused() -> None:
    disk = tiny_ext()
    disk.data[3 * EXT_BS + 50 // 8] &= ~(1 << 50 % 8) & 0xFF
    result = space(disk)
    assert result.free == () and result.note == "group 0: bitmap has 926 free blocks, its descriptor says 925"


def test_metadata_marked_free_is_refused() -> None:
    disk = tiny_ext()
    disk.data[3 * EXT_BS + 1] &= 0xFE  # group 0 bit 8: block 9, in the inode table
    disk.put("H", 2 * EXT_BS + 0xC, disk.u16(2 * EXT_BS + 0xC) + 1)
    result = space(disk)
    assert result.free == () and result.note == "block 9 holds file system metadata but a bitmap marks it free"


def damage_super(disk: Disk, fmt: str, at: int, value: int) -> Disk:
    disk.put(fmt, SB + at, value)
    ext_fix_super(disk)
    return disk


DAMAGES = [
    ("needs recovery", "I", 0x60, 0x2 | 0x4, "the journal needs recovery"),
    ("not clean", "H", 0x3A, 0, "not clean or with errors"),
    ("errors", "H", 0x3A, 3, "not clean or with errors"),
    ("journal device", "I", 0x60, 0x8, "external journal device"),
    ("bigalloc", "I", 0x64, 0x1 | 0x200 | 0x400, "bigalloc"),
    ("block size", "I", 0x18, 9, "s_log_block_size 9"),
    ("first data block", "I", 0x14, 0, "s_first_data_block 0 with 1024-byte blocks"),
    ("blocks per group", "I", 0x20, 9000, "s_blocks_per_group 9000"),
    ("few blocks per group", "I", 0x20, 8, "s_blocks_per_group 8"),
    ("clusters per group", "I", 0x24, 2048, "s_clusters_per_group 2048 is not s_blocks_per_group 1024"),
    ("inodes per group", "I", 0x28, 0, "s_inodes_per_group 0"),
    ("inodes", "I", 0x0, 255, "s_inodes_count 255 is not 128 per group x 2 groups"),
    ("blocks", "I", 0x4, 1 << 30, "do not fit the partition"),
    ("inode size", "H", 0x58, 100, "s_inode_size 100"),
]


@pytest.mark.parametrize(("fmt", "at", "value", "words"), [d[1:] for d in DAMAGES], ids=[d[0] for d in DAMAGES])
def test_superblock_damage_is_a_note(fmt: str, at: int, value: int, words: str) -> None:
    result = space(damage_super(tiny_ext(csum=True, bit64=True), fmt, at, value))
    assert result.free == () and words in (result.note or ""), result.note
    assert result.label == "tiny"


def test_superblock_checksum() -> None:
    disk = tiny_ext(csum=True)
    disk.data[SB + 0x78] = ord("T")  # the label, checksum not recomputed
    assert "superblock checksum" in (space(disk).note or "")


@pytest.mark.parametrize("options", [{"csum": True}, {"gdt_csum": True}], ids=str)
def test_descriptor_checksum(options: dict[str, Any]) -> None:
    disk = tiny_ext(**options)
    disk.data[2 * EXT_BS + 32 + 0x10] ^= 1  # group 1's used dirs count
    assert (space(disk).note or "").startswith("group 1 descriptor checksum")


def test_block_bitmap_checksum() -> None:
    disk = tiny_ext(csum=True, bit64=True)
    disk.data[(EXT_BPG + 3) * EXT_BS + 100] = 0x0F  # group 1's bitmap: 4 blocks used more, count not changed
    assert (space(disk).note or "").startswith("group 1 block bitmap checksum")


@pytest.mark.parametrize(("at", "value"), [(0x0, 5000), (0x20, 1), (0x8, 2040)], ids=["lo", "hi", "inode table"])
def test_metadata_outside_the_file_system(at: int, value: int) -> None:
    disk = tiny_ext(bit64=True)
    disk.put("I", 2 * EXT_BS + 64 + at, value)
    assert "is outside the file system" in (space(disk).note or "")


def test_a_partition_shorter_than_the_file_system() -> None:
    disk = tiny_ext()
    assert "do not fit the partition" in (space(disk, 0, 1 << 20).note or "")


def test_random_damage_never_crashes_and_never_frees_metadata() -> None:
    """Bytes of the superblock, descriptors and bitmaps changed at random: a note, or free blocks that are
    none of the file system's own metadata blocks."""
    rng = random.Random(17)
    meta = {b for g in range(2) for b in ext_meta(g)} | {0}
    for _ in range(400):
        disk = tiny_ext(csum=rng.random() < 0.5, bit64=rng.random() < 0.5)
        for _ in range(rng.randrange(1, 4)):
            at = rng.choice(
                [SB + rng.randrange(0x100), 2 * EXT_BS + rng.randrange(128), 3 * EXT_BS + rng.randrange(128)]
            )
            disk.data[at] = rng.randrange(256)
        result = space(disk)
        assert result.note is not None or not free_blocks(result) & meta
