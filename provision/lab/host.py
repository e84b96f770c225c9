"""What the lab needs from this machine and what a killed run leaves on it.

- Prerequisites: `missing_prerequisites` lists what this machine lacks for the lab (root, iproute2,
  /dev/net/tun, QEMU and firmware); `require` raises `LabUnavailable` with that list (tests skip on it).
- The `ip` command (`run_ip`) and processes by PID (`pid_alive`, `kill_pid`).
- Lab names: `new_lab_name` gives ``prov-<pid>-<n>``; `cleanup_stale_labs` deletes the namespaces so named
  whose creating process is gone, killing what still runs in them.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from provision.errors import FatalError
from provision.lab.qemu import Firmware, LabError, missing_qemu

log = logging.getLogger("provision.lab.netns")  # the lab's logger, named as before the split

NAME_RE = re.compile(r"^prov-(\d+)-(\d+)$")
_counter = itertools.count(1)


class LabUnavailable(FatalError):
    """This machine cannot run the lab (not root, a tool or firmware missing). Tests skip on it."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__("lab unavailable, missing: " + "; ".join(missing), missing=list(missing))
        self.missing = list(missing)


def missing_prerequisites(firmware: Sequence[Firmware] = ("bios",)) -> list[str]:
    """Everything the lab needs for PCs with these firmwares that this machine lacks (empty: ready)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces and taps)")
    if shutil.which("ip") is None:
        missing.append("ip (Debian package iproute2)")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    for kind in dict.fromkeys(firmware):
        missing += [m for m in missing_qemu(kind) if m not in missing]
    return missing


def require(firmware: Sequence[Firmware] = ("bios",)) -> None:
    """Raise LabUnavailable listing what is missing."""
    missing = missing_prerequisites(firmware)
    if missing:
        raise LabUnavailable(missing)


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS`` on this machine, output captured; LabError when it fails and ``check`` is set."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {done.stderr.strip()}", argv=["ip", *args])
    return done


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def kill_pid(pid: int, timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, one process we started (not our child any more: a stale lab's)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)


def cleanup_stale_labs() -> list[str]:
    """Delete lab namespaces whose creating process is gone (killed run); kill what still runs in them."""
    done = run_ip("netns", "list", check=False)
    removed = []
    for line in done.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = NAME_RE.match(name)
        if not match or pid_alive(int(match.group(1))):
            continue
        pids = run_ip("netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            kill_pid(int(pid))
        run_ip("netns", "delete", name, check=False)
        removed.append(name)
        log.warning("removed stale lab namespace %s (%d processes killed)", name, len(pids))
    return removed


def new_lab_name() -> str:
    """A namespace name for a new lab, ``prov-<our pid>-<n>``: `cleanup_stale_labs` removes it once we are gone."""
    return f"prov-{os.getpid()}-{next(_counter)}"
