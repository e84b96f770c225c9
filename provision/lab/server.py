"""``provision serve`` inside a lab namespace, and the boot root it serves to lab PCs.

- ``prepare_netboot_root``: Debian's boot files (``install_boot_root``) plus the test initramfs
  (``build_test_initrd``, TEST_INIT) at ``live/initrd.img``: what a lab PC network-boots into.
- ``LabServer``: ``python -m provision serve --interface BRIDGE --address LABADDR ...`` started with
  ``lab.popen`` (tracked and killed by PID), awaited through its ready file; API calls from inside the
  namespace (the lab address is not reachable from the host); SIGTERM stop with its exit code.

Used by the e2e tests (tests/support/e2e.py) and ``provision lab demo`` (demo.py). See docs/lab.md.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

import provision
from provision.bootfiles import DEFAULT_CACHE, DEFAULT_KEYRING, BootRoot, install_boot_root
from provision.lab.host import missing_prerequisites
from provision.lab.initrd import build_test_initrd, modules_for
from provision.lab.netns import Lab
from provision.lab.qemu import Disk, Firmware, LabError, LabTimeout, Nic

log = logging.getLogger(__name__)

INITRD = "live/initrd.img"  # where the live boot script and grub/hosts/<mac>.cfg look for the initramfs
PACKAGE_PARENT = Path(provision.__file__).resolve().parent.parent  # `python -m provision` works from here
PROBLEM_RE = re.compile(r" (ERROR|CRITICAL) |^Traceback|^\w+(Error|Exception): ")
_GET_JSON = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=10) as reply:\n"
    "    sys.stdout.write(reply.read().decode())\n"
)


def netboot_missing(firmware: Sequence[Firmware] = ("bios",)) -> list[str]:
    """What this machine lacks to network-boot lab PCs with these firmwares from a boot root fetched from
    Debian packages: the lab's needs, plus apt, dpkg and the archive keyring (empty: ready)."""
    missing = missing_prerequisites(firmware)
    for tool, package in (("apt-get", "apt"), ("dpkg", "dpkg")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    if not Path(DEFAULT_KEYRING).is_file():
        missing.append(f"{DEFAULT_KEYRING} (Debian package debian-archive-keyring)")
    return missing


def prepare_netboot_root(
    dest: Path, *, cache_dir: Path = DEFAULT_CACHE, nic: Nic = "virtio", disk: Disk = "virtio"
) -> BootRoot:
    """Lay out ``dest``: iPXE, shim, signed GRUB, Debian's signed kernel (from the .deb cache, downloaded on
    first use, ~80 MB) and the test initramfs for this NIC and disk model at ``live/initrd.img``."""
    installed = install_boot_root(dest, cache_dir=cache_dir)
    build_test_initrd(dest / INITRD, installed.kernel_modules, installed.busybox, modules_for(nic, disk))
    return installed


@dataclass
class LabServer:
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
        cwd: Path = PACKAGE_PARENT,
    ) -> Self:
        """Write ``config`` (YAML) and start ``python -m provision serve --interface BRIDGE --address LAB ...``
        with ``lab.popen``; return once its ready file is written. Its log is ``lab.log_path(name)``.

        LabError if it exits first or its ready file names another PID; LabTimeout if not ready in time.
        """
        base = lab.workdir / name
        base.mkdir(parents=True, exist_ok=True)
        config_file, ready, state = base / "config.yaml", base / "ready.json", base / "state"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [sys.executable, "-m", "provision", "serve", "--interface", lab.bridge, "--address", str(lab.address)]
        argv += ["--dhcp", dhcp, "--state-dir", str(state), "--boot-root", str(boot_root)]
        argv += ["--config", str(config_file), "--ready-file", str(ready)]
        proc = lab.popen(argv, log_name=name, cwd=cwd)
        server = cls(lab, proc, name, {}, state)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                server.returncode = proc.returncode
                raise LabError(
                    f"provision serve exited ({proc.returncode}) before ready:\n{server.log_text()[-3000:]}",
                    lab=lab.name,
                    returncode=proc.returncode,
                )
            try:
                server.ports = json.loads(ready.read_text())
                break
            except (FileNotFoundError, ValueError):  # not there yet, or half written
                if time.monotonic() > deadline:
                    message = f"provision serve not ready after {timeout:.0f} s:\n{server.log_text()[-3000:]}"
                    raise LabTimeout(message, lab=lab.name, timeout=timeout) from None
                time.sleep(0.05)
        # `ip netns exec` execs the command in place: the PID we signal is provision's own.
        if server.ports.get("pid") != proc.pid:
            raise LabError(
                f"provision serve's ready file names pid {server.ports.get('pid')}, not {proc.pid}", lab=lab.name
            )
        log.info("lab %s: provision serve pid %d ready: %s", lab.name, proc.pid, server.ports)
        return server

    @property
    def url(self) -> str:
        """The HTTP base URL, reachable from inside the lab namespace only."""
        return f"http://{self.lab.address}:{self.ports['http']}"

    @property
    def log_path(self) -> Path:
        return self.lab.log_path(self.name)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str) -> Any:
        """GET ``path`` (e.g. ``/api/v1/machines``) from inside the namespace; the decoded JSON."""
        done = self.lab.run([sys.executable, "-c", _GET_JSON, self.url + path], timeout=30)
        try:
            return json.loads(done.stdout)
        except ValueError as exc:
            raise LabError(f"GET {path}: not JSON: {done.stdout[:200]!r}", path=path) from exc

    def events(self, mac: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.api(f"/api/v1/machines/{mac}/events")
        return events

    def machines(self) -> list[dict[str, Any]]:
        machines: list[dict[str, Any]] = self.api("/api/v1/machines")
        return machines

    def machine(self, mac: str) -> dict[str, Any] | None:
        return next((m for m in self.machines() if m["mac"] == mac), None)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; its exit code. If it does not stop in time it is killed by PID and LabError raised."""
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = self.proc.returncode
                raise LabError(
                    f"provision serve (pid {self.proc.pid}) ignored SIGTERM for {timeout:.0f} s: killed\n"
                    + self.log_text()[-3000:],
                    pid=self.proc.pid,
                ) from None
        self.returncode = self.proc.returncode
        return self.returncode

    def problems(self) -> list[str]:
        """Log lines at ERROR/CRITICAL level and traceback lines (a clean run has none)."""
        return [line for line in self.log_text().splitlines() if PROBLEM_RE.search(line)]
