"""Partition table parsing (GPT, MBR with logical partitions) on synthetic headers, and the refusals."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest

from provision.builder.layout import BIOS_BOOT, ESP, LINUX_FS, NewPartition, write_gpt, write_mbr
from provision.images import ImageError, read_partition_table
from provision.images.partitions import MBR_ENTRY, MBR_SIGNATURE, PartitionTable

MiB = 1 << 20


def parse(f: io.BytesIO | Path, sector_size: int = 512) -> PartitionTable:
    if isinstance(f, Path):
        with f.open("rb") as g:
            return read_partition_table(g, os.path.getsize(f), sector_size=sector_size, path=str(f))
    return read_partition_table(f, len(f.getbuffer()), sector_size=sector_size, path="mem.img")


def gpt_disk(size: int = 64 * MiB, sector_size: int = 512) -> tuple[io.BytesIO, PartitionTable]:
    f = io.BytesIO(bytes(size))
    parts = [
        NewPartition(1 * MiB, BIOS_BOOT, "bios"),
        NewPartition(100 * 1024 * 1024 // 4, ESP, "EFI system"),
        NewPartition(0, LINUX_FS, "rootfs ünicode"),
    ]
    table = write_gpt(f, size, parts, sector_size=sector_size, seed=7)
    return f, table


def test_gpt_round_trip() -> None:
    f, written = gpt_disk()
    table = parse(f)
    assert table == written
    assert table.label == "gpt"
    assert [p.number for p in table.partitions] == [1, 2, 3]
    assert table.partitions[0].start == 2048 and table.partitions[0].size == 2048
    assert table.partitions[1].type == ESP and table.partitions[1].name == "EFI system"
    assert table.partitions[2].name == "rootfs ünicode"
    assert table.partitions[2].end - 1 == table.last_lba == 64 * MiB // 512 - 34
    assert PartitionTable.from_dict(table.to_dict()) == table


def test_gpt_4k_sectors() -> None:
    f, written = gpt_disk(sector_size=4096)
    assert parse(f, sector_size=4096) == written
    assert written.partitions[0].start == 256  # 1 MiB in 4 KiB sectors


def test_gpt_guids_are_reproducible_from_a_seed() -> None:
    assert gpt_disk()[1] == gpt_disk()[1]


def test_mbr_with_logical_partitions() -> None:
    f = io.BytesIO(bytes(16 * MiB))
    mbr = bytearray(512)
    struct.pack_into("<I", mbr, 440, 0xDEADBEEF)
    MBR_ENTRY.pack_into(mbr, 446, 0x80, b"\0" * 3, 0x83, b"\0" * 3, 2048, 2048)
    MBR_ENTRY.pack_into(mbr, 462, 0x00, b"\0" * 3, 0x05, b"\0" * 3, 8192, 16384)
    mbr[510:512] = MBR_SIGNATURE
    ebr1 = bytearray(512)
    MBR_ENTRY.pack_into(ebr1, 446, 0, b"\0" * 3, 0x83, b"\0" * 3, 2048, 2048)
    MBR_ENTRY.pack_into(ebr1, 462, 0, b"\0" * 3, 0x05, b"\0" * 3, 4096, 4096)
    ebr1[510:512] = MBR_SIGNATURE
    ebr2 = bytearray(512)
    MBR_ENTRY.pack_into(ebr2, 446, 0, b"\0" * 3, 0x82, b"\0" * 3, 2048, 1024)
    ebr2[510:512] = MBR_SIGNATURE
    for lba, data in ((0, mbr), (8192, ebr1), (12288, ebr2)):
        f.seek(lba * 512)
        f.write(data)
    table = parse(f)
    assert table.label == "dos" and table.id == "0xdeadbeef"
    got = [(p.number, p.start, p.size, p.type, p.bootable) for p in table.partitions]
    assert got == [
        (1, 2048, 2048, "83", True),
        (2, 8192, 16384, "05", False),
        (5, 10240, 2048, "83", False),
        (6, 14336, 1024, "82", False),
    ]


def test_mbr_round_trip() -> None:
    f = io.BytesIO(bytes(32 * MiB))
    written = write_mbr(f, 32 * MiB, [NewPartition(4 * MiB, "0c", bootable=True), NewPartition(0, "83")], disk_id=1)
    assert parse(f) == written
    assert written.partitions[1].end == 32 * MiB // 512


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (bytes(1000), "not a multiple of the sector size"),
        (bytes(1 << 16), "no partition table"),
        (b"hello world\n" * 1024, "no partition table"),
    ],
)
def test_not_a_disk(content: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message) as err:
        parse(io.BytesIO(content))
    assert "mem.img" in str(err.value) and err.value.facts["path"] == "mem.img"


def test_superfloppy_boot_sector_is_not_a_partition_table() -> None:
    data = bytearray(1 << 16)
    data[446:462] = b"\x12" * 16  # boot code where a table would be
    data[510:512] = MBR_SIGNATURE
    with pytest.raises(ImageError, match="boot flag 0x12"):
        parse(io.BytesIO(bytes(data)))


def test_empty_mbr() -> None:
    data = bytearray(1 << 16)
    data[510:512] = MBR_SIGNATURE
    with pytest.raises(ImageError, match="empty"):
        parse(io.BytesIO(bytes(data)))


def test_gpt_truncated_backup_header(tmp_path: Path) -> None:
    f, _ = gpt_disk()
    disk = tmp_path / "cut.img"
    disk.write_bytes(f.getvalue()[: 32 * MiB])
    with pytest.raises(ImageError, match=r"backup header expected at LBA 131071.*65536 sectors.*truncated") as err:
        parse(disk)
    assert str(disk) in str(err.value)


def test_gpt_backup_header_missing(tmp_path: Path) -> None:
    f, _ = gpt_disk()
    f.seek(64 * MiB - 512)
    f.write(bytes(512))
    with pytest.raises(ImageError, match="backup header missing at LBA 131071"):
        parse(f)


def test_gpt_header_crc(tmp_path: Path) -> None:
    f, _ = gpt_disk()
    f.seek(512 + 40)
    f.write(b"\x01")
    with pytest.raises(ImageError, match="primary GPT header: CRC mismatch"):
        parse(f)


def test_gpt_entries_crc() -> None:
    f, _ = gpt_disk()
    f.seek(1024 + 56)
    f.write(b"X")
    with pytest.raises(ImageError, match="entries: CRC mismatch"):
        parse(f)


def test_protective_mbr_without_gpt() -> None:
    f, _ = gpt_disk()
    f.seek(512)
    f.write(bytes(512))
    with pytest.raises(ImageError, match="protective MBR"):
        parse(f)


def test_mbr_partition_beyond_the_end() -> None:
    f = io.BytesIO(bytes(32 * MiB))
    write_mbr(f, 32 * MiB, [NewPartition(0, "83")], disk_id=1)
    cut = io.BytesIO(f.getvalue()[: 16 * MiB])
    with pytest.raises(ImageError, match=r"MBR partition 1 ends at sector 65535, beyond the end .* truncated"):
        parse(cut)


def test_bad_sector_size() -> None:
    with pytest.raises(ImageError, match="sector size 1000"):
        parse(io.BytesIO(bytes(4096)), sector_size=1000)
