"""QEMU PCs network-boot the real live environment (``provision live build``) from ``provision serve``.

Two PCs boot at once in a lab namespace (full DHCP):

- SeaBIOS + iPXE ROM -> undionly.kpxe -> iPXE -> HTTP: Debian's signed kernel + the live initramfs;
- OVMF with Secure Boot on -> shim -> signed GRUB (TFTP) -> the same kernel and initramfs: the kernel is
  locked down, so every module /init loads must carry Debian's signature.

Each must print ``PROVISION-LIVE-UP <uptime> <ip>`` (modules by modalias, the NIC by the MAC on the
command line, DHCP, dropbear). Then, from inside the namespace, SSH with the server's key logs in as
root, while another key and a password are refused. When the agent module is in the build, its first
``hello`` must reach the server with the PC's boot facts. Times are recorded (docs/live.md), not asserted.

Needs root, qemu-system-x86, ovmf, mmdebstrap, kmod and the Debian archive (cached after the first run).
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.bootfiles import BootRoot
from provision.lab import Lab
from tests.support.e2e import BootWatch, ProvisionServe, Timing, provision_config, require_lab, stop_server
from tests.support.live import LiveEnv

pytestmark = pytest.mark.e2e

MAC_BIOS = "52:54:00:18:20:01"
MAC_SB = "52:54:00:18:20:02"
MEMORY = 1024  # MiB: the initramfs unpacks to ~120 MiB of RAM
BOOT_TIMEOUT = 420.0  # QEMU start -> PROVISION-LIVE-UP, per PC (TCG, two at once on 2 CPUs)
HELLO_TIMEOUT = 180.0
FAIL = r"Kernel panic|PROVISION-LIVE-NO-NETWORK|PROVISION-LIVE-AGENT-EXIT|No bootable device|Access Denied"
UP_RE = r"PROVISION-LIVE-UP (\d+\.\d+) (\d+\.\d+\.\d+\.\d+)"

SSH_CHECK = r"""
import io, sys
import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

host, key_file = sys.argv[1], sys.argv[2]


def connect(**auth):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(host, 22, username="root", timeout=60, banner_timeout=60, auth_timeout=60,
                   allow_agent=False, look_for_keys=False, **auth)
    return client


client = connect(key_filename=key_file)
_, out, _ = client.exec_command("id -u; cat /etc/hostname; ls /opt/provision/provision/agent/__init__.py")
print("LOGIN", out.read().decode().split())
client.close()
pem = Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
)
other = paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))
for name, auth in (("other-key", {"pkey": other}), ("password", {"password": "root"})):
    try:
        connect(**auth).close()
        print("ACCEPTED", name)
    except paramiko.AuthenticationException:
        print("REFUSED", name)
