"""QEMU's screendump (a binary PPM, ``P6``) as a PNG, with the standard library only (zlib, struct): a lab PC's
screen saved where a person or a browser can look at it.

- ``ppm_complete(path)``: the file holds a whole PPM (QEMU writes it after the monitor command returns).
- ``parse_ppm(data)``: (width, height, RGB bytes); ``ppm_to_png(data)``: PNG bytes (8-bit RGB, no filter).
- ``distinct_colours(data)``: how many colours a PPM holds (a blank screen has one).
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

_HEADER = re.compile(rb"\AP6\s+(\d+)\s+(\d+)\s+(\d+)\s")


class BadPPM(ValueError):
    """Not a binary 8-bit PPM, or cut short."""


def parse_ppm(data: bytes) -> tuple[int, int, bytes]:
    header = _HEADER.match(data)
    if header is None:
        raise BadPPM("not a binary PPM (P6)")
    width, height, depth = (int(g) for g in header.groups())
    if depth != 255 or not (0 < width <= 16384 and 0 < height <= 16384):
        raise BadPPM(f"unsupported PPM: {width}x{height}, depth {depth}")
    pixels = data[header.end() : header.end() + width * height * 3]
    if len(pixels) != width * height * 3:
        raise BadPPM(f"PPM cut short: {len(pixels)} of {width * height * 3} bytes")
    return width, height, pixels


def ppm_complete(path: Path) -> bool:
    try:
        parse_ppm(path.read_bytes())
    except (OSError, BadPPM):
        return False
    return True


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def ppm_to_png(data: bytes) -> bytes:
    width, height, pixels = parse_ppm(data)
    stride = width * 3
    raw = b"".join(b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def distinct_colours(data: bytes, limit: int = 64) -> int:
    """How many colours the PPM's pixels hold (counting stops at ``limit``)."""
    _width, _height, pixels = parse_ppm(data)
    seen: set[bytes] = set()
    for i in range(0, len(pixels), 3):
        seen.add(pixels[i : i + 3])
        if len(seen) >= limit:
            break
    return len(seen)
