"""The e2e harness: lab PCs booting from ``provision serve`` in a lab namespace (fixtures: tests/e2e/conftest.py).

- ``Timing``: the type of the ``timing`` fixture, ``timing(milestone, seconds)``.
- ``lab_missing(firmware, dnsmasq)``: what this machine lacks for lab PCs and boot files (empty: ready);
  ``require_lab(*firmware, dnsmasq)``: skip the current test, naming it.
- ``IMAGING_STEPS``: the serial-log milestones of a PC imaged from the live environment (a ``BootWatch``'s steps).
- ``HTTP_PORT``, ``CMDLINE``: the lab server's HTTP port and the live kernel's command line;
  ``provision_config(lab, full, **boot)``: the config dict of such a server (full DHCP unless ``full=False``).
- ``ProvisionServe``: ``provision.lab.LabServer``, ``provision serve`` as a real process inside a lab namespace
  (ready file, API calls from inside the namespace, SIGTERM stop with its exit code);
  ``stop_server(server)``: stop it, asserting exit 0 and a log without errors.
- ``BootWatch``: follows one lab PC through its serial-log milestones in a thread, so several PCs boot in
  parallel while each milestone is timed when it happens.
- ``start_site_dhcp(lab)``: dnsmasq as a site's plain DHCP server (addresses only, no boot options).
- ``machines_json(state_dir)``: ``provision machines --json`` on a server's state folder, MAC -> row.
"""

from __future__ import annotations

import json
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

from provision.lab import PC, Firmware, Lab, LabServer, netboot_missing
from tests.support.paths import REPO
from tests.support.wait import wait_for

Timing = Callable[[str, float], None]

HTTP_PORT = 8080  # images/tiny.yaml calls back to http://198.18.0.1:8080/api/v1/firstboot
CMDLINE = "console=ttyS0 panic=5"  # panic=5: a kernel panic ends QEMU (-no-reboot) instead of hanging
SITE_DHCP_TIMEOUT = 10.0
IMAGING_STEPS: tuple[tuple[str, str], ...] = (
    ("kernel starts", r"Linux version"),
    ("live environment up", r"PROVISION-LIVE-UP"),
    ("agent done", r"PROVISION-AGENT-RESULT done"),
)


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


# ------------------------------------------------------------------------------------------ provision serve
def provision_config(lab: Lab, *, full: bool = True, **boot: str | bool) -> dict[str, Any]:
    """The YAML config of a lab provision: chain_ipxe_roms so QEMU's iPXE ROMs take the real PC chain."""
    config: dict[str, Any] = {
        "ports": {"http": HTTP_PORT},
        "boot": {"cmdline": CMDLINE, "chain_ipxe_roms": True, **boot},
    }
    if full:
        config["dhcp"] = {
            "range_start": str(lab.host(100)),
            "range_end": str(lab.host(200)),
            "netmask": str(lab.network.netmask),
        }
    return config


class ProvisionServe(LabServer):
    """``provision serve`` inside a lab namespace: ``provision.lab.LabServer`` (raises LabError/LabTimeout)."""


def stop_server(server: ProvisionServe) -> None:
    """SIGTERM provision; it must exit 0 and have logged no error or traceback."""
    code = server.stop()
    assert code == 0, f"provision serve exited {code}:\n{server.log_text()[-3000:]}"
    assert server.problems() == [], server.problems()


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

    def started() -> bool:
        return "started" in (events.read_text(errors="replace") if events.exists() else "")

    if not wait_for(started, SITE_DHCP_TIMEOUT, interval=0.05):
        raise AssertionError(f"dnsmasq did not start:\n{lab.log_path('site-dhcp').read_text(errors='replace')}")
    return events


def machines_json(state_dir: Path) -> dict[str, dict[str, Any]]:
    """``provision machines --json`` on a server's state folder (as the workshop would run it): MAC -> row."""
    listed = subprocess.run(
        [sys.executable, "-m", "provision", "machines", "--json", "--state-dir", str(state_dir)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return {row["mac"]: row for row in json.loads(listed.stdout)}
