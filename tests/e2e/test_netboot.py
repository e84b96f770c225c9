"""QEMU PCs network-boot from a real `provision serve` process in a lab namespace, through the real chains.

provision runs as its own process (`python -m provision serve --interface br0 --address 198.18.0.1 ...`)
with a boot root made by `install_boot_root` (Debian's iPXE, shim, signed GRUB, signed kernel) and the
test initramfs, whose /init POSTs /api/v1/hello with the token provision put on the kernel command line.

- full DHCP, three PCs booting at once (one class fixture, one test each):
  SeaBIOS + iPXE NIC ROM -> (chain_ipxe_roms) TFTP undionly.kpxe -> iPXE -> HTTP /boot/<mac>.ipxe -> kernel;
  OVMF with Secure Boot on, and off, no NIC ROM: firmware PXE (arch 7) -> TFTP shim -> signed GRUB
  -> grub/grub.cfg -> grub/hosts/<mac>.cfg -> Debian's signed kernel. Each ends in a `hello` event.
- `boot.uefi_loader: ipxe`: the Secure Boot PC refuses the unsigned snponly.efi (a Secure Boot off PC runs it).
- `boot.unknown: ignore`: an unknown PC is not network-booted (full and proxy DHCP).
- proxy DHCP beside the site's DHCP server (dnsmasq, addresses only): SeaBIOS PC through to the callback.

Needs root, qemu-system-x86, ovmf, dnsmasq-base (proxy tests), apt + dpkg and the Debian archive (boot files,
cached in $PROVISION_DEB_CACHE, default /var/cache/provision/debs). Measured times: docs/lab.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provision.bootfiles import BootRoot
from provision.lab import Lab
from tests.support.e2e import (
    HTTP_PORT,
    BootWatch,
    ProvisionServe,
    Timing,
    provision_config,
    require_lab,
    start_site_dhcp,
    stop_server,
)

pytestmark = pytest.mark.e2e

MAC_BIOS = "52:54:00:18:10:01"
MAC_SB = "52:54:00:18:10:02"
MAC_UEFI = "52:54:00:18:10:03"
MAC_SB_IPXE = "52:54:00:18:10:04"
MAC_UEFI_IPXE = "52:54:00:18:10:05"
MAC_IGNORED = "52:54:00:18:10:06"
MAC_PROXY = "52:54:00:18:10:07"
BOOT_TIMEOUT = 300.0  # whole chain, per PC; measured 23-45 s here (TCG, 3 PCs on 2 CPUs)
VERDICT_TIMEOUT = 120.0  # firmware refusal; measured ~10 s
IGNORED_TIMEOUT = 40.0  # an ignored PC gives up network boot; measured ~6 s
FAIL = r"No bootable device|Could not boot|Kernel panic|PROVISION-CALLBACK-FAILED|Access Denied|Nothing to boot"


# ------------------------------------------------------------------------------------------------ helpers
def bios_steps(mac: str) -> list[tuple[str, str]]:
    """SeaBIOS + iPXE ROM -> undionly.kpxe over TFTP -> iPXE -> provision's script over HTTP -> kernel."""
    return [
        ("ROM gets undionly.kpxe", r"Filename: undionly\.kpxe"),
        ("undionly.kpxe loaded", r"undionly\.kpxe : \d+ bytes"),
        ("boot script loaded", rf"{re.escape(mac)}\.ipxe : \d+ bytes \[script\]"),
        ("kernel starts", r"Linux version"),
        ("/init starts", r"provision-test-init: started"),
        ("callback OK", r"PROVISION-CALLBACK-OK"),
    ]


def uefi_steps(mac: str) -> list[tuple[str, str]]:
    """OVMF PXE -> shim -> signed GRUB -> grub.cfg -> grub/hosts/<mac>.cfg (rendered by provision) -> kernel."""
    return [
        ("PXE gets shimx64.efi", r"NBP filename is shimx64\.efi"),
        ("grub.cfg read", rf"provision: network boot of {re.escape(mac)}"),
        ("host config read", rf"provision: {re.escape(mac)} -> live environment"),
        ("kernel starts", r"Linux version"),
        ("/init starts", r"provision-test-init: started"),
        ("callback OK", r"PROVISION-CALLBACK-OK"),
    ]


def assert_in_order(text: str, patterns: list[str], what: str) -> None:
    """Every regex matches ``text``, each after the previous one's match."""
    position = 0
    for pattern in patterns:
        found = re.compile(pattern, re.MULTILINE).search(text, position)
        if found is None:
            tail = "\n".join(text[position:].splitlines()[-40:])
            raise AssertionError(f"{what}: no {pattern!r} after offset {position}; from there:\n{tail}")
        position = found.end()


