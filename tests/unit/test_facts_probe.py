"""load_probe over probe folders built in tmp_path (from our captures in tests/samples/ and the shared real
probes), and the Facts <-> dict/JSON round trip."""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from provision.errors import ProbeError
from provision.facts import (
    CpuInfo,
    Disk,
    DmiFacts,
    Facts,
    Firmware,
    MemInfo,
    SmartVerdict,
    facts_from_dict,
    load_facts_json,
    load_probe,
    parse_cpuinfo,
    parse_lsblk,
    parse_lspci,
)
from provision.facts.probe import MAX_FILE_BYTES
from tests.support.paths import HARDWARE, SAMPLES

OPTIPLEX_7010 = HARDWARE / "dell-optiplex-7010-0e1bf9ac9d32"
HOSTILE = "$(rm -rf /); `x`"

MINI_DMI = """\
# dmidecode 3.4
SMBIOS 3.2.0 present.

Handle 0x0100, DMI type 1, 27 bytes
System Information
\tManufacturer: QEMU
\tProduct Name: Standard PC (Q35 + ICH9, 2009)
"""


def _shared() -> Path:
    if not OPTIPLEX_7010.is_dir():
        pytest.skip(f"shared hardware fixtures not found at {HARDWARE}")
    return OPTIPLEX_7010


@pytest.fixture
def full_probe(tmp_path: Path) -> Path:
    """A probe folder of every kind of file: real shared probes (linked, not copied) and our samples."""
    machine = _shared()
    (tmp_path / "dmidecode.txt").symlink_to(machine / "dmidecode.txt")
    (tmp_path / "lspci.txt").symlink_to(machine / "lspci.txt")
    (tmp_path / "lsblk.json").symlink_to(SAMPLES / "lsblk-pc.json")
    (tmp_path / "meminfo").symlink_to(SAMPLES / "meminfo-vm.txt")
    (tmp_path / "cpuinfo.txt").symlink_to(SAMPLES / "cpuinfo-vm.txt")
    (tmp_path / "firmware").write_text("UEFI\n")
    (tmp_path / "mac").write_text("  52:54:00:12:34:56\n")
    smart = HARDWARE / "smart"
    (tmp_path / "smartctl-sda.json").symlink_to(smart / "hitachi-hds721050dle630-failing" / "smartctl.json")
    (tmp_path / "smartctl-sdb.txt").symlink_to(smart / "hgst-hts725050a7e630-e861b5e1a8fe" / "smartctl.txt")
    (tmp_path / "smartctl-nvme0.json").symlink_to(smart / "samsung-ssd-970-evo-500gb-media-errors" / "smartctl.json")
    (tmp_path / "SOURCE.txt").write_text("not a probe file\n")
    return tmp_path


def test_load_probe_reads_every_file(full_probe: Path) -> None:
    facts = load_probe(full_probe)
    assert facts.warnings == ()
    assert facts.sources == (
        "dmidecode.txt",
        "lspci.txt",
        "lsblk.json",
        "meminfo",
        "cpuinfo.txt",
        "firmware",
        "mac",
        "smartctl-nvme0.json",
        "smartctl-sda.json",
        "smartctl-sdb.txt",
    )
    assert (facts.mac, facts.firmware) == ("52:54:00:12:34:56", Firmware.UEFI)
    assert (facts.dmi.system.product, facts.dmi.ram_installed_mb) == ("OptiPlex 7010", 16384)
    assert len(facts.pci) == 15
    assert [d.name for d in facts.disks] == ["sda", "sdb", "nvme0n1"]
    assert facts.meminfo.total_kb == 24684096
    assert facts.cpu.threads is not None and facts.cpu.threads >= 1
    # sorted by file name, one report per file
    assert [(s.model, s.verdict) for s in facts.smart] == [
        ("Samsung SSD 970 EVO 500GB", SmartVerdict.PASSED),
        ("Hitachi HDS721050DLE630", SmartVerdict.FAILED),
        ("HGST HTS725050A7E630", SmartVerdict.PASSED),
    ]


