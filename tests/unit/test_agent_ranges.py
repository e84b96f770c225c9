"""Range merging and splitting, the hole runs of an index, and the zero test."""

from __future__ import annotations

import itertools
import mmap

from hypothesis import given
from hypothesis import strategies as st

from provision.agent import read_index
from provision.agent.ranges import compact, hole_ranges, is_zero, merge, split, total
from tests.support.agent import CHUNK, build_image, random_disk


def test_merge() -> None:
    assert merge([]) == []
    assert merge([(10, 5), (0, 10)]) == [(0, 15)]  # adjacent, unsorted
    assert merge([(0, 10), (5, 2)]) == [(0, 10)]  # contained
    assert merge([(0, 10), (8, 10), (30, 1), (31, 0)]) == [(0, 18), (30, 1)]  # overlap; empty dropped
    assert merge([(0, 0)]) == []


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), max_size=30))
def test_merge_covers_the_same_bytes(ranges: list[tuple[int, int]]) -> None:
    merged = merge(ranges)
    covered = {b for o, n in ranges for b in range(o, o + n)}
    assert {b for o, n in merged for b in range(o, o + n)} == covered
    assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(merged))  # disjoint, gaps between
    assert all(n > 0 for _, n in merged)


def test_split() -> None:
    assert list(split([(0, 10), (20, 3)], 4)) == [(0, 4), (4, 4), (8, 2), (20, 3)]
    assert total(split([(5, 1000)], 7)) == 1000


def test_hole_ranges_of_an_index() -> None:
    raw = random_disk(10 * CHUNK + 512, [0, 3, 4, 9])
    index = read_index(build_image(raw).index)
    assert hole_ranges(index) == [(CHUNK, 2 * CHUNK), (5 * CHUNK, 4 * CHUNK), (10 * CHUNK, 512)]
    assert compact(hole_ranges(index)) == f"{CHUNK}-{3 * CHUNK},{5 * CHUNK}-{9 * CHUNK},{10 * CHUNK}-{10 * CHUNK + 512}"
    assert compact([]) == "-"
    all_holes = read_index(build_image(bytes(3 * CHUNK)).index)
    assert hole_ranges(all_holes) == [(0, 3 * CHUNK)]


def test_is_zero() -> None:
    buf = mmap.mmap(-1, 8192)
    view = memoryview(buf)
    assert is_zero(view) and is_zero(view[:100]) and is_zero(b"") and is_zero(bytearray(10))
    view[8191] = 1
    assert not is_zero(view) and is_zero(view[:8191])
    assert not is_zero(b"\0\0\1")
    view.release()
    buf.close()