def leased_ip(log: str, mac: str, boot_file: str) -> str:
    """The address provision offered ``mac`` along with ``boot_file`` (full mode)."""
    found = re.search(rf"{re.escape(mac)}: offer (\S+), boot {re.escape(boot_file)} ", log)
    assert found is not None, f"no offer of {boot_file} to {mac} in provision's log"
    return found.group(1)


def tftp_sent(ip: str, path: str) -> str:
    """provision's log line for a complete TFTP transfer of ``path`` to the client at ``ip``."""
    return rf"client {re.escape(ip)}:\d+: sent {re.escape(path)}, \d+ bytes"


def check_hello(server: ProvisionServe, mac: str, boot: dict[str, Any], via: str) -> None:
    """provision recorded exactly one `hello` from ``mac`` with this boot info, after a boot script of
    kind ``via`` issued its token, and the machine now waits (no imaging plans yet)."""
    events = server.events(mac)
    kinds = [event["kind"] for event in events]
    hellos = [event["detail"] for event in events if event["kind"] == "hello"]
    assert len(hellos) == 1, events
    assert hellos[0]["boot"] == boot, events
    boots = [event["detail"]["via"] for event in events if event["kind"] == "boot"]
    assert boots and set(boots) == {via}, events
    assert kinds.index("boot") < kinds.index("hello"), events
    machine = server.machine(mac)
    assert machine is not None and machine["state"] == "waiting", machine
    assert machine["boots"] == len(boots), machine


# ------------------------------------------------------------------------------------------------ full DHCP
@dataclass
class FullLab:
    lab: Lab
    server: ProvisionServe
    watches: dict[str, BootWatch]
    kernel_release: str


@pytest.fixture(scope="class")
def full_lab(netboot_root: BootRoot, trixie_rom: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullLab]:
    """provision in full DHCP mode and three PCs booting at once: SeaBIOS, OVMF Secure Boot on, off."""
    require_lab("bios", "uefi", "uefi-secureboot")
    with Lab(workdir=tmp_path_factory.mktemp("netboot-full")) as lab:
        server = ProvisionServe.start(lab, netboot_root.dest, provision_config(lab), dhcp="full")
        assert server.ports["http"] == HTTP_PORT and server.ports["dhcp"] == 67, server.ports
        pcs = {
            MAC_BIOS: (lab.add_pc("bios", firmware="bios", mac=MAC_BIOS, rom=trixie_rom), bios_steps(MAC_BIOS)),
            MAC_SB: (lab.add_pc("sb-on", firmware="uefi-secureboot", mac=MAC_SB, rom=False), uefi_steps(MAC_SB)),
            MAC_UEFI: (lab.add_pc("sb-off", firmware="uefi", mac=MAC_UEFI, rom=False), uefi_steps(MAC_UEFI)),
        }
        watches = {mac: BootWatch(pc, steps, BOOT_TIMEOUT, FAIL, exit_timeout=30) for mac, (pc, steps) in pcs.items()}
        yield FullLab(lab, server, watches, netboot_root.kernel_release)
        for pc in lab.pcs:
            pc.stop()
        stop_server(server)


def _check_uefi_chain(full_lab: FullLab, mac: str, secure_boot: bool, timing: Timing, label: str) -> str:
    watch = full_lab.watches[mac]
    watch.result(timing, label)
    assert watch.exit_code == 0
    log = full_lab.server.log_text()
    ip = leased_ip(log, mac, "shimx64.efi")
    m = re.escape(mac)
    chain = [
        rf"{m}: offer {re.escape(ip)}, boot shimx64\.efi ",
        rf"{m}: PXE ack: shimx64\.efi \(arch 7\)",
        tftp_sent(ip, "shimx64.efi"),
        tftp_sent(ip, "grubx64.efi"),
        tftp_sent(ip, "grub/grub.cfg"),
        rf"{m}: GRUB config: live \(unknown machine, policy 'image'\)",
        tftp_sent(ip, f"grub/hosts/{mac}.cfg"),
        tftp_sent(ip, "live/vmlinuz"),
        tftp_sent(ip, "live/initrd.img"),
        rf"{m}: hello: firmware uefi, secure boot {secure_boot}",
    ]
    assert_in_order(log, chain, "provision's log")
    boot = {"firmware": "uefi", "secure_boot": secure_boot, "kernel": full_lab.kernel_release}
    check_hello(full_lab.server, mac, boot, via="grub")
    return watch.pc.serial_text()