"""


@dataclass
class LiveLab:
    lab: Lab
    server: ProvisionServe
    watches: dict[str, BootWatch]
    live: LiveEnv


@pytest.fixture(scope="module")
def live_lab(
    live_env: LiveEnv, netboot_root: BootRoot, trixie_rom: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLab]:
    """provision serve (full DHCP) serving the live environment; a SeaBIOS and a Secure Boot PC boot at once."""
    require_lab("bios", "uefi-secureboot")
    tmp = tmp_path_factory.mktemp("live-boot")
    root = tmp / "boot"
    shutil.copytree(netboot_root.dest, root, symlinks=True)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copyfile(live_env.out / name, root / "live" / name)
    with Lab(workdir=tmp / "lab") as lab:
        server = ProvisionServe.start(lab, root, provision_config(lab), dhcp="full")
        steps = [("kernel starts", r"Linux version"), ("/init starts", r"provision-live: started")]
        steps.append(("live environment up", UP_RE))
        pcs = {
            MAC_BIOS: lab.add_pc("live-bios", firmware="bios", mac=MAC_BIOS, rom=trixie_rom, memory=MEMORY),
            MAC_SB: lab.add_pc("live-sb", firmware="uefi-secureboot", mac=MAC_SB, rom=False, memory=MEMORY),
        }
        watches = {mac: BootWatch(pc, steps, BOOT_TIMEOUT, FAIL) for mac, pc in pcs.items()}
        yield LiveLab(lab, server, watches, live_env)
        for pc in lab.pcs:
            pc.stop()
        stop_server(server)


def _up(live_lab: LiveLab, mac: str, timing: Timing, label: str) -> tuple[float, str]:
    watch = live_lab.watches[mac]
    times = watch.result(timing, label)
    found = re.search(UP_RE, watch.pc.serial_text())
    assert found is not None
    uptime, ip = float(found.group(1)), found.group(2)
    timing(f"{label} kernel uptime at the marker", uptime)
    print(f"\n{label}: QEMU start -> PROVISION-LIVE-UP {times['live environment up']:.1f} s (kernel uptime {uptime} s)")
    return uptime, ip


def _ssh(live_lab: LiveLab, ip: str) -> None:
    done = live_lab.lab.run([sys.executable, "-c", SSH_CHECK, ip, str(live_lab.live.key.private_path)], timeout=240)
    lines = done.stdout.splitlines()
    assert "LOGIN ['0', 'provision-live', '/opt/provision/provision/agent/__init__.py']" in lines, done.stdout
    assert "REFUSED other-key" in lines and "REFUSED password" in lines, done.stdout


def _hello(live_lab: LiveLab, mac: str, timing: Timing, label: str, firmware: str, secure_boot: bool | None) -> None:
    if "provision/agent/__main__.py" not in live_lab.live.result.manifest.agent_files:
        pytest.skip("this build has no provision.agent.__main__: the agent's hello is not checked")
    pc = live_lab.watches[mac].pc
    deadline = time.monotonic() + HELLO_TIMEOUT
    while True:
        hellos = [e for e in live_lab.server.events(mac) if e["kind"] == "hello"]
        if hellos:
            break
        assert time.monotonic() < deadline, f"no hello from {mac}; serial log ends:\n{pc.tail(40)}"
        assert not re.search(FAIL, pc.serial_text()), pc.tail(40)
        time.sleep(1)
    timing(f"{label} agent hello recorded", pc.elapsed)
    boot = hellos[0]["detail"]["boot"]
    assert boot["firmware"] == firmware and boot["secure_boot"] is secure_boot, hellos[0]
    assert boot["kernel"] == live_lab.live.result.manifest.kernel_release


def test_seabios_pc_boots_the_live_environment(live_lab: LiveLab, timing: Timing) -> None:
    _, ip = _up(live_lab, MAC_BIOS, timing, "live bios")
    serial = live_lab.watches[MAC_BIOS].pc.serial_text()
    assert f"provision-live: eth0 {MAC_BIOS} has {ip} [" in serial
    assert re.search(r"provision-live: \d+ modules loaded", serial)
    assert "provision-live: ssh host key SHA256:" in serial
    _ssh(live_lab, ip)
    _hello(live_lab, MAC_BIOS, timing, "live bios", "bios", None)  # no EFI: Secure Boot unknown


def test_secure_boot_pc_loads_only_signed_modules(live_lab: LiveLab, timing: Timing) -> None:
    _, ip = _up(live_lab, MAC_SB, timing, "live uefi-secureboot")
    serial = live_lab.watches[MAC_SB].pc.serial_text()
    assert re.search(r"secureboot: Secure boot enabled", serial)
    assert re.search(r"Kernel is locked down from EFI Secure Boot", serial)
    assert "module verification failed" not in serial and "Loading of unsigned module" not in serial
    assert f"provision-live: eth0 {MAC_SB} has {ip} [" in serial
    _ssh(live_lab, ip)
    _hello(live_lab, MAC_SB, timing, "live uefi-secureboot", "uefi", True)
