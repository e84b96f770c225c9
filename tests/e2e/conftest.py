"""e2e helpers: boot timings shown at the end of the run, the shared boot root, and lab servers.

- ``timing`` (fixture): record one boot milestone of the current test; a table is printed at the end.
- ``netboot_root`` (session fixture): ``provision.lab.prepare_netboot_root``, a boot root from Debian packages
  plus the test initramfs (TEST_INIT) at ``live/initrd.img``; ``trixie_rom``: Debian 13's iPXE ROM.
- ``ProvisionServe``: ``provision.lab.LabServer``, ``provision serve`` as a real process inside a lab namespace
  (ready file, API calls from inside the namespace, SIGTERM stop with its exit code).
- ``BootWatch``: follows one lab PC through its serial-log milestones in a thread, so several PCs boot in
  parallel while each milestone is timed when it happens.
- ``start_site_dhcp``: dnsmasq as a site's plain DHCP server (addresses only, no boot options).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provision.bootfiles import DEFAULT_CACHE, BootRoot, qemu_roms
from provision.lab import PC, Firmware, Lab, LabServer, netboot_missing, prepare_netboot_root

TIMINGS: list[tuple[str, str, float]] = []  # (test, milestone, seconds since QEMU start)

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PROVISION_DEB_CACHE", DEFAULT_CACHE))  # the .deb cache shared by all e2e tests

Timing = Callable[[str, float], None]


@pytest.fixture
def timing(request: pytest.FixtureRequest):
    """``timing(milestone, seconds)`` records one boot milestone of the current test."""

    def record(milestone: str, seconds: float) -> None:
        TIMINGS.append((request.node.name, milestone, seconds))
        request.node.user_properties.append((milestone, round(seconds, 1)))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("lab boot timings (seconds since QEMU start)")
    for test, milestone, seconds in TIMINGS:
        terminalreporter.write_line(f"{test:<45} {milestone:<38} {seconds:6.1f}")


# ------------------------------------------------------------------------------------------ prerequisites
def lab_missing(firmware: Sequence[Firmware] = ("bios",), *, dnsmasq: bool = False) -> list[str]:
    """What this machine lacks for lab PCs with these firmwares and for fetching boot files (empty: ready)."""
    missing = netboot_missing(firmware)
    if dnsmasq and shutil.which("dnsmasq") is None:
        missing.append("dnsmasq (Debian package dnsmasq-base)")
    return missing


def require_lab(*firmware: Firmware, dnsmasq: bool = False) -> None:
    """Skip the current test, naming what is missing, unless the lab can run these PCs here."""
    missing = lab_missing(firmware or ("bios",), dnsmasq=dnsmasq)
    if missing:
        pytest.skip("lab unavailable: " + "; ".join(missing))


@pytest.fixture(scope="session")
def netboot_root(tmp_path_factory: pytest.TempPathFactory) -> BootRoot:
    """One boot root for the session: iPXE, shim, signed GRUB, Debian's signed kernel (from the .deb cache,
    downloaded on first use) and the test initramfs (virtio NIC + disk) at ``live/initrd.img``."""
    require_lab()
    return prepare_netboot_root(tmp_path_factory.mktemp("netboot-root"), cache_dir=CACHE)


@pytest.fixture(scope="session")
def trixie_rom(netboot_root: BootRoot) -> Path:
    """Debian 13's iPXE ROM for a virtio NIC (iPXE 2025: no ~13 s wait after DHCP like QEMU's 2019 ROM)."""
    return qemu_roms(cache_dir=CACHE) / "pxe-virtio.rom"


# ------------------------------------------------------------------------------------------ provision serve
class ProvisionServe(LabServer):
    """``provision serve`` inside a lab namespace: ``provision.lab.LabServer`` (raises LabError/LabTimeout)."""


# ------------------------------------------------------------------------------------------ PCs
@dataclass
class BootWatch:
    """Follows one PC through ``steps`` (label, serial-log regex) in a background thread.

    Each milestone is timed (``pc.elapsed``) when it appears, so PCs booting in parallel are timed
    correctly whichever test looks at them first. ``exit_timeout``: then wait that long for QEMU to end
    (the test /init powers off) and record ``powered off``.
    """

    pc: PC
    steps: Sequence[tuple[str, str]]
    timeout: float
    fail: str | None = None
    exit_timeout: float | None = None
    times: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    exit_code: int | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.pc.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            for label, pattern in self.steps:
                self.pc.wait_for(pattern, max(deadline - time.monotonic(), 0.1), fail=self.fail)
                self.times[label] = self.pc.elapsed
            if self.exit_timeout is not None:
                self.exit_code = self.pc.wait_exit(self.exit_timeout)
                self.times["powered off"] = self.pc.elapsed
        except Exception as exc:  # LabError, LabTimeout...: re-raised by result() in the test
            self.error = exc

    def result(self, timing: Timing | None = None, prefix: str = "") -> dict[str, float]:
        """Wait for the thread; record the milestones with ``timing``; re-raise what went wrong."""
        self._thread.join(self.timeout + (self.exit_timeout or 0) + 30)
        if self._thread.is_alive():
            raise AssertionError(f"PC {self.pc.name}: watcher still running; serial log ends:\n{self.pc.tail()}")
        if timing is not None:
            for label, seconds in self.times.items():
                timing(f"{prefix or self.pc.name} {label}", seconds)
        if self.error is not None:
            raise self.error
        return dict(self.times)


# ------------------------------------------------------------------------------------------ site DHCP
def start_site_dhcp(lab: Lab, first: int = 100, last: int = 200) -> Path:
    """dnsmasq as the site's DHCP server on the lab bridge: addresses ``lab.host(first..last)`` only, no
    boot options, no DNS, no TFTP. Tracked (and killed by PID) by the lab. Its event log's path."""
    events = lab.workdir / "site-dhcp-events.log"
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
            f"--dhcp-range={lab.host(first)},{lab.host(last)},10m",
            f"--dhcp-leasefile={lab.workdir / 'site-dhcp.leases'}",
            f"--log-facility={events}",
            "--log-dhcp",
        ],
        log_name="site-dhcp",
    )
    deadline = time.monotonic() + 10
    while "started" not in (events.read_text(errors="replace") if events.exists() else ""):
        if time.monotonic() > deadline:
            raise AssertionError(f"dnsmasq did not start:\n{lab.log_path('site-dhcp').read_text(errors='replace')}")
        time.sleep(0.05)
    return events


def machines_json(state_dir: Path) -> dict[str, dict[str, Any]]:
    """``provision machines --json`` on a server's state folder (as the workshop would run it): MAC -> row."""
    listed = subprocess.run(
        [sys.executable, "-m", "provision", "machines", "--json", "--state-dir", str(state_dir)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return {row["mac"]: row for row in json.loads(listed.stdout)}