def test_round_trip_through_dict_and_json(full_probe: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    facts = load_probe(full_probe)
    assert facts_from_dict(facts.to_dict()) == facts
    assert facts_from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
    out = tmp_path_factory.mktemp("out") / "facts.json"
    out.write_text(json.dumps(facts.to_dict()))
    assert load_facts_json(out) == facts


def test_round_trip_keeps_hostile_strings_and_warnings() -> None:
    facts = Facts(
        mac=HOSTILE,
        dmi=replace(DmiFacts(), chassis_type="x" * 10_240, cpu_cores=4),
        disks=(Disk(name="sda", model=f"{HOSTILE}\nline2", removable=False, mounted=("/", "[SWAP]")),),
        cpu=CpuInfo(flags=("fpu", "sse2")),
        warnings=("lsblk.json: not valid JSON",),
    )
    assert facts_from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


def test_facts_from_dict_tolerates_missing_keys() -> None:
    """Missing keys are unknown. (Values of the wrong type, once read as unknown too, are refused since issue 12
    defect 5: tests/unit/test_facts_shape.py.)"""
    assert facts_from_dict({}) == Facts()
    partial = {
        "dmi": {"system": {"vendor": "Dell Inc."}, "memory": [{"size_mb": 4096}]},
        "pci": [{"slot": "00:19.0", "modules": ["e1000e"]}],
        "disks": [{"name": "sda"}],
        "smart": [{"verdict": "failed"}],
        "meminfo": {},
    }
    facts = facts_from_dict(partial)
    assert (facts.mac, facts.firmware, facts.dmi.system.vendor) == (None, Firmware.UNKNOWN, "Dell Inc.")
    assert [(m.size_mb, m.locator) for m in facts.dmi.memory] == [(4096, None)]
    assert [(p.slot, p.modules) for p in facts.pci] == [("00:19.0", ("e1000e",))]
    assert facts.disks == (Disk(name="sda"),)
    assert [(s.verdict, s.power_on_hours) for s in facts.smart] == [(SmartVerdict.FAILED, None)]
    assert (facts.meminfo, facts.sources) == (MemInfo(), ())


def test_empty_folder_gives_empty_facts(tmp_path: Path) -> None:
    assert load_probe(tmp_path) == Facts()


def test_meminfo_without_suffix_wins_and_firmware_values(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 2048 kB\n")
    (tmp_path / "meminfo.txt").write_text("MemTotal: 1024 kB\n")
    (tmp_path / "firmware").write_text("bios")
    (tmp_path / "dmidecode.txt").write_text(MINI_DMI)
    facts = load_probe(tmp_path)
    assert (facts.meminfo.total_kb, facts.firmware) == (2048, Firmware.BIOS)
    assert facts.dmi.system.vendor == "QEMU" and facts.dmi.smbios_version == "3.2.0"
    assert facts.sources == ("dmidecode.txt", "meminfo", "firmware")
    (tmp_path / "firmware").write_text("maybe efi")
    assert load_probe(tmp_path).firmware is Firmware.UNKNOWN


def test_path_that_is_not_a_directory(tmp_path: Path) -> None:
    a_file = tmp_path / "dmidecode.txt"
    a_file.write_text(MINI_DMI)
    for path in (a_file, tmp_path / "missing"):
        with pytest.raises(ProbeError) as caught:
            load_probe(path)
        assert caught.value.path == str(path)
        assert not caught.value.retryable


def test_oversize_file_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "lspci.txt").open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no real disk use
    with pytest.raises(ProbeError) as caught:
        load_probe(tmp_path)
    assert caught.value.path == str(tmp_path / "lspci.txt")
    (tmp_path / "lspci.txt").unlink()
    with (tmp_path / "lspci.txt").open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES)  # exactly the limit is accepted
    assert load_probe(tmp_path).pci == ()


def test_binary_garbage_is_tolerated_and_recorded(tmp_path: Path) -> None:
    noise = random.Random(1234).randbytes(64 * 1024)
    names = ["dmidecode.txt", "lspci.txt", "lsblk.json", "meminfo.txt", "cpuinfo", "firmware", "mac"]
    names += ["smartctl-sda.json", "smartctl-sdb.txt"]
    for name in names:
        (tmp_path / name).write_bytes(noise)
    facts = load_probe(tmp_path)
    assert set(facts.sources) == set(names)
    assert facts.firmware is Firmware.UNKNOWN
    assert facts.dmi == DmiFacts() and facts.disks == () and facts.meminfo == MemInfo()
    assert [w.split(":")[0] for w in facts.warnings] == ["lsblk.json", "smartctl-sda.json"]
    assert [s.verdict for s in facts.smart] == [SmartVerdict.UNKNOWN]  # the text one; the JSON one is a warning
    assert facts.mac is not None and "\ufffd" in facts.mac  # carried as data, bad bytes replaced


