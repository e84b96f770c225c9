"""Byte ranges of the disk: merging hole runs, splitting long runs, and the zero test.

A range is ``(offset, length)``. Hole chunks are consecutive in runs; the wipe works on merged runs (one
BLKZEROOUT or fallocate per run, split into bounded pieces for progress), and the report lists the runs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

from provision.wire.index import Index

Range = tuple[int, int]  # (offset, length)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, with overlapping or adjacent ranges joined and empty ones dropped."""
    out: list[list[int]] = []
    for offset, length in sorted(r for r in ranges if r[1] > 0):
        if out and offset <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], offset + length - out[-1][0])
        else:
            out.append([offset, length])
    return [(o, n) for o, n in out]


def hole_ranges(index: Index) -> list[Range]:
    """The runs of hole chunks of the image, merged."""
    return merge((c.offset, c.length) for c in index.chunks if c.sha256 is None)


def split(ranges: Iterable[Range], piece: int) -> Iterator[Range]:
    """Each range cut into pieces of at most ``piece`` bytes (aligned to ``piece`` from the range start)."""
    if piece <= 0:
        raise ValueError(f"piece size {piece} must be positive")
    for offset, length in ranges:
        for start in range(offset, offset + length, piece):
            yield start, min(piece, offset + length - start)


def total(ranges: Iterable[Range]) -> int:
    return sum(n for _, n in ranges)


def compact(ranges: Sequence[Range]) -> str:
    """``start-end`` (end exclusive) of each range, comma-separated: short enough for a log line."""
    return ",".join(f"{o}-{o + n}" for o, n in ranges) or "-"


@functools.lru_cache(maxsize=8)
def zeros(length: int) -> bytes:
    return bytes(length)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True for an all-zero buffer: one memcmp against a cached zero buffer of the same length.

    (``bytes.startswith`` takes any buffer and compares with memcmp; ``memoryview == bytes`` would compare
    item by item, 50 times slower.)"""
    return zeros(len(data)).startswith(data)
