"""`provision lab demo` as a user runs it: a process that boots the default rack (SeaBIOS + iPXE ROM, OVMF with
Secure Boot on) from `provision serve` in a private namespace, reports each milestone, prints the machines as
the server sees them and a final table, exits 0 and leaves no namespace behind. ~1 min with a warm .deb cache.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.lab.demo import LIVE_NOTE
from tests.e2e.conftest import CACHE, REPO, require_lab

pytestmark = pytest.mark.e2e

BIOS_MAC = "52:54:00:de:00:01"
SB_MAC = "52:54:00:de:00:02"
TIMEOUT = 420  # the demo's own per-PC timeout is 180 s; a cold cache adds the ~80 MB download


def in_order(text: str, patterns: list[str]) -> None:
    position = 0
    for pattern in patterns:
        found = re.compile(pattern, re.MULTILINE).search(text, position)
        assert found is not None, f"no {pattern!r} after offset {position} in:\n{text}"
        position = found.end()


def test_lab_demo_boots_the_default_rack_to_the_callback(tmp_path: Path) -> None:
    require_lab("bios", "uefi-secureboot")
    argv = [sys.executable, "-m", "provision", "lab", "demo", "--cache", str(CACHE), "--workdir", str(tmp_path)]
    began = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    seconds = time.monotonic() - began
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert "Traceback" not in err and "ERROR" not in err, err

    time_re = r"\s+\d+\.\d s  "
    for name, mac, steps in (
        ("bios", BIOS_MAC, ["DHCP: address 198\\.18\\.0\\.\\d+ \\(iPXE NIC ROM\\)", "boot file: undionly\\.kpxe"]),
        (
            "uefi-secureboot",
            SB_MAC,
            ["DHCP: address 198\\.18\\.0\\.\\d+ \\(firmware PXE\\)", "boot file: shimx64\\.efi"],
        ),
    ):
        script = rf"boot script: /boot/{mac}\.ipxe" if name == "bios" else rf"GRUB config: grub/hosts/{mac}\.cfg"
        steps += [script, r"kernel: Linux \S+ starts", r"callback: POST /api/v1/hello accepted", "powered off"]
        in_order(out, [rf"^pc {re.escape(name)}{time_re}{step}" for step in steps])
    in_order(
        out,
        [
            r"^boot root ready in \d+\.\d s \(kernel \S+\)",
            r"^lab: network namespace prov-\d+-\d+, bridge br0 198\.18\.0\.1/24",
            r"^server: provision serve \(pid \d+\) on br0: full DHCP 198\.18\.0\.100-198\.18\.0\.200",
            rf"^pc bios: SeaBIOS, Debian 13 iPXE NIC ROM, MAC {BIOS_MAC}: powered on",
            rf"^pc uefi-secureboot: OVMF, Secure Boot on, no NIC ROM \(firmware PXE\), MAC {SB_MAC}: powered on",
            rf"^server: {BIOS_MAC} \(bios\) state waiting, 1 boot\(s\), hello: firmware bios, Secure Boot off",
            rf"^server: {SB_MAC} \(uefi-secureboot\) state waiting, 1 boot\(s\), hello: firmware uefi, Secure Boot on",
            r"^server stopped \(exit 0\)$",
            r"^lab prov-\d+-\d+ removed: namespace, bridge, taps, processes$",
            r"^MAC +PC +FIRMWARE +SECURE BOOT +STATE +CALLBACK$",
            rf"^{BIOS_MAC}  bios +bios +off +waiting +\d+\.\d s$",
            rf"^{SB_MAC}  uefi-secureboot +uefi +on +waiting +\d+\.\d s$",
            r"^OK: 2 of 2 PCs network-booted to the live environment and called back "
            rf"\(\d+ s from start; {re.escape(LIVE_NOTE)}\)$",
        ],
    )
    assert "server log:" not in out  # provision logged no error

    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not re.search(rf"^prov-{proc.pid}-", namespaces, re.MULTILINE), namespaces
    print(f"\nlab demo: {seconds:.1f} s\n{out}")
