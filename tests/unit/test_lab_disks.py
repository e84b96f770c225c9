"""A lab PC with several disks (provision/lab/disks.py): QEMU's drives and devices, serials, checks, files."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.lab import PC, LabDisk, LabError, PCSpec, qemu_argv
from provision.lab.disks import create_disk_files, disk_paths, disks_problems

MiB = 1 << 20


def spec_with(*disks: LabDisk, **changes: object) -> PCSpec:
    return PCSpec(name="erase1", mac="52:54:00:12:00:01", tap="tap0", disks=disks, **changes)  # type: ignore[arg-type]


def argv_of(tmp_path: Path, spec: PCSpec) -> list[str]:
    spec.check()
    return qemu_argv(
        spec, disk=tmp_path / "disk.raw", serial=tmp_path / "s.log", sercon=tmp_path / "sc", vars_file=None
    )


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_nvme_and_sata_disks_with_their_serials_in_boot_order(tmp_path):
    argv = argv_of(
        tmp_path,
        spec_with(LabDisk("nvme", 256 * MiB, "PROV-NVME-0001"), LabDisk("sata", 512 * MiB, "PROV-SATA-0001")),
    )
    assert option(argv, "-drive") == [
        f"if=none,id=disk0,format=raw,cache=unsafe,file={tmp_path / 'disk.raw'}",
        f"if=none,id=disk1,format=raw,cache=unsafe,file={tmp_path / 'disk1.raw'}",
    ]
    assert option(argv, "-device")[1:] == [
        "nvme,drive=disk0,serial=PROV-NVME-0001,bootindex=1",
        "ahci,id=sata0",
        "ide-hd,drive=disk1,bus=sata0.0,serial=PROV-SATA-0001,bootindex=2",
    ]
    assert option(argv, "-device")[0].endswith("bootindex=0")  # the network first, as for one disk


def test_default_serials_and_one_ahci_for_every_sata_disk(tmp_path):
    argv = argv_of(
        tmp_path, spec_with(LabDisk("sata"), LabDisk("nvme"), LabDisk("sata"), LabDisk("virtio", serial="V1"))
    )
    assert option(argv, "-device")[1:] == [
        "ahci,id=sata0",
        "ide-hd,drive=disk0,bus=sata0.0,bootindex=1",  # QEMU's own serial (QM0000N)
        "nvme,drive=disk1,serial=erase1-1,bootindex=2",  # NVMe needs one: the PC's name and the index
        "ide-hd,drive=disk2,bus=sata0.1,bootindex=3",
        "virtio-blk-pci,drive=disk3,serial=V1,bootindex=4",
    ]


def test_without_disks_the_single_disk_is_unchanged(tmp_path):
    argv = argv_of(tmp_path, spec_with(disk="nvme"))
    assert option(argv, "-drive") == [f"if=none,id=disk0,format=raw,cache=unsafe,file={tmp_path / 'disk.raw'}"]
    assert option(argv, "-device")[1:] == ["nvme,drive=disk0,serial=erase1,bootindex=1"]


@pytest.mark.parametrize(
    ("disk", "says"),
    [
        (LabDisk("scsi", MiB), "kind 'scsi'"),  # type: ignore[arg-type]
        (LabDisk("nvme", 1000), "size 1000"),
        (LabDisk("nvme", MiB, "A" * 21), "serial"),
        (LabDisk("sata", MiB, "PROV,SATA"), "serial 'PROV,SATA'"),
        (LabDisk("sata", MiB, source=Path("/nonexistent/pattern.raw")), "no such file"),
    ],
)
def test_bad_disks_are_refused_naming_the_disk(disk, says):
    with pytest.raises(LabError, match="disk 1") as raised:
        spec_with(LabDisk("nvme", MiB), disk).check()
    assert says in str(raised.value)


def test_at_most_six_sata_disks():
    assert disks_problems([LabDisk("sata", MiB)] * 6) == []
    assert disks_problems([LabDisk("sata", MiB)] * 7) == ["7 SATA disks (at most 6: one AHCI controller)"]


def test_a_source_larger_than_the_disk_is_refused(tmp_path):
    source = tmp_path / "big.raw"
    source.write_bytes(b"x" * (2 * MiB))
    assert "larger than the disk" in LabDisk("nvme", MiB, source=source).problems(0)[0]


def test_disk_files_copy_the_source_then_extend_sparse(tmp_path):
    source = tmp_path / "pattern.raw"
    source.write_bytes(b"P" * 4096)
    first = tmp_path / "pc" / "disk.raw"
    first.parent.mkdir()
    paths = create_disk_files([LabDisk("nvme", 2 * MiB, source=source), LabDisk("sata", MiB)], first)
    assert paths == [first, tmp_path / "pc" / "disk1.raw"] == disk_paths(first, 2)
    assert first.stat().st_size == 2 * MiB and first.read_bytes()[:4097] == b"P" * 4096 + b"\0"
    assert paths[1].stat().st_size == MiB and paths[1].stat().st_blocks == 0  # sparse, blank


def test_pc_names_every_disk_file(tmp_path):
    two = PC(spec_with(LabDisk("nvme"), LabDisk("sata")), tmp_path, None, 0.0)  # type: ignore[arg-type]  # no QEMU
    assert two.disk_paths == [tmp_path / "disk.raw", tmp_path / "disk1.raw"]
    one = PC(spec_with(), tmp_path, None, 0.0)  # type: ignore[arg-type]
    assert one.disk_paths == [one.disk_path] == [tmp_path / "disk.raw"]
