"""GRUB's BIOS boot sector and core.img block list, written into a raw disk (biosboot.embed)."""

from __future__ import annotations

import struct

import pytest

from provision.builder.biosboot import embed
from provision.builder.errors import ImageBuildError

MiB = 1 << 20


def fake_core(sectors: int) -> bytes:
    core = bytearray(sectors * 512 - 100)
    struct.pack_into("<QHH", core, 500, 2, 7, 0x820)  # grub-mkimage's default block list entry
    struct.pack_into("<H", core, 512 + 0x14, 0x300)  # no-Reed-Solomon length
    return bytes(core)


def test_bios_embed(tmp_path):
    raw = tmp_path / "disk.raw"
    mbr = bytearray(512)
    mbr[0x1B8:0x1BC] = b"SIGN"
    mbr[0x1BE:0x1CE] = b"\x00\x00\x02\x00\xee" + b"\xff" * 3 + b"\x01\0\0\0" + b"\xff\xff\x03\0"
    mbr[510:] = b"\x55\xaa"
    raw.write_bytes(bytes(mbr) + bytes(4 * MiB))
    boot_img = bytes(range(256)) * 2
    nsec = embed(raw, boot_img, fake_core(56), 2048, 2048)
    assert nsec == 56
    data = raw.read_bytes()
    boot = data[:512]
    assert boot[0x1B8:0x1FE] == bytes(mbr[0x1B8:0x1FE])  # partition table kept
    assert boot[0x66:0x68] == b"\x90\x90" and boot[0x64] == 0xFF
    assert struct.unpack_from("<Q", boot, 0x5C)[0] == 2048
    assert boot[:3] == boot_img[:3] and boot[0x5A:0x5C] == boot_img[0x5A:0x5C]
    core = data[2048 * 512 : 2104 * 512]
    assert struct.unpack_from("<QHH", core, 500) == (2049, 55, 0x820)
    assert struct.unpack_from("<QHH", core, 488) == (0, 0, 0)


def test_bios_embed_refuses_what_does_not_fit(tmp_path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(510) + b"\x55\xaa" + bytes(MiB))
    with pytest.raises(ImageBuildError, match="the BIOS boot partition has 16"):
        embed(raw, bytes(512), fake_core(56), 2048, 16)
    raw.write_bytes(bytes(2 * MiB))
    with pytest.raises(ImageBuildError, match="no partition table"):
        embed(raw, bytes(512), fake_core(4), 2048, 2048)
