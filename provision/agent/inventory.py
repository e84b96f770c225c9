"""Collect the hardware probe folder in the live environment (standard library only).

:func:`collect_probe` writes exactly the files ``provision.facts.load_probe`` reads::

    dmidecode.txt  lspci.txt  lsblk.json  meminfo  cpuinfo  firmware  mac  smartctl-<disk>.json

Every tool runs with an argument list (no shell) and a timeout. A tool that is missing, fails or times out
becomes a warning in the returned list, never an exception: a probe with fewer facts is still a probe.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from provision.agent.disks import parse_lsblk_disks, show
from provision.wire import probe

log = logging.getLogger(__name__)

__all__ = ["MAX_OUTPUT_BYTES", "TOOL_TIMEOUT", "Runner", "collect_probe", "read_kernel_args"]

Runner = Callable[..., subprocess.CompletedProcess[Any]]

#: Seconds one probe tool may run (smartctl on a dying disk can hang for minutes).
TOOL_TIMEOUT = 60.0
#: Larger outputs are dropped: ``load_probe`` refuses a folder holding a file over 16 MiB.
MAX_OUTPUT_BYTES = 16 * 1024 * 1024

_KERNEL_ARGS = {"provision.server": "server", "provision.token": "token", "provision.mac": "mac"}
_SAFE_DISK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def read_kernel_args(text: str) -> dict[str, str]:
    """``server``, ``token`` and ``mac`` from ``/proc/cmdline`` text (``provision.server=...`` etc.).

    Values are whitespace-free tokens; an empty value and every other argument are ignored; the last of a
    repeated argument wins, as for the kernel.
    """
    found: dict[str, str] = {}
    for arg in text.split():
        key, sep, value = arg.partition("=")
        if sep and value and key in _KERNEL_ARGS:
            found[_KERNEL_ARGS[key]] = value
    return found


class _Collector:
    def __init__(self, dest: Path, run: Runner, timeout: float) -> None:
        self.dest = dest
        self.run = run
        self.timeout = timeout
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        log.warning("probe: %s", message)
        self.warnings.append(message)

    def write(self, name: str, data: bytes) -> None:
        try:
            (self.dest / name).write_bytes(data)
        except OSError as exc:
            self.warn(f"{name}: cannot be written ({exc.strerror or exc})")

    def tool(self, args: Sequence[str], name: str, *, ok_codes: int = 0) -> bytes | None:
        """Run ``args``; write its stdout to ``name`` and return it, or warn and return ``None``.

        ``ok_codes`` is a mask of exit-status bits that still mean the output is whole (smartctl sets bits
        for the disk's health, not for its own failure).
        """
        label = " ".join(args)
        env = {**os.environ, "LC_ALL": "C"}
        try:
            done = self.run(list(args), capture_output=True, timeout=self.timeout, check=False, env=env)
        except FileNotFoundError:
            self.warn(f"{label}: {args[0]} not installed")
            return None
        except subprocess.TimeoutExpired:
            self.warn(f"{label}: timed out after {self.timeout:g} s")
            return None
        except OSError as exc:
            self.warn(f"{label}: cannot run ({exc.strerror or exc})")
            return None
        out = done.stdout if isinstance(done.stdout, bytes) else str(done.stdout or "").encode()
        status = done.returncode
        if status & ~ok_codes:
            err = done.stderr if isinstance(done.stderr, bytes) else str(done.stderr or "").encode()
            first = err.decode("utf-8", errors="replace").strip().splitlines()[:1]
            self.warn(f"{label}: exit status {status}" + (f" ({show(first[0])})" if first else ""))
            if not out.strip():
                return None
        if len(out) > MAX_OUTPUT_BYTES:
            self.warn(f"{label}: output of {len(out)} bytes dropped (over {MAX_OUTPUT_BYTES})")
            return None
        self.write(name, out)
        return out

    def copy(self, source: Path, name: str) -> None:
        try:
            with source.open("rb") as handle:
                data = handle.read(MAX_OUTPUT_BYTES + 1)
        except OSError as exc:
            self.warn(f"{source}: cannot be read ({exc.strerror or exc})")
            return
        if len(data) > MAX_OUTPUT_BYTES:
            self.warn(f"{source}: larger than {MAX_OUTPUT_BYTES} bytes, dropped")
            return
        self.write(name, data)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _interface_mac(sys_root: Path) -> str | None:
    """MAC of the first interface that is up (not loopback, not all zeros), by interface name."""
    try:
        interfaces = sorted((sys_root / "class" / "net").iterdir())
    except OSError:
        return None
    for iface in interfaces:
        address = (_read(iface / "address") or "").lower()
        if _read(iface / "operstate") == "up" and _MAC.match(address) and address != "00:00:00:00:00:00":
            return address
    return None


def collect_probe(
    dest: Path,
    *,
    run: Runner = subprocess.run,
    proc_root: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
    mac: str | None = None,
    timeout: float = TOOL_TIMEOUT,
) -> list[str]:
    """Write the probe folder ``dest`` (created if needed) and return the warnings (empty: all collected).

    ``mac`` is the boot interface's address; without it, ``provision.mac=`` from ``/proc/cmdline`` is used,
    else the first interface that is up. SMART is read for each non-removable, non-USB disk lsblk lists.
    Only a ``dest`` that cannot be created raises (``OSError``).
    """
    dest.mkdir(parents=True, exist_ok=True)
    c = _Collector(dest, run, timeout)
    c.tool(["dmidecode"], probe.DMIDECODE)
    c.tool(["lspci", "-vvnn"], probe.LSPCI)
    lsblk = c.tool(["lsblk", "--json", "-b", "-O"], probe.LSBLK)
    disks = parse_lsblk_disks(lsblk.decode("utf-8", errors="replace")) if lsblk is not None else ()
    if lsblk is not None and not disks:
        c.warn(f"{probe.LSBLK}: no disks found")
    for disk in disks:
        if disk.removable or disk.transport == "usb":
            continue
        if not _SAFE_DISK.match(disk.name):
            c.warn(f"disk {show(disk.name)!r}: name not usable as a file name, SMART not read")
            continue
        c.tool(["smartctl", "--json", "-a", f"/dev/{disk.name}"], probe.smartctl_name(disk.name), ok_codes=~0b11)
    c.copy(proc_root / "meminfo", probe.MEMINFO)
    c.copy(proc_root / "cpuinfo", probe.CPUINFO)
    c.write(probe.FIRMWARE, b"uefi\n" if (sys_root / "firmware" / "efi").is_dir() else b"bios\n")
    if mac is None:
        mac = read_kernel_args(_read(proc_root / "cmdline") or "").get("mac") or _interface_mac(sys_root)
    if mac is None:
        c.warn("mac: no provision.mac= kernel argument and no interface up")
    else:
        c.write(probe.MAC, mac.encode("utf-8", errors="replace") + b"\n")
    return c.warnings