class TestFullDhcp:
    """Full DHCP: the three PCs boot at once (class fixture, torn down after the class); one test each."""

    def test_seabios_pc_chains_undionly_then_boot_script(self, full_lab: FullLab, timing: Timing) -> None:
        """The iPXE NIC ROM's first DHCP exchange gets undionly.kpxe over TFTP, as a vendor PXE ROM would; the
        chained iPXE gets provision's per-MAC script over HTTP; the live environment's hello is accepted."""
        watch = full_lab.watches[MAC_BIOS]
        watch.result(timing, "bios")
        assert watch.exit_code == 0  # the test /init powered off
        serial = watch.pc.serial_text()
        assert serial.count("iPXE initialising devices") == 2, watch.pc.tail(60)  # the ROM, then undionly.kpxe
        assert "using undionly on" in serial, watch.pc.tail(60)
        assert f"Filename: http://{full_lab.lab.address}:{HTTP_PORT}/boot/{MAC_BIOS}.ipxe" in serial
        log = full_lab.server.log_text()
        ip = leased_ip(log, MAC_BIOS, "undionly.kpxe")
        mac = re.escape(MAC_BIOS)
        chain = [
            rf"{mac}: iPXE ROM \(xid [0-9a-f]+\): chained to the TFTP boot file",
            rf"{mac}: offer {re.escape(ip)}, boot undionly\.kpxe ",
            rf"{mac}: ack {re.escape(ip)} for \d+ s, boot undionly\.kpxe ",
            tftp_sent(ip, "undionly.kpxe"),
            rf"{mac}: offer {re.escape(ip)}, boot http://\S+:{HTTP_PORT}/boot/\$\{{mac\}}\.ipxe ",
            rf"{mac}: iPXE script: live \(unknown machine, policy 'image'\)",
            rf"{mac}: hello: firmware bios, secure boot False",
        ]
        assert_in_order(log, chain, "provision's log")
        boot = {"firmware": "bios", "secure_boot": False, "kernel": full_lab.kernel_release}
        check_hello(full_lab.server, MAC_BIOS, boot, via="ipxe")

    def test_ovmf_secure_boot_on_shim_grub_signed_kernel(self, full_lab: FullLab, timing: Timing) -> None:
        """Secure Boot on: shim and GRUB verify, GRUB sees shim_lock, the kernel says Secure Boot is enabled."""
        serial = _check_uefi_chain(full_lab, MAC_SB, True, timing, "uefi-secureboot")
        assert "provision: Secure Boot is on" in serial  # grub/hosts/<mac>.cfg: $shim_lock = y
        assert re.search(r"secureboot: Secure boot enabled", serial), "kernel did not report Secure Boot"

    def test_ovmf_secure_boot_off_same_chain(self, full_lab: FullLab, timing: Timing) -> None:
        """The same shim -> GRUB chain boots with Secure Boot off (the server cannot tell them apart)."""
        serial = _check_uefi_chain(full_lab, MAC_UEFI, False, timing, "uefi")
        assert "provision: Secure Boot is on" not in serial
        assert "Secure boot enabled" not in serial
        assert re.search(r"secureboot: Secure boot disabled", serial), "kernel did not report Secure Boot off"


# ------------------------------------------------------------------------------------------------ unsigned iPXE
def test_secure_boot_refuses_unsigned_snponly(netboot_root: BootRoot, tmp_path: Path, timing: Timing) -> None:
    """`uefi_loader: ipxe` hands UEFI clients the unsigned snponly.efi: the Secure Boot PC downloads and
    refuses it (no script, no hello); a Secure Boot off PC runs the same file (so Secure Boot is the cause)."""
    require_lab("uefi", "uefi-secureboot")
    with Lab(workdir=tmp_path / "lab") as lab:
        server = ProvisionServe.start(lab, netboot_root.dest, provision_config(lab, uefi_loader="ipxe"))
        downloaded = ("snponly.efi downloaded", r"NBP filename is snponly\.efi[\s\S]*NBP file downloaded successfully")
        refused = ("refused", r"failed to load Boot\d+ .*: (Access Denied|Security Violation)")
        sb = BootWatch(
            lab.add_pc("sb-on", firmware="uefi-secureboot", mac=MAC_SB_IPXE, rom=False),
            [downloaded, refused],
            VERDICT_TIMEOUT,
            fail=r"iPXE initialising devices|Linux version",
        )
        control = BootWatch(
            lab.add_pc("sb-off", firmware="uefi", mac=MAC_UEFI_IPXE, rom=False),
            [downloaded, ("iPXE runs", r"iPXE initialising devices")],
            VERDICT_TIMEOUT,
            fail=r"Access Denied|Security Violation",
        )
        sb.result(timing, "uefi-secureboot")
        control.result(timing, "uefi (control)")
        for pc in lab.pcs:
            pc.stop()
        log = server.log_text()
        ip = leased_ip(log, MAC_SB_IPXE, "snponly.efi")
        assert re.search(tftp_sent(ip, "snponly.efi"), log), "provision did not deliver snponly.efi"
        assert server.events(MAC_SB_IPXE) == []  # no boot script, token or hello: nothing ran
        assert server.machine(MAC_SB_IPXE) is None
        stop_server(server)


