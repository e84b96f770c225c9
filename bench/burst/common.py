"""What every part of the burst shares: addresses, ports, sizes, timeouts, the errors, running a command."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent

SERVER_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
NETMASK = "255.255.255.0"
RANGE_START = "198.18.0.100"
RANGE_END = "198.18.0.250"
HTTP_PORT = 8080
TFTP_PORT = 69
BOOT_FILE = "undionly.kpxe"
BLKSIZE = 1468
FILE_SIZE = 70 * 1024 + 123  # ~70 KB, not a multiple of the block size: the last block is short
CLIENT_IF = "eth0"  # the veth end in the client namespace
BRIDGE_PORT = "bburst0"  # its peer, a port of br0 in the lab namespace
CLIENT_NS_RE = re.compile(r"^bburst-(\d+)$")
SIDES = ("provision", "baseline")
STEPS = ("dhcp", "tftp", "http", "total")

# DHCP: tries and their timeouts (PXE ROMs wait 4, 8, 16, 32 s; shortened, the figures show any retry).
DHCP_TIMEOUTS = (2.0, 4.0, 8.0)
# TFTP: first resend timeout, doubled on each resend of the same packet, and resends before giving up.
TFTP_TIMEOUT = 1.0
TFTP_RESENDS = 5
HTTP_TIMEOUT = 10.0
HTTP_ATTEMPTS = 3

PXE_VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
PXE_PARAMETERS = bytes((1, 2, 3, 4, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51)) + bytes(
    (54, 58, 59, 60, 66, 67, *range(128, 136))
)
USER_AGENT = "iPXE/1.21.1+ (boot-burst)"


class BenchError(Exception):
    """The benchmark itself cannot run (not root, a tool missing, a server that does not start)."""


class StepFailed(Exception):
    """One client's step failed after its retries; the message says which and why."""


def _run(argv: Sequence[str], *, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False, input=input)
    if check and done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done
