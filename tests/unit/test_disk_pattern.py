"""The erasure tests' disk pattern and the host's checks of what is left of it (tests/support/disk_pattern.py)."""

from __future__ import annotations

from provision.images.index import ChunkRef, ImageIndex
from tests.support.disk_pattern import (
    BLOCK,
    MARKER,
    data_ranges,
    nonzero_outside,
    pattern_block,
    pattern_hits,
    write_pattern,
)

MiB = 1 << 20


def test_each_block_says_its_offset():
    block = pattern_block(0x12345000)
    assert len(block) == BLOCK and block.startswith(MARKER + b" offset=0000000012345000 ")
    assert pattern_block(0) != pattern_block(BLOCK)


def test_a_pattern_file_and_every_hit_found(tmp_path):
    disk = write_pattern(tmp_path / "disk.raw", 2 * MiB)
    data = disk.read_bytes()
    assert len(data) == 2 * MiB and data[BLOCK : 2 * BLOCK] == pattern_block(BLOCK)
    assert pattern_hits(disk, limit=3) == [0, 50, 100]  # the head (marker, offset) repeats every 50 bytes


def test_a_marker_across_two_reads_and_at_the_end_is_found(tmp_path):
    disk = tmp_path / "zeros.raw"
    disk.write_bytes(bytes(8 * MiB))
    assert pattern_hits(disk) == [] and nonzero_outside(disk) == []
    with disk.open("r+b") as file:
        file.seek(4 * MiB - 10)  # straddles the 4 MiB read boundary
        file.write(MARKER)
        file.seek(8 * MiB - len(MARKER))
        file.write(MARKER)
    assert pattern_hits(disk) == [4 * MiB - 10, 8 * MiB - len(MARKER)]
    assert nonzero_outside(disk) == [4 * MiB - BLOCK, 4 * MiB, 8 * MiB - BLOCK]
    assert nonzero_outside(disk, keep=[(4 * MiB - BLOCK, 4 * MiB + BLOCK)]) == [8 * MiB - BLOCK]


def test_data_ranges_leave_holes_out():
    index = ImageIndex(
        name="t", created="2026-12-06T23:00:00Z", disk_size=12 * MiB, sector_size=512, chunk_size=4 * MiB,
        layout=None,  # type: ignore[arg-type]  # not read
        chunks=(ChunkRef("a" * 64, 4 * MiB), ChunkRef(None, 4 * MiB), ChunkRef("b" * 64, 4 * MiB)),
    )  # fmt: skip
    assert data_ranges(index) == [(0, 4 * MiB), (8 * MiB, 12 * MiB)]