# ------------------------------------------------------------------------------------------------ unknown: ignore
@pytest.mark.parametrize("mode", ["full", "proxy"])
def test_unknown_pc_is_not_netbooted_under_ignore(
    netboot_root: BootRoot, trixie_rom: Path, tmp_path: Path, timing: Timing, mode: str
) -> None:
    """`boot.unknown: ignore`: provision gives an unknown PC no boot file. Full mode still leases it an
    address (docs/dhcp.md); proxy mode does not answer it at all (the site's dnsmasq leases it). Either way
    iPXE finds nothing to boot, nothing is fetched and the machine is not recorded."""
    require_lab("bios", dnsmasq=mode == "proxy")
    with Lab(workdir=tmp_path / "lab") as lab:
        site = start_site_dhcp(lab) if mode == "proxy" else None
        config = provision_config(lab, full=mode == "full", unknown="ignore")
        server = ProvisionServe.start(lab, netboot_root.dest, config, dhcp=mode)
        pc = lab.add_pc("ignored", firmware="bios", mac=MAC_IGNORED, rom=trixie_rom)
        watch = BootWatch(
            pc,
            [("DHCP done, nothing to boot", r"Nothing to boot"), ("network boot given up", r"No bootable device")],
            IGNORED_TIMEOUT,
            fail=r"Filename: \S|undionly\.kpxe|\.ipxe :|Linux version",
        )
        watch.result(timing, f"bios ignored ({mode})")
        pc.stop()
        assert re.search(r"net0: \d+\.\d+\.\d+\.\d+/", pc.serial_text()), "iPXE got no address"
        log = server.log_text()
        mac = re.escape(MAC_IGNORED)
        assert re.search(rf"{mac}: no boot answer: not to be network-booted", log), log[-3000:]
        assert not re.search(r": sent \S+, \d+ bytes", log), "provision served a file over TFTP"
        assert not re.search(rf"{mac}: (proxy offer|PXE ack|iPXE script|GRUB config)", log)
        assert not re.search(rf"{mac}: (offer|ack) \S+, boot ", log)  # full mode: an address, no boot file
        if site is not None:
            assert not re.search(rf"{mac}: (offer|ack) ", log)  # proxy mode: no answer at all
            assert re.search(rf"DHCPACK\(\S+\) \S+ {mac}", site.read_text()), "the site's DHCP gave no lease"
        assert server.machine(MAC_IGNORED) is None
        stop_server(server)


# ------------------------------------------------------------------------------------------------ proxy DHCP
def test_proxy_dhcp_beside_site_dhcp_seabios_to_callback(
    netboot_root: BootRoot, trixie_rom: Path, tmp_path: Path, timing: Timing
) -> None:
    """proxy mode (the default, for LANs with a DHCP server): dnsmasq leases every address, provision adds
    the boot information; the SeaBIOS PC takes the same chain as in full mode through to the callback."""
    require_lab("bios", dnsmasq=True)
    with Lab(workdir=tmp_path / "lab") as lab:
        site = start_site_dhcp(lab)
        server = ProvisionServe.start(lab, netboot_root.dest, provision_config(lab, full=False), dhcp="proxy")
        pc = lab.add_pc("bios-proxy", firmware="bios", mac=MAC_PROXY, rom=trixie_rom)
        watch = BootWatch(pc, bios_steps(MAC_PROXY), BOOT_TIMEOUT, FAIL, exit_timeout=30)
        watch.result(timing, "bios proxy")
        assert watch.exit_code == 0
        serial = pc.serial_text()
        assert serial.count("iPXE initialising devices") == 2, pc.tail(60)
        log = server.log_text()
        mac = re.escape(MAC_PROXY)
        chain = [
            rf"{mac}: iPXE ROM \(xid [0-9a-f]+\): chained to the TFTP boot file",
            rf"{mac}: proxy offer: undionly\.kpxe \(arch 0\)",
            r"client \S+: sent undionly\.kpxe, \d+ bytes",
            rf"{mac}: proxy offer: http://\S+:{HTTP_PORT}/boot/\$\{{mac\}}\.ipxe ",
            rf"{mac}: iPXE script: live \(unknown machine, policy 'image'\)",
            rf"{mac}: hello: firmware bios, secure boot False",
        ]
        assert_in_order(log, chain, "provision's log")
        assert not re.search(rf"{mac}: (offer|ack) ", log)  # provision leased nothing
        # The site's server leased the ROM, the chained iPXE and the live environment.
        acks = re.findall(rf"DHCPACK\(\S+\) (\S+) {mac}", site.read_text())
        assert len(acks) >= 3, site.read_text()[-3000:]
        boot = {"firmware": "bios", "secure_boot": False, "kernel": netboot_root.kernel_release}
        check_hello(server, MAC_PROXY, boot, via="ipxe")
        stop_server(server)
