"""Lab PCs without QEMU: command lines per firmware/NIC/disk, definition checks, serial-log waiting."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.lab import PC, Lab, LabError, LabTimeout, PCSpec, missing_prerequisites, qemu_argv
from provision.lab import qemu as lab_qemu


def argv_for(tmp_path: Path, **changes: object) -> list[str]:
    spec = PCSpec(**{"name": "pc1", "mac": "52:54:00:12:00:01", "tap": "tap0", **changes})  # type: ignore[arg-type]
    spec.check()
    vars_file = tmp_path / "vars.fd" if spec.firmware != "bios" else None
    return qemu_argv(
        spec, disk=tmp_path / "disk.raw", serial=tmp_path / "serial.log", sercon=tmp_path / "sc", vars_file=vars_file
    )


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_bios_pc_command_line(tmp_path):
    argv = argv_for(tmp_path)
    assert argv[0] == "qemu-system-x86_64"
    for flag in ("-nodefaults", "-no-reboot"):
        assert flag in argv
    assert option(argv, "-accel") == ["tcg"]
    assert option(argv, "-display") == ["none"]
    assert option(argv, "-machine") == ["pc"]
    assert option(argv, "-m") == ["512"]
    assert option(argv, "-serial") == [f"file:{tmp_path / 'serial.log'}"]
    assert option(argv, "-fw_cfg") == [f"name=etc/sercon-port,file={tmp_path / 'sc'}"]
    assert option(argv, "-netdev") == ["tap,id=net0,ifname=tap0,script=no,downscript=no"]
    devices = option(argv, "-device")
    assert devices[0] == "virtio-net-pci,netdev=net0,mac=52:54:00:12:00:01,bootindex=0"
    assert devices[1] == "virtio-blk-pci,drive=disk0,bootindex=1"
    assert "if=pflash" not in " ".join(argv)


def test_uefi_and_secure_boot_firmware(tmp_path):
    plain = argv_for(tmp_path, firmware="uefi")
    drives = option(plain, "-drive")
    assert drives[0] == "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert drives[1] == f"if=pflash,format=raw,unit=1,file={tmp_path / 'vars.fd'}"
    assert option(plain, "-machine") == ["q35"]
    assert "-fw_cfg" not in plain
    secure = argv_for(tmp_path, firmware="uefi-secureboot", rom=False)
    assert option(secure, "-machine") == ["q35,smm=on"]
    assert "driver=cfi.pflash01,property=secure,value=on" in option(secure, "-global")
    assert option(secure, "-drive")[0].endswith("file=/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
    assert option(secure, "-device")[0].endswith(",bootindex=0,romfile=")


@pytest.mark.parametrize(
    ("nic", "disk", "nic_device", "disk_devices"),
    [
        ("e1000", "ahci", "e1000,", ["ahci,id=ahci0", "ide-hd,drive=disk0,bus=ahci0.0,bootindex=1"]),
        ("e1000e", "nvme", "e1000e,", ["nvme,drive=disk0,serial=pc1,bootindex=1"]),
    ],
)
def test_nic_and_disk_models(tmp_path, nic, disk, nic_device, disk_devices):
    devices = option(argv_for(tmp_path, nic=nic, disk=disk), "-device")
    assert devices[0].startswith(nic_device)
    assert devices[1:] == disk_devices


def test_uefi_needs_a_vars_file(tmp_path):
    spec = PCSpec(name="pc1", mac="52:54:00:12:00:01", tap="tap0", firmware="uefi")
    with pytest.raises(LabError, match="variables file"):
        qemu_argv(spec, disk=tmp_path / "d", serial=tmp_path / "s", sercon=tmp_path / "c", vars_file=None)


def test_paths_with_commas_are_refused(tmp_path):
    spec = PCSpec(name="pc1", mac="52:54:00:12:00:01", tap="tap0")
    with pytest.raises(LabError, match="must not contain ','"):
        qemu_argv(spec, disk=tmp_path / "a,b", serial=tmp_path / "s", sercon=tmp_path / "c", vars_file=None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "bad name"}, "bad name"),
        ({"mac": "52:54:00:12:00"}, "bad mac"),
        ({"mac": "01:00:5e:00:00:01"}, "multicast"),
        ({"firmware": "coreboot"}, "bad firmware 'coreboot'"),
        ({"nic": "rtl8139"}, "bad nic"),
        ({"disk": "ide"}, "bad disk"),
        ({"disk_size": 1000}, "bad disk_size"),
        ({"memory": 32}, "bad memory"),
    ],
)
def test_pc_spec_check(changes, message):
    spec = PCSpec(**{"name": "pc1", "mac": "52:54:00:12:00:01", "tap": "tap0", **changes})
    with pytest.raises(LabError, match=message):
        spec.check()


@pytest.mark.parametrize("network", ["10.0.0.0/24", "198.20.0.0/24", "198.18.0.0/31", "192.168.1.0/24"])
def test_lab_network_must_be_inside_198_18_slash_15(network):
    with pytest.raises(LabError, match=r"inside 198\.18\.0\.0/15"):
        Lab(network)


def test_lab_addresses():
    lab = Lab("198.19.7.0/24")
    assert str(lab.address) == "198.19.7.1"
    assert lab.cidr == "198.19.7.1/24"
    assert str(lab.host(100)) == "198.19.7.100"
    with pytest.raises(LabError, match="outside"):
        lab.host(255)
    with pytest.raises(LabError, match="not running"):
        lab.run(["true"])
    lab.close()  # never started: nothing to undo


def test_missing_prerequisites_reports_each_thing(monkeypatch, tmp_path):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(lab_qemu, "OVMF_DIR", tmp_path)
    missing = missing_prerequisites(["bios", "uefi-secureboot"])
    text = "\n".join(missing)
    assert "root" in text
    assert "ip (Debian package iproute2)" in text
    assert "qemu-system-x86_64 (Debian package qemu-system-x86)" in text
    assert text.count("qemu-system-x86_64") == 1
    assert "OVMF_CODE_4M.ms.fd (Debian package ovmf)" in text


# --- waiting on the serial log ----------------------------------------------------------------------


def fake_pc(tmp_path: Path, script: str) -> PC:
    """A 'PC' whose QEMU is a small Python process writing the given lines to serial.log."""
    workdir = tmp_path / "pc"
    workdir.mkdir()
    code = (
        "import sys, time\n"
        "with open(sys.argv[1], 'a') as log:\n"
        "    for line in sys.argv[2].split('|'):\n"
        "        if line.startswith('sleep '):\n"
        "            time.sleep(float(line[6:]))\n"
        "        else:\n"
        "            log.write(line + '\\r\\n'); log.flush()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(workdir / "serial.log"), script])
    spec = PCSpec(name="fake", mac="52:54:00:12:00:01", tap="tap0")
    return PC(spec, workdir, proc, time.monotonic())


def test_wait_for_finds_a_pattern(tmp_path):
    pc = fake_pc(tmp_path, "\x1b[2Jbooting|sleep 0.3|PROVISION-CALLBACK-OK|sleep 5")
    try:
        found = pc.wait_for(r"PROVISION-CALLBACK-(OK|FAILED)", 10, poll=0.05)
        assert found.group(1) == "OK"
        assert pc.tail() == "booting\nPROVISION-CALLBACK-OK"
        assert pc.process.poll() is None
    finally:
        pc.stop()
    assert pc.process.poll() is not None
    assert pc.stopped is not None
    pc.stop()  # twice is fine


def test_wait_for_timeout_carries_the_log_tail(tmp_path):
    pc = fake_pc(tmp_path, "iPXE starting|sleep 5")
    try:
        with pytest.raises(LabTimeout, match="no 'Linux version' on serial within 0 s") as caught:
            pc.wait_for("Linux version", 0.3, poll=0.05)
        assert "iPXE starting" in str(caught.value)
        assert caught.value.retryable
    finally:
        pc.stop()


def test_wait_for_stops_when_qemu_exits(tmp_path):
    pc = fake_pc(tmp_path, "No bootable device.")
    with pytest.raises(LabError, match=r"stopped \(exit 0\)"):
        pc.wait_for("Linux version", 10, poll=0.05)
    assert pc.wait_exit(5) == 0
    assert pc.elapsed < 10


def test_wait_for_fail_pattern(tmp_path):
    pc = fake_pc(tmp_path, "Could not boot image|sleep 5")
    try:
        with pytest.raises(LabError, match="printed 'Could not boot'") as caught:
            pc.wait_for("Linux version", 10, fail="Could not boot|Kernel panic", poll=0.05)
        assert caught.value.facts["failure"] == "Could not boot"
    finally:
        pc.stop()


def test_wait_exit_timeout(tmp_path):
    pc = fake_pc(tmp_path, "sleep 5")
    try:
        with pytest.raises(LabTimeout, match="still running"):
            pc.wait_exit(0.2)
    finally:
        pc.stop()


def test_rom_file_and_no_rom(tmp_path):
    rom = tmp_path / "pxe-virtio.rom"
    rom.write_bytes(b"\x55\xaa")
    nic = option(argv_for(tmp_path, rom=rom), "-device")[0]
    assert nic.endswith(f",romfile={rom},disable-legacy=on")  # Debian 13's ROMs match the modern id only
    e1000 = option(argv_for(tmp_path, nic="e1000", rom=rom), "-device")[0]
    assert e1000.endswith(f",romfile={rom}")
    assert option(argv_for(tmp_path, rom=False), "-device")[0].endswith(",romfile=")
    with pytest.raises(LabError, match="no such file"):
        PCSpec(name="pc1", mac="52:54:00:12:00:01", tap="tap0", rom=tmp_path / "absent.rom").check()
