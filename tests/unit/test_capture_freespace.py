"""The free-space API (provision.agent.capture.freespace): dispatch by magic, FreeSpace and its wire record,
the fallback (a note, nothing free, a warning with the offset), and the shared helpers (bit runs, FAT entry
runs, CRC32C and CRC16 against their published check values)."""

from __future__ import annotations

import logging
import random

import pytest

from provision.agent.capture import FreeSpace, free_space
from provision.agent.capture.common import clear_bit_runs, crc16, crc32c, zero_entry_runs
from provision.wire.capture import CapturedFs
from tests.support.fsimages import Disk, tiny_ext, tiny_fat, tiny_ntfs


def brute_runs(bits: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i, bit in enumerate(bits):
        if not bit:
            if runs and sum(runs[-1]) == i:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((i, 1))
    return runs


@pytest.mark.parametrize("seed", range(20))
def test_clear_bit_runs_match_bit_by_bit(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randrange(1, 200)
    data = bytes(rng.choice([0, 0xFF, rng.randrange(256)]) for _ in range(size))
    nbits = rng.randrange(1, size * 8 + 1)
    bits = [data[i // 8] >> i % 8 & 1 for i in range(nbits)]
    assert list(clear_bit_runs(data, nbits)) == brute_runs(bits)


def test_clear_bit_runs_stop_at_nbits() -> None:
    assert list(clear_bit_runs(b"\x00\x00", 11)) == [(0, 11)]
    assert list(clear_bit_runs(b"\xff\x50", 12)) == [(8, 4)]  # 0x50 = 0101 0000: bits 8-11 clear, 13 beyond
    assert list(clear_bit_runs(b"\xff\xff", 16)) == []


@pytest.mark.parametrize("width", [2, 4])
def test_zero_entry_runs_are_whole_entries(width: int) -> None:
    rng = random.Random(width)
    values = [rng.choice([0, 0, 1, 0x100, 1 << (8 * width - 8)]) for _ in range(300)]
    table = b"".join(v.to_bytes(width, "little") for v in values)
    expected = brute_runs([int(v != 0) for v in values])
    assert list(zero_entry_runs(table, width, 0, len(values))) == expected
    inner = [(a, n) for a, n in brute_runs([int(v != 0) if 5 <= i < 250 else 1 for i, v in enumerate(values)])]
    assert list(zero_entry_runs(table, width, 5, 245)) == inner


def test_checksums_have_their_check_values() -> None:
    assert crc32c(0xFFFFFFFF, b"123456789") ^ 0xFFFFFFFF == 0xE3069283  # CRC-32C (Castagnoli) check value
    assert crc16(0, b"123456789") == 0xBB3D  # CRC-16/ARC (lib/crc16.c) check value


def test_free_space_of_each_kind_is_absolute_sorted_and_merged() -> None:
    offset = 1 << 20
    for disk, kind in ((tiny_ext(offset=offset), "ext2"), (tiny_fat(16, offset=offset)[0], "vfat"),
                       (tiny_ntfs(offset=offset), "ntfs")):  # fmt: skip
        space = free_space(disk.read, offset, len(disk.data) - offset)
        assert (space.fs, space.note) == (kind, None)
        assert space.free and list(space.free) == sorted(space.free)
        for (a, n), (b, _) in zip(space.free, space.free[1:], strict=False):
            assert a + n < b  # merged: never adjacent
        for start, length in space.free:
            assert offset <= start and start + length <= offset + space.size
            assert (start - offset) % space.block_size == 0 and length % space.block_size == 0
        assert space.free_bytes == sum(n for _, n in space.free)


def test_the_wire_record() -> None:
    disk = tiny_ntfs()
    space = free_space(disk.read, 0, len(disk.data))
    record = space.captured(3)
    assert record == CapturedFs(partition=3, offset=0, size=len(disk.data), fs="ntfs", block_size=4096,
                                free_bytes=space.free_bytes, label="WIN")  # fmt: skip
    assert CapturedFs.from_dict(record.to_dict()) == record
    long = FreeSpace("unknown", 0, 10, 0, (), label="x" * 300, note="y" * 900).captured(1)
    assert CapturedFs.from_dict(long.to_dict()) == long  # cut to the wire's limits


def test_unknown_and_unreadable_partitions_have_nothing_free(caplog: pytest.LogCaptureFixture) -> None:
    blank = Disk(1 << 20)
    space = free_space(blank.read, 4096, 65536)
    assert (space.fs, space.free, space.block_size) == ("unknown", (), 0)
    assert "no ext2/3/4, vfat or NTFS" in (space.note or "")
    caplog.set_level(logging.WARNING)
    tiny = free_space(blank.read, 0, 1000)
    assert tiny.free == () and "first bytes do not read (0 read)" in (tiny.note or "")
    short = free_space(lambda o, n: blank.read(o, min(n, 100)), 0, 65536)
    assert short.free == () and short.note == "the partition's first bytes do not read (100 read)"
    assert "partition at byte 0" in caplog.text


def test_a_read_error_is_a_note_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    disk = tiny_ext(offset=8192)

    def failing(offset: int, length: int) -> bytes:
        if offset > 8192 + 2048:
            raise OSError(5, "Input/output error")
        return disk.read(offset, length)

    space = free_space(failing, 8192, len(disk.data) - 8192)
    assert (space.fs, space.free) == ("ext2", ())
    assert "Input/output error" in (space.note or "")
    assert "partition at byte 8192" in caplog.text


def test_a_short_read_is_a_note() -> None:
    disk = tiny_ext()  # group 1's bitmap is block 1027: the read stops 2 bytes into it
    space = free_space(lambda o, n: disk.read(o, n)[: max(0, 1027 * 1024 + 2 - o)], 0, len(disk.data))
    assert space.fs == "ext2" and space.free == ()
    assert space.note == "group 1 block bitmap at byte 1051648: short read (2 of 1024 bytes)"


@pytest.mark.parametrize(
    ("at", "magic", "words"),
    [(0, b"\xeb\x3c\x90mkfs.fat", "signatures of ext2 and vfat at once"), (0, b"LUKS\xba\xbe", "ext2 and LUKS"),
     (512, b"LABELONE", "ext2 and LVM2"), (65536 + 64, b"_BHRfS_M", "ext2 and btrfs"),
     (4096, b"\xfc\x4e\x2b\xa9", "ext2 and md RAID")],
    ids=["vfat", "luks", "lvm", "btrfs", "md"],
)  # fmt: skip
def test_two_signatures_at_once_are_refused(at: int, magic: bytes, words: str) -> None:
    """A stale superblock left by an earlier file system: which one is alive is not known, nothing is free."""
    disk = tiny_ext()
    disk.data[at : at + len(magic)] = magic
    if magic.startswith(b"\xeb"):
        disk.put("HBHB", 11, 512, 1, 1, 2)
        disk.data[510:512] = b"\x55\xaa"
    space = free_space(disk.read, 0, len(disk.data))
    assert space.fs == "ext2" and space.free == () and words in (space.note or ""), space.note


def test_a_file_system_recognised_but_not_understood_keeps_its_kind() -> None:
    disk = tiny_ntfs()
    disk.put("H", 0x0B, 3000)  # bytes per sector
    space = free_space(disk.read, 0, len(disk.data))
    assert (space.fs, space.free, space.note) == ("ntfs", (), "3000 bytes per sector")
