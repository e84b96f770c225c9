"""Fakes for the lab's demo followers and report (tests/unit/test_lab_follow.py, test_lab_demo.py).

- ``BIOS_MAC``, ``UEFI_MAC``, ``DIGEST``, ``RUN``: the two PCs, the image's root digest and a run id.
- ``BIOS_NETBOOT``, ``UEFI_NETBOOT``, ``LIVE``, ``BIOS_OWN_DISK``: what the PCs print on serial in each phase,
  cut down from real lab runs: one chunk per poll.
- ``FakePC``: a PC whose serial log grows by one chunk per poll; ``elapsed`` goes up 5 s per poll.
- ``api_run(state, complete, digest)``: a run as ``/api/v1/runs`` returns it, with one verification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BIOS_MAC = "52:54:00:de:00:01"
UEFI_MAC = "52:54:00:de:00:02"
DIGEST = "8829dcb30439" + "0" * 52
RUN = "bab199be83694fb29b236771991744c1"

# What the PCs print on serial, cut down from real lab runs: one chunk per poll.
BIOS_NETBOOT = [
    "iPXE initialising devices...ok\r\nConfiguring (net0 52:54:00:de:00:01)...... ok\r\n"
    "net0: 198.18.0.100/255.255.255.0\r\nFilename: undionly.kpxe\r\n",
    "tftp://198.18.0.1/undionly.kpxe... ok\r\nundionly.kpxe : 108847 bytes [PXE-NBP]\r\n",
    f"{BIOS_MAC}.ipxe : 541 bytes [script]\r\nprovision: {BIOS_MAC} -> live environment\r\n",
]
UEFI_NETBOOT = [
    ">>Start PXE over IPv4.\r\n  Station IP address is 198.18.0.101\r\n",
    "  NBP filename is shimx64.efi\r\n  NBP filesize is 1048504 Bytes\r\n Downloading NBP file...\r\n\r\n"
    "  NBP file downloaded successfully.\r\n",
    f"provision: network boot of {UEFI_MAC}\r\nprovision: {UEFI_MAC} -> live environment\r\n",
]
LIVE = [
    "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)\r\n",
    "provision-live: ssh host key SHA256:o9VM [11.64 s]\r\nPROVISION-LIVE-UP 11.73 198.18.0.100\r\n",
    f"2026-11-27 10:25:31,682 agent INFO provision.agent.main: {BIOS_MAC}: run {RUN}: tiny onto /dev/vda (?)\n",
    f"verified 8829dcb30439 on /dev/vda: 12 chunks\nPROVISION-AGENT-RESULT done {RUN} -\nPROVISION-LIVE-REBOOT\n",
]
BIOS_OWN_DISK = [
    "net0: 198.18.0.100/255.255.255.0\r\n",
    f"{BIOS_MAC}.ipxe : 148 bytes [script]\r\nprovision: {BIOS_MAC} -> local disk\r\nBooting from SAN device 0x80\r\n",
    "PROVISION-TINY-FIRSTBOOT tiny-41936d48a27f\r\n",
    f"PROVISION-TINY-CALLBACK-OK {BIOS_MAC}\r\nPROVISION-TINY-POWEROFF\r\n",
]


@dataclass
class FakePC:
    """A PC whose serial log grows by one chunk per poll; ``elapsed`` goes up 5 s per poll."""

    chunks: list[str]
    exit_after: int | None = None  # QEMU stops after this many chunks were shown
    shown: int = 0
    clock: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.exit_after is None or self.shown < self.exit_after

    @property
    def elapsed(self) -> float:
        return self.clock

    def serial_text(self) -> str:
        self.shown += 1
        self.clock += 5.0
        return "".join(self.chunks[: self.shown])


def api_run(state: str = "done", complete: bool = True, digest: str = DIGEST) -> dict[str, Any]:
    verification = {"digest": digest, "complete": complete, "read_back": "ok" if complete else "failed"}
    return {
        "id": RUN, "state": state, "recipe": "bios-pc", "image": "tiny", "label": "20261127-103806-8829dcb30439",
        "digest": DIGEST, "bytes_written": 50331648, "mean_rate": 49710269.0, "verifications": [verification],
    }  # fmt: skip
