"""The lab proven against reference servers (dnsmasq DHCP+TFTP, a tiny Python HTTP server), not ours.

- SeaBIOS PC: QEMU's iPXE ROM -> DHCP (user class iPXE) -> HTTP boot.ipxe -> kernel + initrd over HTTP.
- OVMF Secure Boot PC without option ROM: firmware PXE (arch 7) -> TFTP shimx64.efi -> signed GRUB
  -> grub/grub.cfg -> Debian's signed kernel; the live env reports secure_boot true.
- The same firmware handed the unsigned ipxe.efi refuses it.

Needs root, qemu-system-x86, ovmf, dnsmasq-base, and the boot files (fetched with apt into the cache
named by $PROVISION_DEB_CACHE, default /var/cache/provision/debs).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.bootfiles import BootRoot, install_boot_root, qemu_roms
from provision.lab import PC, Lab, LabTimeout, build_test_initrd, missing_prerequisites, modules_for
from tests.support.e2e import Timing
from tests.support.paths import DEB_CACHE

pytestmark = pytest.mark.e2e

PORT = 8080
MAC_BIOS = "52:54:00:18:00:01"
MAC_BIOS_TRIXIE = "52:54:00:18:00:04"
MAC_SB = "52:54:00:18:00:02"
MAC_UNSIGNED = "52:54:00:18:00:03"
TOKEN_IPXE = "ipxe-" + secrets.token_hex(8)
TOKEN_GRUB = "grub-" + secrets.token_hex(8)
BOOT_TIMEOUT = 240.0  # generous: TCG on a busy CI machine; measured 20-40 s per PC
FAIL = r"No bootable device|Could not boot|Kernel panic|PROVISION-CALLBACK-FAILED|Access Denied"
REFSERVER = Path(__file__).with_name("refserver.py")


@dataclass
class RefLab:
    lab: Lab
    root: Path
    record: Path
    dnsmasq_log: Path
    kernel_release: str

    @property
    def server(self) -> str:
        return f"http://{self.lab.address}:{PORT}"

    def hellos(self, mac: str) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        entries = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        return [e["body"] for e in entries if isinstance(e["body"], dict) and e["body"].get("mac") == mac]


def _skip_unless_ready() -> None:
    missing = missing_prerequisites(["bios", "uefi-secureboot"])
    if shutil.which("dnsmasq") is None:
        missing.append("dnsmasq (Debian package dnsmasq-base)")
    if missing:
        pytest.skip("lab unavailable: " + "; ".join(missing))


@pytest.fixture(scope="module")
def boot_root(tmp_path_factory: pytest.TempPathFactory) -> BootRoot:
    _skip_unless_ready()
    root = tmp_path_factory.mktemp("bootroot")
    installed = install_boot_root(root, cache_dir=DEB_CACHE)
    build_test_initrd(
        root / "live" / "initrd.img", installed.kernel_modules, installed.busybox, modules_for("virtio", "virtio")
    )
    return installed


def _write_boot_configs(root: Path, server: str) -> None:
    (root / "boot.ipxe").write_text(
        "#!ipxe\n"
        "echo lab: boot.ipxe for ${net0/mac}\n"
        f"kernel {server}/live/vmlinuz console=ttyS0 panic=5 provision.server={server} "
        f"provision.token={TOKEN_IPXE} provision.mac=${{net0/mac}}\n"
        f"initrd {server}/live/initrd.img\n"
        "boot\n"
    )
    (root / "grub").mkdir(exist_ok=True)
    (root / "grub" / "grub.cfg").write_text(
        "set timeout=0\n"
        'echo "lab: grub.cfg shim_lock=$shim_lock mac=$net_default_mac"\n'
        f"linux (tftp)/live/vmlinuz console=ttyS0 panic=5 provision.server={server} "
        f"provision.token={TOKEN_GRUB} provision.mac=$net_default_mac\n"
        "initrd (tftp)/live/initrd.img\n"
        "boot\n"
    )


@pytest.fixture(scope="module")
def ref_lab(boot_root: BootRoot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RefLab]:
    root = boot_root.dest
    workdir = tmp_path_factory.mktemp("lab")
    with Lab(workdir=workdir) as lab:
        server = f"http://{lab.address}:{PORT}"
        _write_boot_configs(root, server)
        record = workdir / "hello.jsonl"
        dnsmasq_log = workdir / "dnsmasq-events.log"
        lab.popen(
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--pid-file=",
                "--bind-interfaces",
                f"--interface={lab.bridge}",
                "--no-ping",
                f"--dhcp-range={lab.host(100)},{lab.host(200)},10m",
                f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}",
                f"--log-facility={dnsmasq_log}",
                "--log-dhcp",
                "--enable-tftp",
                f"--tftp-root={root}",
                "--dhcp-userclass=set:ipxe,iPXE",
                "--dhcp-match=set:efi64,option:client-arch,7",
                f"--dhcp-host={MAC_UNSIGNED},set:unsigned",
                f"--dhcp-boot=tag:ipxe,{server}/boot.ipxe",
                "--dhcp-boot=tag:!ipxe,tag:efi64,tag:!unsigned,shimx64.efi",
                "--dhcp-boot=tag:!ipxe,tag:efi64,tag:unsigned,ipxe.efi",
                "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
            ],
            log_name="dnsmasq",
        )
        refserver = [sys.executable, str(REFSERVER), "--root", str(root), "--bind", str(lab.address)]
        lab.popen([*refserver, "--port", str(PORT), "--record", str(record)], log_name="refserver")
        lab.wait_tcp(PORT)
        yield RefLab(lab, root, record, dnsmasq_log, boot_root.kernel_release)


def _milestones(pc: PC, timing: Timing, prefix: str, steps: list[tuple[str, str]], timeout: float) -> None:
    for label, pattern in steps:
        pc.wait_for(pattern, timeout, fail=FAIL)
        timing(f"{prefix} {label}", pc.elapsed)


@pytest.mark.parametrize("rom", ["qemu", "trixie"], ids=["debian12-rom", "trixie-rom"])
def test_seabios_ipxe_rom_http_boot(ref_lab: RefLab, timing: Timing, rom: str) -> None:
    """QEMU's own ROM is Debian 12's iPXE (2019, ~13 s wait after DHCP); Debian 13's ipxe-qemu has none."""
    if rom == "qemu":
        pc = ref_lab.lab.add_pc("bios1", firmware="bios", mac=MAC_BIOS)
    else:
        rom_file = qemu_roms(cache_dir=DEB_CACHE) / "pxe-virtio.rom"
        pc = ref_lab.lab.add_pc("bios2", firmware="bios", mac=MAC_BIOS_TRIXIE, rom=rom_file)
    steps = [
        ("iPXE ROM starts", r"iPXE initialising devices"),
        ("boot.ipxe fetched", r"lab: boot\.ipxe for"),
        ("kernel starts", r"Linux version"),
        ("/init starts", r"provision-test-init: started"),
        ("callback", r"PROVISION-CALLBACK-(OK|FAILED)"),
    ]
    _milestones(pc, timing, f"bios {rom} ROM", steps, BOOT_TIMEOUT)
    assert "PROVISION-CALLBACK-OK" in pc.serial_text(), pc.tail()
    assert pc.wait_exit(30) == 0  # poweroff -f with -no-reboot ends QEMU
    timing(f"bios {rom} ROM powered off", pc.elapsed)
    (hello,) = ref_lab.hellos(pc.mac)
    assert hello["token"] == TOKEN_IPXE
    boot = hello["boot"]
    assert isinstance(boot, dict)
    assert (boot["firmware"], boot["secure_boot"]) == ("bios", False)
    assert boot["kernel"] == ref_lab.kernel_release


