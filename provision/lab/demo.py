"""``provision lab demo``: a provision server and a small QEMU rack in a private network namespace.

The boot root (Debian's iPXE, shim, signed GRUB and kernel, plus the test initramfs) is prepared, a lab
starts, ``provision serve`` runs on its bridge with full DHCP, and the demo PCs network-boot at once:
by default one SeaBIOS PC with Debian 13's iPXE ROM (ROM -> undionly.kpxe -> per-MAC iPXE script) and
one OVMF PC with Secure Boot on and no NIC ROM (firmware PXE -> shim -> signed GRUB -> signed kernel).
Each PC is followed on its serial console through its milestones, reported as they happen; then the
machines are reported as the server recorded them. Everything is stopped and removed at the end.

Nothing here prints: progress goes to a callback, the outcome is a ``DemoResult``.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, cast, get_args

from provision.bootfiles import DEFAULT_CACHE, qemu_roms
from provision.lab.netns import Lab, LabUnavailable
from provision.lab.qemu import Firmware, LabError
from provision.lab.server import LabServer, netboot_missing, prepare_netboot_root

Progress = Callable[[str], None]

CMDLINE = "console=ttyS0 panic=5"  # panic=5: a kernel panic ends QEMU (-no-reboot) instead of hanging
HTTP_PORT = 8080
DEFAULT_TIMEOUT = 180.0  # per PC, power-on to callback; measured 20-40 s here, 90 s on a loaded host (TCG, 2 CPUs)
MAX_PCS = 8
MAC_PREFIX = "52:54:00:de:00:"
LIVE_NOTE = "today the live environment only calls back; imaging lands in a later issue"
DESCRIPTIONS: dict[str, str] = {
    "bios": "SeaBIOS, Debian 13 iPXE NIC ROM",
    "uefi": "OVMF, Secure Boot off, no NIC ROM (firmware PXE)",
    "uefi-secureboot": "OVMF, Secure Boot on, no NIC ROM (firmware PXE)",
}


@dataclass(frozen=True)
class DemoPC:
    """One PC of the demo rack."""

    name: str
    firmware: Firmware
    mac: str

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.firmware]


def parse_pcs(text: str) -> tuple[DemoPC, ...]:
    """``bios,uefi-secureboot`` -> the demo PCs (a kind given twice gives ``bios``, ``bios-2``); ValueError."""
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    if not kinds:
        raise ValueError("no PCs given (e.g. bios,uefi-secureboot)")
    if len(kinds) > MAX_PCS:
        raise ValueError(f"{len(kinds)} PCs: at most {MAX_PCS}")
    pcs: list[DemoPC] = []
    for index, kind in enumerate(kinds, start=1):
        if kind not in get_args(Firmware):
            raise ValueError(f"unknown PC kind {kind!r} (one of {', '.join(get_args(Firmware))})")
        count = kinds[:index].count(kind)
        name = kind if count == 1 else f"{kind}-{count}"
        pcs.append(DemoPC(name, cast(Firmware, kind), f"{MAC_PREFIX}{index:02x}"))
    return tuple(pcs)


DEFAULT_PCS = parse_pcs("bios,uefi-secureboot")


@dataclass(frozen=True)
class PCResult:
    """How one demo PC did, from its serial console and from the server's records."""

    pc: DemoPC
    milestones: dict[str, float]  # label -> seconds since power-on
    error: str | None = None  # why it did not call back
    state: str | None = None  # the server's machine state
    boots: int | None = None  # boot scripts/configs the server issued it
    firmware: str | None = None  # from its hello: "bios" or "uefi"
    secure_boot: bool | None = None
    kernel: str | None = None
    serial_log: Path | None = None

    @property
    def called_back(self) -> bool:
        return CALLBACK in self.milestones and self.error is None

    @property
    def seconds_to_callback(self) -> float | None:
        return self.milestones.get(CALLBACK)


