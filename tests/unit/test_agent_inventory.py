"""Probe collection with a fake runner (no real subprocess) into tmp folders that load_probe reads, and
the kernel arguments."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provision.agent.inventory import collect_probe, read_kernel_args
from provision.facts import Firmware, load_probe
from tests.support.paths import SAMPLES

LSBLK = (SAMPLES / "lsblk-pc.json").read_bytes()
LSPCI = (SAMPLES / "lspci-vvnn-vm.txt").read_bytes()
DMI = b"""# dmidecode 3.4
SMBIOS 3.0.0 present.

Handle 0x0001, DMI type 1, 27 bytes
System Information
\tManufacturer: Dell Inc.
\tProduct Name: OptiPlex 7050
\tSerial Number: ABC1234
"""


def _smart(name: str) -> bytes:
    return json.dumps(
        {
            "device": {"name": f"/dev/{name}", "protocol": "ATA"},
            "model_name": f"model of {name}",
            "serial_number": "S1",
            "smart_status": {"passed": True},
        }
    ).encode()


Outputs = dict[str, "bytes | BaseException | tuple[int, bytes, bytes]"]


class FakeRun:
    """Answers by the joined argument list; records every call and its keyword arguments."""

    def __init__(self, outputs: Outputs) -> None:
        self.outputs = outputs
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        assert isinstance(args, list) and all(isinstance(a, str) for a in args)
        self.calls.append((args, kwargs))
        answer = self.outputs.get(" ".join(args), FileNotFoundError(args[0]))
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, tuple):
            return subprocess.CompletedProcess(args, answer[0], answer[1], answer[2])
        return subprocess.CompletedProcess(args, 0, answer, b"")


def _outputs() -> Outputs:
    return {
        "dmidecode": DMI,
        "lspci -vvnn": LSPCI,
        "lsblk --json -b -O": LSBLK,
        "smartctl --json -a /dev/sda": (4, _smart("sda"), b""),  # bit 2: some command failed, output whole
        "smartctl --json -a /dev/nvme0n1": _smart("nvme0n1"),
    }


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    proc, sys_root = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir()
    (proc / "meminfo").write_bytes((SAMPLES / "meminfo-vm.txt").read_bytes())
    (proc / "cpuinfo").write_bytes((SAMPLES / "cpuinfo-vm.txt").read_bytes())
    (proc / "cmdline").write_text("BOOT_IMAGE=/vmlinuz boot=live provision.mac=52:54:00:12:34:56 quiet\n")
    (sys_root / "firmware" / "efi").mkdir(parents=True)
    return proc, sys_root


def _collect(dest: Path, run: Callable[..., Any], roots: tuple[Path, Path], **kw: Any) -> list[str]:
    return collect_probe(dest, run=run, proc_root=roots[0], sys_root=roots[1], **kw)


def test_full_probe_is_read_by_load_probe(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    run = FakeRun(_outputs())
    dest = tmp_path / "probe"
    assert _collect(dest, run, roots) == []
    assert sorted(p.name for p in dest.iterdir()) == [
        "cpuinfo",
        "dmidecode.txt",
        "firmware",
        "lsblk.json",
        "lspci.txt",
        "mac",
        "meminfo",
        "smartctl-nvme0n1.json",
        "smartctl-sda.json",
    ]
    facts = load_probe(dest)
    assert facts.warnings == ()
    assert facts.mac == "52:54:00:12:34:56"
    assert facts.firmware is Firmware.UEFI
    assert facts.dmi.system.product == "OptiPlex 7050"
    assert [d.name for d in facts.disks] == ["sda", "sdb", "nvme0n1"]
    assert facts.pci and facts.cpu.threads and facts.meminfo.total_kb
    assert sorted(r.model or "" for r in facts.smart) == ["model of nvme0n1", "model of sda"]
    # argument lists, a timeout on each, never a shell; the USB stick gets no smartctl
    assert [" ".join(a) for a, _ in run.calls][3:] == ["smartctl --json -a /dev/sda", "smartctl --json -a /dev/nvme0n1"]
    for _, kwargs in run.calls:
        assert kwargs["timeout"] > 0 and not kwargs.get("shell") and kwargs["check"] is False


def test_missing_and_failing_tools_are_warnings(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    outputs = _outputs()
    del outputs["dmidecode"]
    outputs["lspci -vvnn"] = (1, b"", b"pcilib: Cannot open /proc/bus/pci\nmore")
    outputs["smartctl --json -a /dev/sda"] = subprocess.TimeoutExpired(["smartctl"], 7)
    outputs["smartctl --json -a /dev/nvme0n1"] = (2, b"", b"open failed")
    dest = tmp_path / "probe"
    warnings = _collect(dest, FakeRun(outputs), roots, timeout=7)
    assert warnings == [
        "dmidecode: dmidecode not installed",
        "lspci -vvnn: exit status 1 (pcilib: Cannot open /proc/bus/pci)",
        "smartctl --json -a /dev/sda: timed out after 7 s",
        "smartctl --json -a /dev/nvme0n1: exit status 2 (open failed)",
    ]
    assert not (dest / "dmidecode.txt").exists() and not (dest / "lspci.txt").exists()
    facts = load_probe(dest)
    assert facts.warnings == () and len(facts.disks) == 3 and facts.smart == ()


def test_nothing_installed_nothing_readable(tmp_path: Path) -> None:
    dest = tmp_path / "probe"
    warnings = collect_probe(dest, run=FakeRun({}), proc_root=tmp_path / "none", sys_root=tmp_path / "none")
    assert len(warnings) == 6  # dmidecode, lspci, lsblk, meminfo, cpuinfo, mac
    assert (dest / "firmware").read_text() == "bios\n"
    facts = load_probe(dest)
    assert facts.firmware is Firmware.BIOS and facts.mac is None and facts.disks == ()


def test_os_error_and_bad_lsblk(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    outputs: Outputs = {"dmidecode": PermissionError(13, "Permission denied"), "lsblk --json -b -O": b"not json"}
    warnings = _collect(tmp_path / "p", FakeRun(outputs), roots)
    assert "dmidecode: cannot run (Permission denied)" in warnings
    assert "lsblk.json: no disks found" in warnings


def test_mac_argument_and_interface_fallback(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    _collect(tmp_path / "a", FakeRun({}), roots, mac="aa:bb:cc:dd:ee:ff")
    assert (tmp_path / "a" / "mac").read_text() == "aa:bb:cc:dd:ee:ff\n"
    proc, sys_root = roots
    (proc / "cmdline").write_text("quiet\n")
    for name, address, state in [("eth0", "52:54:00:00:00:01", "down"), ("eth1", "52:54:00:00:00:02", "up")]:
        (sys_root / "class" / "net" / name).mkdir(parents=True)
        (sys_root / "class" / "net" / name / "address").write_text(address + "\n")
        (sys_root / "class" / "net" / name / "operstate").write_text(state + "\n")
    _collect(tmp_path / "b", FakeRun({}), roots)
    assert (tmp_path / "b" / "mac").read_text() == "52:54:00:00:00:02\n"


def test_hostile_disk_names_and_models(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    evil = "../../etc/passwd"
    data = json.loads(LSBLK)
    data["blockdevices"][1]["name"] = evil
    data["blockdevices"][1]["model"] = "\x1b[31m; rm -rf / \u202e"
    run = FakeRun({"lsblk --json -b -O": json.dumps(data).encode()})
    dest = tmp_path / "probe"
    warnings = _collect(dest, run, roots)
    assert "disk '../../etc/passwd': name not usable as a file name, SMART not read" in warnings
    assert all(" ".join(a) != f"smartctl --json -a /dev/{evil}" for a, _ in run.calls)
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith("smartctl")) == []
    disks = load_probe(dest).disks
    assert disks[0].name == evil and disks[0].model == "\x1b[31m; rm -rf / \u202e"


def test_huge_output_dropped(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    huge = b"x" * (16 * 1024 * 1024 + 1)
    warnings = _collect(tmp_path / "p", FakeRun({"dmidecode": huge}), roots)
    assert any(w.startswith("dmidecode: output of") for w in warnings)
    assert not (tmp_path / "p" / "dmidecode.txt").exists()
    load_probe(tmp_path / "p")  # no ProbeError


def test_read_kernel_args() -> None:
    text = (
        "BOOT_IMAGE=/vmlinuz-6.1 boot=live provision.server=http://198.18.0.1:8080 "
        "provision.token=abc.DEF-123 provision.mac=52:54:00:12:34:56 provision.other=x provision.token "
        "quiet provision.mac= xprovision.server=evil\n"
    )
    assert read_kernel_args(text) == {
        "server": "http://198.18.0.1:8080",
        "token": "abc.DEF-123",
        "mac": "52:54:00:12:34:56",
    }
    assert read_kernel_args("") == {}
    assert read_kernel_args("provision.token=a provision.token=b") == {"token": "b"}
