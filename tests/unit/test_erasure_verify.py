"""The erasure's read-back (provision.agent.erasure.verify) and its overwrite pass, on regular files standing in
for drives: the sample's coverage, determinism, bounds and order; each pattern found, one stray byte found, the
crypto erase's "changed" semantics; zeros over a sparse file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.agent.erasure.drive_io import MARK, MARKER, DriveIoError, DriveReader, drive_size, write_markers
from provision.agent.erasure.overwrite import overwrite
from provision.agent.erasure.verify import (
    ALIGN,
    BLOCK,
    EDGE,
    check,
    fingerprint,
    full_blocks,
    pieces,
    sample_blocks,
)
from tests.support.files import sparse_file

MiB = 1 << 20
GB = 10**9


def covered(blocks: list[tuple[int, int]]) -> int:
    return sum(n for _, n in blocks)


@pytest.mark.parametrize("size", [500 * GB, 2 * 10**12 + 4096 * 7, 33 * MiB, 64 * MiB + 512, 120 * GB])
@pytest.mark.parametrize("percent", [0.01, 1.0, 5.0, 50.0])
def test_the_sample_is_sorted_aligned_inside_the_drive_and_never_overlaps(size: int, percent: float) -> None:
    blocks = sample_blocks(size, percent, "S3Z9NB0K123456")
    assert blocks[0] == (0, EDGE)
    last_start, last_len = blocks[-1]
    assert last_start + last_len == size and last_len >= EDGE and last_start % ALIGN == 0
    end = 0
    for offset, length in blocks:
        assert offset >= end and offset % ALIGN == 0 and length > 0
        end = offset + length
    assert end == size
    middle = blocks[1:-1]
    assert all(n == BLOCK for _, n in middle)
    wanted = size * percent / 100
    room = (last_start - EDGE) // BLOCK
    assert len(middle) == min(-(-int(wanted) // BLOCK), room)  # the percent asked, or all the middle has room for
    if len(middle) < room:
        assert wanted <= covered(middle) < wanted + BLOCK


def test_the_sample_spreads_over_the_whole_drive() -> None:
    size = 256 * GB
    middle = sample_blocks(size, 1.0, "serial")[1:-1]
    tenth = size // 10
    per_tenth = [sum(1 for o, _ in middle if t * tenth <= o < (t + 1) * tenth) for t in range(10)]
    assert min(per_tenth) >= len(middle) // 10 - 2  # stretches: no tenth of the drive left out


def test_the_sample_is_the_same_for_a_serial_and_differs_between_serials() -> None:
    size = 100 * GB
    assert sample_blocks(size, 5, "WD-1") == sample_blocks(size, 5, "WD-1")
    assert sample_blocks(size, 5, "WD-1") != sample_blocks(size, 5, "WD-2")


def test_small_drives_are_read_whole() -> None:
    assert sample_blocks(0, 5, "x") == [] and full_blocks(0) == []
    assert sample_blocks(10 * MiB, 5, "x") == [(0, 10 * MiB)]
    assert sample_blocks(2 * EDGE, 5, "x") == [(0, 2 * EDGE)]
    assert full_blocks(5000) == [(0, 5000)]


def drive(tmp_path: Path, size: int, pattern: bytes) -> Path:
    """A file of ``size`` bytes filled with ``pattern`` repeated."""
    path = tmp_path / "sdb"
    path.write_bytes((pattern * (size // len(pattern) + 1))[:size])
    return path


def poke(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def test_zeros_are_found_and_one_stray_byte_is_not_missed(tmp_path: Path) -> None:
    size = 40 * MiB + 4096
    path = sparse_file(tmp_path / "sdb", size)
    blocks = sample_blocks(size, 50, "serial")
    good = check(path, blocks, "zeros")
    assert good.ok and good.mismatches == 0 and good.bytes_checked == covered(blocks)
    assert good.samples == 16 + 8 + 16 and good.method == "sample" and good.note is None
    assert not check(path, blocks, "ones").ok
    stray = blocks[2][0] + 12345
    poke(path, stray, b"\x01")
    poke(path, size - 1, b"\x80")
    bad = check(path, blocks, "zeros")
    assert (bad.ok, bad.mismatches, bad.first_mismatches) == (False, 2, [stray, size - 1])
    full = check(path, full_blocks(size), "zeros", method="full")
    assert (full.ok, full.mismatches, full.bytes_checked, full.method) == (False, 2, size, "full")


def test_ones_and_zeros_or_ones(tmp_path: Path) -> None:
    size = 8 * MiB
    path = drive(tmp_path, size, b"\xff")
    assert check(path, full_blocks(size), "ones").ok
    assert check(path, full_blocks(size), "zeros-or-ones").ok
    poke(path, 0, bytes(MiB))  # one piece of zeros among pieces of ones: still zeros-or-ones
    assert check(path, full_blocks(size), "zeros-or-ones").ok
    poke(path, 3 * MiB + 7, b"\x00")  # a piece mixing both is neither
    mixed = check(path, full_blocks(size), "zeros-or-ones")
    assert (mixed.ok, mixed.first_mismatches) == (False, [3 * MiB + 7])
    text = drive(tmp_path, size, b"donor payroll 2019;")
    assert check(text, full_blocks(size), "zeros-or-ones").first_mismatches[:2] == [0, MiB]


def test_changed_finds_a_crypto_erase_that_did_not_happen(tmp_path: Path) -> None:
    size = 48 * MiB
    path = drive(tmp_path, size, os.urandom(4093))
    blocks = sample_blocks(size, 10, "serial")
    before = fingerprint(path, blocks)
    assert len(before) == 16 + 5 + 16 and before.informative == len(before)
    lying = check(path, blocks, "changed", before)
    assert (lying.ok, lying.mismatches, lying.first_mismatches[:2]) == (False, len(before), [0, MiB])
    path.write_bytes(os.urandom(size))  # what a crypto erase leaves: noise
    erased = check(path, blocks, "changed", before)
    assert erased.ok and erased.note is None and erased.pattern == "changed"


def test_changed_finds_old_data_moved_and_a_blank_piece_read_as_before(tmp_path: Path) -> None:
    size = 40 * MiB
    path = sparse_file(tmp_path / "sdb", size)
    data = os.urandom(MiB)
    for n in range(10):
        poke(path, n * MiB, data[n:] + data[:n])
    blocks = full_blocks(size)
    before = fingerprint(path, blocks)
    assert before.informative == 10
    for n in range(40):
        poke(path, n * MiB, os.urandom(MiB))
    assert check(path, blocks, "changed", before, method="full").ok
    poke(path, 20 * MiB, data)  # piece 20 (blank before) now holds piece 0's old data
    moved = check(path, blocks, "changed", before, method="full")
    assert (moved.ok, moved.first_mismatches) == (False, [20 * MiB])
    poke(path, 20 * MiB, bytes(MiB))  # blank again, as before: nothing says the drive erased it
    blank = check(path, blocks, "changed", before, method="full")
    assert (blank.ok, blank.first_mismatches) == (False, [20 * MiB])


def test_changed_on_a_blank_drive_that_did_nothing_is_not_ok_and_the_marker_makes_every_piece_count(
    tmp_path: Path,
) -> None:
    size = 40 * MiB
    path = sparse_file(tmp_path / "sdb", size)
    blocks = sample_blocks(size, 5, "serial")
    blank = fingerprint(path, blocks)
    assert blank.informative == 0
    nothing = check(path, blocks, "changed", blank)  # a crypto erase that did nothing on a blank drive
    assert nothing.ok is False and nothing.mismatches == nothing.samples == len(blank) and nothing.note is None
    assert write_markers(path, pieces(blocks)) == len(blank)
    marked = fingerprint(path, blocks)
    assert marked.informative == len(marked) and len({marked.digest(i) for i in range(len(marked))}) == len(marked)
    zeros = check(path, blocks, "zeros")  # the marker is no pattern: a drive that ignored the erase fails it
    assert zeros.ok is False and zeros.mismatches == zeros.samples and zeros.first_mismatches[:2] == [0, MiB]
    assert not check(path, blocks, "zeros-or-ones").ok and not check(path, blocks, "changed", marked).ok
    with path.open("rb") as f:  # the marker is at the start of every piece, and only there
        f.seek(MiB)
        piece = f.read(MiB)
    assert piece.startswith(MARKER + MiB.to_bytes(8, "little")) and len(set(piece[:MARK])) > 200
    assert piece[MARK:] == bytes(MiB - MARK)
    with pytest.raises(ValueError, match="fingerprint"):
        check(path, sample_blocks(size, 5, "other"), "changed", marked)


def test_overwrite_zeros_every_byte_of_a_sparse_file_and_reports_progress(tmp_path: Path) -> None:
    size = 9 * MiB + 512  # not a multiple of the 4 MiB write
    path = sparse_file(tmp_path / "sdb", size, fill=b"donor data" * 1000)
    poke(path, 6 * MiB, b"more donor data")
    poke(path, size - 3, b"end")
    ticks = iter(range(0, 1000, 2))
    seen: list[tuple[int, int]] = []
    done = overwrite(path, progress=lambda d, t: seen.append((d, t)), clock=lambda: float(next(ticks)))
    assert done.bytes_written == size == drive_size(path) and done.io_mode in ("O_DIRECT", "buffered")
    assert path.read_bytes() == bytes(size)
    assert seen[-1] == (size, size) and [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 3
    assert check(path, full_blocks(size), "zeros", method="full").ok
    with DriveReader(path) as reader:
        assert reader.size == size and bytes(reader.read(size - 512, 4096)) == bytes(512)


def test_overwrite_and_read_errors_name_the_drive_and_where(tmp_path: Path) -> None:
    for call in (lambda p: overwrite(p), lambda p: fingerprint(p, [(0, 10)]), lambda p: check(p, [(0, 1)], "zeros")):
        with pytest.raises(DriveIoError) as caught:
            call(tmp_path / "absent")
        assert caught.value.facts["path"] == str(tmp_path / "absent") and caught.value.facts["errno"] == 2
        assert "No such file" in str(caught.value)