@dataclass(frozen=True)
class DemoResult:
    """The demo's outcome: every PC, the lab namespace, the server's URL, exit code and logged problems."""

    pcs: tuple[PCResult, ...]
    namespace: str
    server_url: str
    seconds: float  # from the start of the demo until every PC was done (without --keep-running's wait)
    server_exit: int | None = None
    server_problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return bool(self.pcs) and all(pc.called_back for pc in self.pcs)

    def failures(self) -> list[str]:
        """One line per PC that did not call back: its name and the first line of the reason."""
        return [f"{r.pc.name}: {(r.error or 'no callback').splitlines()[0]}" for r in self.pcs if not r.called_back]


# ------------------------------------------------------------------------------------------------ milestones
CALLBACK = "callback"
POWERED_OFF = "powered off"
POWER_OFF_TIMEOUT = 30.0  # the test /init powers off right after its callback
FAIL_RE = re.compile(r"No bootable device|Could not boot|Kernel panic|PROVISION-CALLBACK-FAILED[^\r\n]*|Access Denied")


@dataclass(frozen=True)
class Milestone:
    """A step of a network boot as seen on the PC's serial console; ``text`` is formatted with the groups."""

    label: str
    pattern: re.Pattern[str]
    text: str


def steps_for(firmware: Firmware, mac: str) -> tuple[Milestone, ...]:
    """The serial-console milestones of a demo PC: DHCP, boot file, iPXE script or GRUB config, kernel, callback."""
    m = re.escape(mac)
    kernel = Milestone("kernel", re.compile(r"Linux version (\S+)"), "kernel: Linux {0} starts")
    callback = Milestone(CALLBACK, re.compile(r"PROVISION-CALLBACK-OK"), "callback: POST /api/v1/hello accepted")
    if firmware == "bios":
        return (
            Milestone("DHCP", re.compile(r"net0: (\d+\.\d+\.\d+\.\d+)/"), "DHCP: address {0} (iPXE NIC ROM)"),
            Milestone("boot file", re.compile(r"undionly\.kpxe : (\d+) bytes"), "boot file: undionly.kpxe, TFTP"),
            Milestone(
                "boot script", re.compile(rf"{m}\.ipxe : \d+ bytes \[script\]"), f"boot script: /boot/{mac}.ipxe, HTTP"
            ),
            kernel,
            callback,
        )
    return (
        Milestone(
            "DHCP", re.compile(r"Station IP address is (\d+\.\d+\.\d+\.\d+)"), "DHCP: address {0} (firmware PXE)"
        ),
        Milestone(
            "boot file",
            re.compile(r"NBP filename is (\S+)[\s\S]*?NBP file downloaded successfully"),
            "boot file: {0} (shim), TFTP",
        ),
        Milestone(
            "GRUB config",
            re.compile(rf"provision: {m} -> live environment"),
            f"GRUB config: grub/hosts/{mac}.cfg, TFTP",
        ),
        kernel,
        callback,
    )


class Booting(Protocol):
    """What a Follower reads of a PC (``provision.lab.PC``)."""

    @property
    def running(self) -> bool: ...

    @property
    def elapsed(self) -> float: ...

    def serial_text(self) -> str: ...


@dataclass
class Follower:
    """Follows one PC through its milestones; ``poll()`` returns what happened since the last poll."""

    name: str
    pc: Booting
    steps: Sequence[Milestone]
    times: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    finished: bool = False

    def poll(self, timeout: float) -> list[tuple[float, str]]:
        """New milestones (seconds since power-on, text). Fails the PC on a failure message on its console, QEMU
        stopping early, or no callback ``timeout`` seconds after power-on; ends once it powered off."""
        if self.finished:
            return []
        exited = not self.pc.running  # before reading: all it printed is then in the text
        text, seconds = self.pc.serial_text(), self.pc.elapsed
        news = []
        while len(self.times) < len(self.steps):
            step = self.steps[len(self.times)]
            found = step.pattern.search(text)
            if found is None:
                break
            self.times[step.label] = seconds
            news.append((seconds, step.text.format(*found.groups())))
        if len(self.times) == len(self.steps):
            if exited:
                self.times[POWERED_OFF] = seconds
                news.append((seconds, "powered off"))
                self.finished = True
            elif seconds - self.times[CALLBACK] > POWER_OFF_TIMEOUT:
                self.finished = True  # called back: the demo stops it
            return news
        waiting = self.steps[len(self.times)].label
        failed = FAIL_RE.search(text)
        if failed:
            self.error = f"printed {failed.group(0).strip()!r} while waiting for {waiting}"
        elif exited:
            self.error = f"QEMU stopped before {waiting}"
        elif seconds > timeout:
            self.error = f"no {waiting} within {timeout:.0f} s"
        if self.error is not None:
            self.finished = True
            news.append((seconds, f"FAILED: {self.error}"))
        return news


