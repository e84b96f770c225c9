"""The bmap file (format 2.0, sha256) that lets ``bmaptool copy`` write ``disk.img.zst`` to a disk.

Same layout as bmaptool 3.x's BmapCreate: ImageSize, BlockSize 4096, BlocksCount (the last block may be
partial), MappedBlocksCount, ChecksumType, BmapFileChecksum, BlockMap of ``<Range chksum="..."> a-b``.
BmapFileChecksum is the sha256 of the whole file while that field holds 64 ASCII zeros (bmaptool's
``_verify_bmap_checksum`` zeroes the first occurrence of the value and hashes the file). A range's chksum is
the sha256 of its bytes; the last block's bytes stop at ImageSize, as bmaptool reads them.

Mapped ranges are the non-hole chunks, adjacent ones merged. Their checksums need the plain bytes, so the
builder is fed chunk by chunk in disk order (at import, or from the chunk store when regenerating).

``bmap_problem`` checks a cached file the way bmaptool first does (its BmapFileChecksum) plus its ImageSize:
random bytes, a truncation or a flipped byte all fail it, and the store then rebuilds the cache.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

BLOCK_SIZE = 4096
ZERO_CHECKSUM = "0" * 64
_CHECKSUM_RE = re.compile(r"<BmapFileChecksum> ([0-9a-f]{64}) </BmapFileChecksum>")
_SIZE_RE = re.compile(r"<ImageSize> ([0-9]{1,20}) </ImageSize>")


def human_size(size: int) -> str:
    """bmaptool's human_size, for the comments."""
    if size == 1:
        return "1 byte"
    if size < 512:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} EiB"


class BmapBuilder:
    """Feed ``add(offset, data)`` for every chunk in order (``data=None`` for a hole), then ``text()``.
    Chunk offsets and lengths must be multiples of the block size except the last chunk's length."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.ranges: list[tuple[int, int, str]] = []
        self._first: int | None = None
        self._end = 0  # byte offset after the current run
        self._hash = hashlib.sha256()
        self._pos = 0

    def add(self, offset: int, length: int, data: bytes | None) -> None:
        if offset != self._pos or offset % BLOCK_SIZE:
            raise ValueError(f"bmap: chunk at {offset} out of order (expected {self._pos})")
        self._pos = offset + length
        if data is None:
            self._close()
            return
        if len(data) != length:
            raise ValueError(f"bmap: chunk at {offset}: {len(data)} bytes, expected {length}")
        if self._first is None:
            self._first = offset // BLOCK_SIZE
            self._hash = hashlib.sha256()
        self._hash.update(data)
        self._end = offset + length

    def _close(self) -> None:
        if self._first is not None:
            last = -(-self._end // BLOCK_SIZE) - 1
            self.ranges.append((self._first, last, self._hash.hexdigest()))
            self._first = None

    def text(self) -> str:
        if self._pos != self.image_size:
            raise ValueError(f"bmap: fed {self._pos} bytes of {self.image_size}")
        self._close()
        return render(self.image_size, self.ranges)


def render(image_size: int, ranges: Sequence[tuple[int, int, str]]) -> str:
    """The bmap text for ``ranges`` of (first block, last block, sha256 of the bytes), in order."""
    blocks = -(-image_size // BLOCK_SIZE)
    mapped = sum(last - first + 1 for first, last, _ in ranges)
    percent = mapped * 100.0 / blocks if blocks else 0.0
    lines = [
        '<?xml version="1.0" ?>',
        "<!-- This file contains the block map for an image file, which is basically",
        "     a list of useful (mapped) block numbers in the image file. Written by provision",
        "     from its chunk store: mapped ranges are the non-zero chunks of the image. -->",
        "",
        '<bmap version="2.0">',
        f"    <!-- Image size in bytes: {human_size(image_size)} -->",
        f"    <ImageSize> {image_size} </ImageSize>",
        "",
        "    <!-- Size of a block in bytes -->",
        f"    <BlockSize> {BLOCK_SIZE} </BlockSize>",
        "",
        "    <!-- Count of blocks in the image file -->",
        f"    <BlocksCount> {blocks} </BlocksCount>",
        "",
        f"    <!-- Count of mapped blocks: {human_size(mapped * BLOCK_SIZE)} or {percent:.1f}% -->",
        f"    <MappedBlocksCount> {mapped} </MappedBlocksCount>",
        "",
        "    <!-- Type of checksum used in this file -->",
        "    <ChecksumType> sha256 </ChecksumType>",
        "",
        "    <!-- The checksum of this bmap file. When it is calculated, the value of",
        '         the checksum has be zero (all ASCII "0" symbols).  -->',
        f"    <BmapFileChecksum> {ZERO_CHECKSUM} </BmapFileChecksum>",
        "",
        "    <!-- The block map which consists of elements which may either be a",
        "         range of blocks or a single block. The 'chksum' attribute",
        "         (if present) is the checksum of this blocks range. -->",
        "    <BlockMap>",
    ]
    for first, last, chksum in ranges:
        span = f"{first}-{last}" if first != last else f"{first}"
        lines.append(f'        <Range chksum="{chksum}"> {span} </Range>')
    lines += ["    </BlockMap>", "</bmap>", ""]
    text = "\n".join(lines)
    checksum = hashlib.sha256(text.encode()).hexdigest()
    return text.replace(f"<BmapFileChecksum> {ZERO_CHECKSUM} <", f"<BmapFileChecksum> {checksum} <", 1)


def bmap_problem(text: str, image_size: int) -> str | None:
    """None if ``text`` is a bmap whose own checksum holds and whose ImageSize is ``image_size``; else what
    is wrong with it (the range checksums need the chunks: ``image verify`` recomputes them)."""
    found = _CHECKSUM_RE.search(text)
    if found is None:
        return "no BmapFileChecksum in it"
    checksum = found.group(1)
    if hashlib.sha256(text.replace(checksum, ZERO_CHECKSUM, 1).encode()).hexdigest() != checksum:
        return "its BmapFileChecksum does not match its text"
    size = _SIZE_RE.search(text)
    if size is None or int(size.group(1)) != image_size:
        return f"its ImageSize is not {image_size}"
    return None
