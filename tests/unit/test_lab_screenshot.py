"""A lab PC's screendump (QEMU's PPM) made a PNG with the standard library, and read back by an independent
decoder written here from the PNG specification (zlib + filter type 0): the pixels are the PPM's."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from provision.lab import PCSpec, qemu_argv
from provision.lab.screenshot import BadPPM, distinct_colours, parse_ppm, ppm_complete, ppm_to_png


def ppm(width: int, height: int, pixel: bytes = b"\x00\x00\xaa") -> bytes:
    pixels = bytearray(pixel * (width * height))
    pixels[0:3] = b"\xff\xff\xff"  # one white pixel top left
    return f"P6\n{width} {height}\n255\n".encode() + bytes(pixels)


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", body)
            assert (depth, colour) == (8, 2)
            size = (width, height)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = size[0] * 3 + 1
    assert all(raw[row * stride] == 0 for row in range(size[1]))
    return size[0], size[1], b"".join(raw[row * stride + 1 : (row + 1) * stride] for row in range(size[1]))


def test_a_screendump_becomes_a_png_with_the_same_pixels() -> None:
    data = ppm(720, 400)
    assert png_pixels(ppm_to_png(data)) == parse_ppm(data)
    assert distinct_colours(data) == 2 and distinct_colours(ppm(3, 2, b"\x01\x02\x03")) == 2


@pytest.mark.parametrize(
    "data",
    [b"", b"P3\n1 1\n255\n000", b"P6\n2 2\n255\n" + b"\x00" * 11, b"P6\n1 1\n65535\n" + b"\x00" * 6, b"P6\n0 1\n255\n"],
)
def test_what_is_not_a_whole_ppm(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(BadPPM):
        parse_ppm(data)
    (tmp_path / "s.ppm").write_bytes(data)
    assert not ppm_complete(tmp_path / "s.ppm") and not ppm_complete(tmp_path / "missing.ppm")


def test_a_pc_with_a_screen_has_a_vga_card_and_a_monitor(tmp_path: Path) -> None:
    spec = PCSpec(name="pc", mac="52:54:00:12:00:01", tap="tap0", screen=True)
    argv = qemu_argv(spec, disk=tmp_path / "disk.raw", serial=tmp_path / "s", sercon=tmp_path / "c", vars_file=None)
    assert "VGA" in argv and f"unix:{tmp_path / 'monitor.sock'},server=on,wait=off" in argv
    plain = PCSpec(name="pc", mac="52:54:00:12:00:01", tap="tap0")
    argv = qemu_argv(plain, disk=tmp_path / "disk.raw", serial=tmp_path / "s", sercon=tmp_path / "c", vars_file=None)
    assert "VGA" not in argv and "-monitor" not in argv