def follow(followers: Sequence[Follower], progress: Progress, timeout: float, poll: float = 0.2) -> None:
    """Poll every PC until each one powered off after its callback, or failed; report milestones as they come."""
    width = max((len(f.name) for f in followers), default=0)
    while True:
        for follower in followers:
            for seconds, text in follower.poll(timeout):
                progress(f"pc {follower.name:<{width}} {seconds:5.1f} s  {text}")
        if all(f.finished for f in followers):
            return
        time.sleep(poll)


# ------------------------------------------------------------------------------------------------ run
def demo_config(lab: Lab) -> dict[str, Any]:
    """provision's config in the lab: full DHCP on the bridge, chain_ipxe_roms so an iPXE NIC ROM takes the
    chain a vendor PXE ROM takes (undionly.kpxe first), the test kernel command line."""
    return {
        "ports": {"http": HTTP_PORT},
        "boot": {"cmdline": CMDLINE, "chain_ipxe_roms": True},
        "dhcp": {
            "range_start": str(lab.host(100)),
            "range_end": str(lab.host(200)),
            "netmask": str(lab.network.netmask),
        },
    }


def run_demo(
    workdir: Path,
    *,
    pcs: Sequence[DemoPC] = DEFAULT_PCS,
    cache_dir: Path = DEFAULT_CACHE,
    progress: Progress = lambda line: None,
    keep_running: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> DemoResult:
    """Boot root, lab, ``provision serve``, the PCs in parallel to their callback, the server's view.

    Raises LabUnavailable (what is missing, which Debian package) before touching anything; LabError or
    BootFilesError when the lab or the boot files fail. A PC that fails is reported in the result. SIGTERM
    is handled like Ctrl-C (KeyboardInterrupt) so everything is cleaned up either way. ``keep_running``:
    provision keeps serving after the boots until Ctrl-C / SIGTERM (the PCs are off).
    """
    if not pcs:
        raise LabError("the demo needs at least one PC")
    missing = netboot_missing([pc.firmware for pc in pcs])
    if missing:
        raise LabUnavailable(missing)
    began = time.monotonic()
    with _sigterm_interrupts():
        progress("boot root: Debian's iPXE, shim, signed GRUB and kernel, and a test initramfs (first run: ~80 MB)")
        root = prepare_netboot_root(workdir / "boot", cache_dir=cache_dir)
        rom = qemu_roms(cache_dir=cache_dir) / "pxe-virtio.rom" if any(pc.firmware == "bios" for pc in pcs) else None
        progress(f"boot root ready in {time.monotonic() - began:.1f} s (kernel {root.kernel_release})")
        with Lab(workdir=workdir / "lab") as lab:
            progress(f"lab: network namespace {lab.name}, bridge {lab.bridge} {lab.cidr}")
            server = LabServer.start(lab, root.dest, demo_config(lab), dhcp="full")
            progress(
                f"server: provision serve (pid {server.proc.pid}) on {lab.bridge}: full DHCP {lab.host(100)}-"
                f"{lab.host(200)}, TFTP {server.ports['tftp']}, HTTP {server.url}"
            )
            followers = []
            for pc in pcs:
                qemu = lab.add_pc(
                    pc.name,
                    firmware=pc.firmware,
                    mac=pc.mac,
                    rom=rom if rom is not None and pc.firmware == "bios" else False,
                )
                progress(f"pc {pc.name}: {pc.description}, MAC {pc.mac}: powered on")
                followers.append(Follower(pc.name, qemu, steps_for(pc.firmware, pc.mac)))
            follow(followers, progress, timeout)
            for qemu in lab.pcs:
                qemu.stop()
            results = tuple(
                _server_view(server, pc, watch, qemu.serial_log, progress)
                for pc, watch, qemu in zip(pcs, followers, lab.pcs, strict=True)
            )
            seconds = time.monotonic() - began
            if keep_running and server.running:
                _serve_until_interrupted(lab, server, progress)
            code = server.stop()
            progress(f"server stopped (exit {code})")
        progress(f"lab {lab.name} removed: namespace, bridge, taps, processes")
    return DemoResult(results, lab.name, server.url, seconds, server.returncode, tuple(server.problems()))


def _server_view(server: LabServer, pc: DemoPC, watch: Follower, serial: Path, progress: Progress) -> PCResult:
    """The machine as the server recorded it (state, boots) and what its hello said (firmware, Secure Boot)."""
    machine = server.machine(pc.mac)
    hellos = [e["detail"] for e in server.events(pc.mac) if e["kind"] == "hello"] if machine else []
    boot: dict[str, Any] = hellos[-1].get("boot", {}) if hellos else {}
    result = PCResult(
        pc,
        dict(watch.times),
        watch.error,
        machine["state"] if machine else None,
        machine["boots"] if machine else None,
        boot.get("firmware"),
        boot.get("secure_boot"),
        boot.get("kernel"),
        serial,
    )
    if machine is None:
        progress(f"server: {pc.mac} ({pc.name}) not recorded (it was issued no boot script or GRUB config)")
    else:
        hello = (
            f"hello: firmware {result.firmware}, Secure Boot {_on_off(result.secure_boot)}, kernel {result.kernel}"
            if hellos
            else "no hello"
        )
        progress(f"server: {pc.mac} ({pc.name}) state {result.state}, {result.boots} boot(s), {hello}")
    return result


def _serve_until_interrupted(lab: Lab, server: LabServer, progress: Progress) -> None:
    progress(f"provision keeps serving at {server.url} inside network namespace {lab.name} (the PCs are off)")
    progress(f"  try:   ip netns exec {lab.name} curl -s {server.url}/api/v1/machines")
    progress(f"  enter: ip netns exec {lab.name} bash     (server log: {server.log_path})")
    progress("Ctrl-C or SIGTERM stops it")
    try:
        while server.running:
            time.sleep(0.5)
        progress(f"provision serve exited by itself ({server.proc.returncode})")
    except KeyboardInterrupt:
        progress("stopping")


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (like Ctrl-C) meanwhile, so the lab is cleaned up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------------ report
def _on_off(value: bool | None) -> str:
    return "-" if value is None else "on" if value else "off"


def result_table(result: DemoResult) -> list[str]:
    """The final table: MAC, PC, firmware and Secure Boot (from its hello), state, seconds to callback."""
    rows = [("MAC", "PC", "FIRMWARE", "SECURE BOOT", "STATE", "CALLBACK")]
    for r in result.pcs:
        seconds = r.seconds_to_callback
        callback = f"{seconds:.1f} s" if seconds is not None and r.called_back else "failed"
        rows.append((r.pc.mac, r.pc.name, r.firmware or "-", _on_off(r.secure_boot), r.state or "-", callback))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def summary_line(result: DemoResult) -> str:
    """One line: how many PCs reached the live environment's callback, and what the live environment does."""
    good = sum(r.called_back for r in result.pcs)
    verdict = "OK" if result.ok else "FAILED"
    return (
        f"{verdict}: {good} of {len(result.pcs)} PCs network-booted to the live environment and called back "
        f"({result.seconds:.0f} s from start; {LIVE_NOTE})"
    )