def test_ovmf_secure_boot_shim_grub_tftp(ref_lab: RefLab, timing: Timing) -> None:
    pc = ref_lab.lab.add_pc("sb1", firmware="uefi-secureboot", mac=MAC_SB, rom=False)
    steps = [
        ("grub.cfg read", r"lab: grub\.cfg shim_lock=y"),
        ("kernel starts", r"Linux version"),
        ("/init starts", r"provision-test-init: started"),
        ("callback", r"PROVISION-CALLBACK-(OK|FAILED)"),
    ]
    _milestones(pc, timing, "uefi-secureboot", steps, BOOT_TIMEOUT)
    text = pc.serial_text()
    assert "PROVISION-CALLBACK-OK" in text, pc.tail()
    assert "Secure boot enabled" in text
    assert pc.wait_exit(30) == 0
    timing("uefi-secureboot powered off", pc.elapsed)
    (hello,) = ref_lab.hellos(MAC_SB)
    assert hello["token"] == TOKEN_GRUB
    boot = hello["boot"]
    assert isinstance(boot, dict)
    assert (boot["firmware"], boot["secure_boot"], boot["kernel"]) == ("uefi", True, ref_lab.kernel_release)
    events = ref_lab.dnsmasq_log.read_text()
    for name in ("shimx64.efi", "grubx64.efi", "grub/grub.cfg", "live/vmlinuz", "live/initrd.img"):
        assert re.search(rf"sent \S+/{re.escape(name)} to ", events), name


def test_secure_boot_refuses_unsigned_ipxe(ref_lab: RefLab, timing: Timing) -> None:
    pc = ref_lab.lab.add_pc("unsigned1", firmware="uefi-secureboot", mac=MAC_UNSIGNED, rom=False)
    try:
        verdict = pc.wait_for(r"Access Denied|Security Violation|iPXE initialising|iPXE \d", BOOT_TIMEOUT)
    except LabTimeout:
        pytest.fail(f"no firmware verdict on the unsigned ipxe.efi within {BOOT_TIMEOUT:.0f} s:\n{pc.tail()}")
    timing("uefi-secureboot refusal", pc.elapsed)
    assert verdict.group(0) in ("Access Denied", "Security Violation"), pc.tail()
    text = pc.serial_text()
    assert "NBP filename is ipxe.efi" in text and "NBP file downloaded successfully" in text, pc.tail()
    assert re.search(r"failed to load Boot\d+ .*: (Access Denied|Security Violation)", text), pc.tail()
    assert re.search(r"sent \S+/ipxe\.efi to ", ref_lab.dnsmasq_log.read_text())  # delivered, then refused
    assert ref_lab.hellos(MAC_UNSIGNED) == []
    pc.stop()
