"""A recognisable disk content for erasure tests, and the host's checks of what is left of it.

- ``pattern_block(offset)``: the 4 KiB block written at byte ``offset``: ``PROVISION-ERASURE-PATTERN
  offset=<16 hex digits> `` repeated (so a surviving block also says where it came from).
- ``write_pattern(path, size)``: a file of ``size`` bytes made of those blocks (a lab disk's ``source``).
- ``pattern_hits(path)``: byte offsets where the marker still appears, anywhere (unaligned too), at most ``limit``.
- ``nonzero_outside(path, keep)``: offsets of 4 KiB blocks that hold a non-zero byte outside the ``keep`` ranges
  (e.g. the image's data chunks), at most ``limit``.
- ``data_ranges(index)``: the (start, end) byte ranges of an image index's data chunks (holes left out).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from provision.images.index import ImageIndex

BLOCK = 4096
MARKER = b"PROVISION-ERASURE-PATTERN"
_READ = 4 << 20


def pattern_block(offset: int) -> bytes:
    head = MARKER + f" offset={offset:016x} ".encode()
    return (head * (BLOCK // len(head) + 1))[:BLOCK]


def write_pattern(path: Path, size: int) -> Path:
    """``path`` filled with the pattern blocks of their own offsets, ``size`` bytes (a multiple of 4 KiB)."""
    if size % BLOCK:
        raise ValueError(f"size {size} is not a multiple of {BLOCK}")
    with path.open("wb") as file:
        for base in range(0, size, _READ):
            file.write(b"".join(pattern_block(off) for off in range(base, min(base + _READ, size), BLOCK)))
    return path


def pattern_hits(path: Path, limit: int = 16) -> list[int]:
    """Offsets where ``MARKER`` appears in ``path`` (reads overlap by the marker's length: none is missed)."""
    hits: list[int] = []
    tail = b""
    position = 0  # file offset of the first byte after ``tail``
    with path.open("rb") as file:
        while block := file.read(_READ):
            data = tail + block
            start = position - len(tail)
            found = data.find(MARKER)
            while found != -1 and len(hits) < limit:
                hits.append(start + found)
                found = data.find(MARKER, found + 1)
            if len(hits) >= limit:
                break
            tail = data[-(len(MARKER) - 1) :]
            position += len(block)
    return hits


def _inside(offset: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(start <= offset < end for start, end in ranges)


def nonzero_outside(path: Path, keep: Iterable[tuple[int, int]] = (), limit: int = 16) -> list[int]:
    """Offsets of the 4 KiB blocks of ``path`` outside ``keep`` (block-aligned ranges) that are not all zeros."""
    ranges = sorted(keep)
    found: list[int] = []
    zero = bytes(BLOCK)
    with path.open("rb") as file:
        base = 0
        while (data := file.read(_READ)) and len(found) < limit:
            if data.count(0) != len(data):
                for i in range(0, len(data), BLOCK):
                    if data[i : i + BLOCK] != zero[: len(data[i : i + BLOCK])] and not _inside(base + i, ranges):
                        found.append(base + i)
                        if len(found) >= limit:
                            break
            base += len(data)
    return found


def data_ranges(index: ImageIndex) -> list[tuple[int, int]]:
    """The byte ranges of ``index``'s data chunks (what the image writes; holes are left out)."""
    ranges = []
    offset = 0
    for chunk in index.chunks:
        if not chunk.hole:
            ranges.append((offset, offset + chunk.length))
        offset += chunk.length
    return ranges
