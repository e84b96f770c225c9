"""The partitions a capture reads (provision.agent.capture.partitions): GPT (primary, else backup, with 512 and
4096-byte sectors), MBR with logical partitions, no table at all, and each problem a PartitionTableError with
its facts."""

from __future__ import annotations

import logging

import pytest

from provision.agent.capture import Partition, PartitionTableError, partitions
from provision.agent.errors import AgentError
from tests.support.fsimages import Disk, mbr_entry, write_gpt, write_mbr

MiB = 1 << 20


@pytest.mark.parametrize("ss", [512, 4096])
def test_gpt(ss: int) -> None:
    disk = Disk(8 * MiB)
    write_gpt(disk, [(MiB // ss, 3 * MiB // ss - 1), (3 * MiB // ss, 7 * MiB // ss - 1)], ss)
    assert partitions(disk.read, len(disk.data), ss) == (Partition(1, MiB, 2 * MiB), Partition(2, 3 * MiB, 4 * MiB))


def test_gpt_damaged_primary_falls_back_to_the_backup(caplog: pytest.LogCaptureFixture) -> None:
    disk = Disk(8 * MiB)
    write_gpt(disk, [(2048, 4095)])
    disk.data[512 + 40] ^= 1  # the primary header's first usable LBA: its CRC no longer matches
    caplog.set_level(logging.WARNING)
    assert partitions(disk.read, len(disk.data), 512) == (Partition(1, MiB, MiB),)
    assert "primary GPT not usable (header CRC" in caplog.text


def test_gpt_both_headers_damaged() -> None:
    disk = Disk(8 * MiB)
    write_gpt(disk, [(2048, 4095)])
    disk.data[2 * 512] ^= 1  # the entry array (both headers share its CRC)
    disk.data[len(disk.data) - 33 * 512] ^= 1
    with pytest.raises(PartitionTableError) as info:
        partitions(disk.read, len(disk.data), 512)
    assert isinstance(info.value, AgentError)
    assert "primary GPT: entry array at LBA 2: CRC" in str(info.value)
    primary = info.value.facts["primary"]
    assert isinstance(primary, dict) and primary["lba"] == 2 and info.value.facts["sector_size"] == 512


def test_gpt_partition_outside_the_usable_lbas() -> None:
    disk = Disk(8 * MiB)
    write_gpt(disk, [(2048, 20000)])
    with pytest.raises(PartitionTableError, match="partition 1 at LBA 2048-20000 is outside the usable LBAs"):
        partitions(disk.read, len(disk.data), 512)


def test_gpt_truncated_disk() -> None:
    disk = Disk(8 * MiB)
    write_gpt(disk, [(2048, 4095)])
    with pytest.raises(PartitionTableError, match=r"truncated\?"):
        partitions(disk.read, 4 * MiB, 512)


def test_mbr_primaries_and_logicals() -> None:
    disk = Disk(16 * MiB)
    write_mbr(disk, [(0x83, 2048, 2048), (0x07, 4096, 4096)], logicals=[(10241, 2047), (14337, 4095)],
              extended=(10240, 22528))  # fmt: skip
    assert partitions(disk.read, len(disk.data), 512) == (
        Partition(1, MiB, MiB), Partition(2, 2 * MiB, 2 * MiB),
        Partition(5, 10241 * 512, 2047 * 512), Partition(6, 14337 * 512, 4095 * 512),
    )  # fmt: skip


def test_mbr_partition_past_the_disk() -> None:
    disk = Disk(4 * MiB)
    write_mbr(disk, [(0x83, 2048, 8192)])
    with pytest.raises(PartitionTableError) as info:
        partitions(disk.read, len(disk.data), 512)
    assert info.value.facts["partition"] == 1 and info.value.facts["disk_sectors"] == 8192


def test_mbr_ebr_loop_and_signature() -> None:
    disk = Disk(16 * MiB)
    write_mbr(disk, [(0x83, 2048, 2048)], logicals=[(10241, 2047), (14337, 4095)], extended=(10240, 22528))
    ebr = bytearray(disk.data[14336 * 512 : 14337 * 512])
    mbr_entry(ebr, 1, 0x05, 4096, 100)  # the next EBR is this one (14336 = 10240 + 4096)
    disk.data[14336 * 512 : 14337 * 512] = ebr
    with pytest.raises(PartitionTableError, match="loops"):
        partitions(disk.read, len(disk.data), 512)
    disk.data[10240 * 512 + 510] = 0
    with pytest.raises(PartitionTableError, match="EBR at LBA 10240 without the 0x55AA signature"):
        partitions(disk.read, len(disk.data), 512)


def test_no_partition_table() -> None:
    assert partitions(Disk(MiB).read, MiB, 512) == ()


def test_bad_geometry() -> None:
    with pytest.raises(PartitionTableError, match="1000-byte sectors"):
        partitions(Disk(MiB).read, MiB, 1000)


@pytest.mark.parametrize("table", ["gpt", "mbr"])
def test_overlapping_partitions_are_refused(table: str) -> None:
    disk = Disk(16 * MiB)
    if table == "gpt":
        write_gpt(disk, [(2048, 10000), (8192, 12000)])
    else:
        write_mbr(disk, [(0x83, 2048, 8000), (0x07, 8192, 4000)])
    with pytest.raises(PartitionTableError, match=r"partitions 1 \(LBA 2048\+\d+\) and 2 \(LBA 8192\+\d+\) overlap"):
        partitions(disk.read, len(disk.data), 512)