def test_not_a_regular_file_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "dmidecode.txt").mkdir()
    os.mkfifo(tmp_path / "lspci.txt")  # reading a FIFO would block: must be skipped, not opened
    (tmp_path / "lsblk.json").symlink_to(tmp_path / "nowhere")
    facts = load_probe(tmp_path)
    assert facts.sources == ()
    assert [w.split(":")[0] for w in facts.warnings] == ["dmidecode.txt", "lspci.txt", "lsblk.json"]


def test_load_facts_json_errors(tmp_path: Path) -> None:
    bad = tmp_path / "facts.json"
    for content in ("{", "[1, 2]", "\x00"):
        bad.write_text(content)
        with pytest.raises(ProbeError) as caught:
            load_facts_json(bad)
        assert caught.value.path == str(bad)
    with pytest.raises(ProbeError):
        load_facts_json(tmp_path / "missing.json")
    bad.write_text("{}")
    assert load_facts_json(bad) == Facts()


# --- our own captures of this machine (a QEMU/KVM VM) and the hand-written PC lsblk ---------------------


@pytest.fixture
def vm_probe(tmp_path: Path) -> Path:
    """A probe folder of this VM's captures: lsblk -J -b -O, lspci -nn, /proc/meminfo, /proc/cpuinfo."""
    for sample, name in [
        ("lsblk-vm.json", "lsblk.json"),
        ("lspci-nn-vm.txt", "lspci.txt"),
        ("meminfo-vm.txt", "meminfo.txt"),
        ("cpuinfo-vm.txt", "cpuinfo"),
    ]:
        (tmp_path / name).symlink_to(SAMPLES / sample)
    (tmp_path / "firmware").write_text("bios\n")  # /sys/firmware/efi is absent here
    return tmp_path


def test_load_probe_of_this_vm_capture(vm_probe: Path) -> None:
    facts = load_probe(vm_probe)
    assert facts.warnings == ()
    assert facts.dmi == DmiFacts()  # dmidecode finds no SMBIOS table in this VM: not captured
    assert [(d.name, d.transport, d.mounted) for d in facts.disks] == [("vda", "virtio", ("/",))]  # no zram0
    assert facts.meminfo.total_kb == 24684096
    assert ("00:02.0", "1af4:1042") in [(d.slot, d.pci_id) for d in facts.pci]  # virtio block device
    assert facts_from_dict(facts.to_dict()) == facts


def test_lspci_captures_of_this_vm_agree() -> None:
    plain = parse_lspci((SAMPLES / "lspci-nn-vm.txt").read_text())
    verbose = parse_lspci((SAMPLES / "lspci-vvnn-vm.txt").read_text())
    assert [(d.slot, d.pci_id, d.class_code) for d in plain] == [(d.slot, d.pci_id, d.class_code) for d in verbose]
    assert all(d.driver is None for d in plain)
    assert {d.driver for d in verbose if d.vendor_id == "1af4"} == {"virtio-pci"}


def test_cpuinfo_capture_of_this_vm() -> None:
    text = (SAMPLES / "cpuinfo-vm.txt").read_text()
    cpu = parse_cpuinfo(text)
    assert cpu.threads == text.count("processor\t:")
    assert cpu.model is not None and cpu.sockets == 1
    assert cpu.cores is not None and 1 <= cpu.cores <= cpu.threads
    assert "fpu" in cpu.flags


def test_lsblk_handwritten_pc() -> None:
    # tests/samples/lsblk-pc.json is HAND-WRITTEN (not captured): a typical refurbished PC booted from a
    # USB stick, with a SATA HDD, the stick, an optical drive (type rom), the live squashfs (loop) and an
    # NVMe SSD.
    sda, sdb, nvme = parse_lsblk((SAMPLES / "lsblk-pc.json").read_text())
    assert sda == Disk(
        "sda", 500107862016, True, "sata", False, "WDC WD5000AAKX-08U6AA0", "WD-WCC2EA1B2C3D", 512, 4096, ()
    )
    assert (sdb.name, sdb.transport, sdb.removable, sdb.model) == ("sdb", "usb", True, "Cruzer Blade")
    assert sdb.mounted == ("/run/live/medium",)  # from its partition
    assert (nvme.name, nvme.transport, nvme.rotational, nvme.size_bytes) == (
        "nvme0n1",
        "nvme",
        False,
        256060514304,
    )
    assert [d.internal for d in (sda, sdb, nvme)] == [True, False, True]
