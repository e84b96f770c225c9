"""e2e helpers: boot timings shown at the end of the run, the shared boot root, and lab servers.

- ``timing`` (fixture): record one boot milestone of the current test; a table is printed at the end.
- ``netboot_root`` (session fixture): a boot root from Debian packages (``install_boot_root``) plus the test
  initramfs (``build_test_initrd``, TEST_INIT) at ``live/initrd.img``; ``trixie_rom``: Debian 13's iPXE ROM.
- ``ProvisionServe``: ``provision serve`` as a real process inside a lab namespace (ready file, API calls
  from inside the namespace, SIGTERM stop with its exit code).
- ``BootWatch``: follows one lab PC through its serial-log milestones in a thread, so several PCs boot in
  parallel while each milestone is timed when it happens.
- ``start_site_dhcp``: dnsmasq as a site's plain DHCP server (addresses only, no boot options).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.bootfiles import DEFAULT_CACHE, DEFAULT_KEYRING, BootRoot, install_boot_root, qemu_roms
from provision.lab import PC, Firmware, Lab, build_test_initrd, missing_prerequisites, modules_for

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
    missing = missing_prerequisites(firmware)
    for tool, package in (("apt-get", "apt"), ("dpkg", "dpkg")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    if not Path(DEFAULT_KEYRING).is_file():
        missing.append(f"{DEFAULT_KEYRING} (Debian package debian-archive-keyring)")
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
    root = tmp_path_factory.mktemp("netboot-root")
    installed = install_boot_root(root, cache_dir=CACHE)
    build_test_initrd(
        root / "live" / "initrd.img", installed.kernel_modules, installed.busybox, modules_for("virtio", "virtio")
    )
    return installed


@pytest.fixture(scope="session")
def trixie_rom(netboot_root: BootRoot) -> Path:
    """Debian 13's iPXE ROM for a virtio NIC (iPXE 2025: no ~13 s wait after DHCP like QEMU's 2019 ROM)."""
    return qemu_roms(cache_dir=CACHE) / "pxe-virtio.rom"


# ------------------------------------------------------------------------------------------ provision serve
_GET_JSON = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=10) as reply:\n"
    "    sys.stdout.write(reply.read().decode())\n"
)


@dataclass
class ProvisionServe:
    """``provision serve`` running inside a lab namespace (on its bridge, at the lab address)."""

    lab: Lab
    proc: subprocess.Popen[bytes]
    name: str
    ports: dict[str, int]
    state_dir: Path
    returncode: int | None = None

    @classmethod
    def start(
        cls,
        lab: Lab,
        boot_root: Path,
        config: dict[str, Any],
        *,
        dhcp: str = "full",
        name: str = "provision",
        timeout: float = 30.0,
    ) -> ProvisionServe:
        """Write ``config`` (YAML) and start ``python -m provision serve --interface BRIDGE --address LAB ...``
        with ``lab.popen``; return once its ready file is written. Its log is ``lab.log_path(name)``."""
        base = lab.workdir / name
        base.mkdir(parents=True, exist_ok=True)
        config_file, ready, state = base / "config.yaml", base / "ready.json", base / "state"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [sys.executable, "-m", "provision", "serve", "--interface", lab.bridge, "--address", str(lab.address)]
        argv += ["--dhcp", dhcp, "--state-dir", str(state), "--boot-root", str(boot_root)]
        argv += ["--config", str(config_file), "--ready-file", str(ready)]
        proc = lab.popen(argv, log_name=name, cwd=REPO)
        server = cls(lab, proc, name, {}, state)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"provision serve exited ({proc.returncode}) before ready:\n{server.log_text()}")
            try:
                server.ports = json.loads(ready.read_text())
                break
            except (FileNotFoundError, ValueError):  # not there yet, or half written
                if time.monotonic() > deadline:
                    message = f"provision serve not ready after {timeout:.0f} s:\n{server.log_text()}"
                    raise AssertionError(message) from None
                time.sleep(0.05)
        # `ip netns exec` execs the command in place: the PID we signal is provision's own.
        assert server.ports["pid"] == proc.pid, (server.ports, proc.pid)
        return server

    @property
    def url(self) -> str:
        return f"http://{self.lab.address}:{self.ports['http']}"

    @property
    def log_path(self) -> Path:
        return self.lab.log_path(self.name)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str) -> Any:
        """GET ``path`` (e.g. ``/api/v1/machines``) from inside the namespace; the decoded JSON."""
        done = self.lab.run([sys.executable, "-c", _GET_JSON, self.url + path], timeout=30)
        return json.loads(done.stdout)

    def events(self, mac: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.api(f"/api/v1/machines/{mac}/events")
        return events

    def machine(self, mac: str) -> dict[str, Any] | None:
        machines: list[dict[str, Any]] = self.api("/api/v1/machines")
        return next((m for m in machines if m["mac"] == mac), None)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; its exit code. If it does not stop in time it is killed by PID and this fails."""
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"provision serve (pid {self.proc.pid}) ignored SIGTERM for {timeout:.0f} s: killed\n"
                    + self.log_text()[-3000:]
                ) from None
        self.returncode = self.proc.returncode
        return self.returncode

    def problems(self) -> list[str]:
        """Log lines at ERROR/CRITICAL level and traceback lines (a clean run has none)."""
        return [
            line
            for line in self.log_text().splitlines()
            if re.search(r" (ERROR|CRITICAL) |^Traceback|^\w+(Error|Exception): ", line)
        ]


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
