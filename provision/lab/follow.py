"""Following demo PCs on their serial consoles: the milestones of each phase, failures, and the poll loop.

A demo PC goes through two phases, each followed by one ``Follower``:

- ``imaging``: network boot (DHCP, boot file, iPXE script or GRUB config) -> the live environment (kernel,
  ``PROVISION-LIVE-UP``) -> the agent's imaging plan -> ``PROVISION-AGENT-RESULT done`` (written, verified and
  recorded by the server) -> reboot, which ends QEMU (``-no-reboot``);
- ``own disk``, after the demo powers it on again: network boot -> provision's boot script says "local disk"
  -> the imaged system's first boot (``PROVISION-TINY-FIRSTBOOT``) -> its callback (``-CALLBACK-OK``).

Seconds are counted from the PC's first power-on (``offset``: when the phase's QEMU started). Nothing here
prints: ``follow`` hands every milestone to a callback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from provision.builder.tinyinit import CALLBACK_FAILED, CALLBACK_OK, FIRSTBOOT_MARKER
from provision.builder.tinyinit import FAILED as TINY_FAILED
from provision.lab.qemu import Firmware

IMAGING = "imaging"
OWN_DISK = "own disk"

# Milestone labels: unique over both phases, so one PC's times fit in one dict.
DHCP = "DHCP"
BOOT_FILE = "boot file"
LIVE_BOOT = "live boot"  # the iPXE script or GRUB config sending the PC to the live environment
KERNEL = "kernel"
LIVE_UP = "live environment up"
PLAN = "imaging plan"
VERIFIED = "written + verified"
REBOOT = "reboot"
POWER_ON = "power on"  # the demo powers the PC on again (not a serial milestone)
DHCP_AGAIN = "DHCP again"
BOOT_FILE_AGAIN = "boot file again"
LOCAL_DISK = "local disk"
FIRSTBOOT = "first boot"
CALLBACK = "callback"
POWERED_OFF = "powered off"

POWER_OFF_TIMEOUT = 30.0  # the tiny image powers off right after its callback; else the demo stops it
_LINE = r"[^\r\n]*"
IMAGING_FAIL = re.compile(
    r"No bootable device|Could not boot|Kernel panic|Access Denied|Verification failed"
    rf"|PROVISION-LIVE-(?:AGENT-EXIT|NO-NETWORK|NO-AGENT){_LINE}|PROVISION-AGENT-RESULT (?!done ){_LINE}"
    rf"|server says wait{_LINE}|run \S+ failed{_LINE}"
)
OWN_DISK_FAIL = re.compile(
    r"No bootable device|Kernel panic|Access Denied|Verification failed"
    rf"|{TINY_FAILED}{_LINE}|{CALLBACK_FAILED}{_LINE}|provision: no boot loader found{_LINE}|-> live environment"
)


@dataclass(frozen=True)
class Milestone:
    """A step seen on the serial console; ``text`` is formatted with the regex groups. ``pattern`` None:
    QEMU exited (the guest rebooted or powered off)."""

    label: str
    pattern: re.Pattern[str] | None
    text: str


def _network_steps(firmware: Firmware, again: bool) -> list[Milestone]:
    """DHCP and the boot file: firmware PXE -> shim (UEFI), the iPXE ROM chained to undionly.kpxe (BIOS; on
    a second boot within minutes the server hands the ROM its script directly, so no boot file then)."""
    dhcp, boot_file = (DHCP_AGAIN, BOOT_FILE_AGAIN) if again else (DHCP, BOOT_FILE)
    if firmware == "bios":
        steps = [Milestone(dhcp, re.compile(r"net0: (\d+\.\d+\.\d+\.\d+)/"), "DHCP: address {0} (iPXE NIC ROM)")]
        if not again:
            steps.append(
                Milestone(boot_file, re.compile(r"undionly\.kpxe : \d+ bytes"), "boot file: undionly.kpxe, TFTP")
            )
        return steps
    return [
        Milestone(dhcp, re.compile(r"Station IP address is (\d+\.\d+\.\d+\.\d+)"), "DHCP: address {0} (firmware PXE)"),
        Milestone(
            boot_file,
            re.compile(r"NBP filename is (\S+)[\s\S]*?NBP file downloaded successfully"),
            "boot file: {0} (shim), TFTP",
        ),
    ]


def _script(firmware: Firmware, mac: str) -> str:
    return f"boot script /boot/{mac}.ipxe (HTTP)" if firmware == "bios" else f"GRUB config grub/hosts/{mac}.cfg (TFTP)"


def imaging_steps(firmware: Firmware, mac: str) -> tuple[Milestone, ...]:
    """Blank PC -> live environment -> imaged -> reboot (QEMU exits)."""
    m = re.escape(mac)
    return (
        *_network_steps(firmware, again=False),
        Milestone(LIVE_BOOT, re.compile(rf"provision: {m} -> live environment"), f"{_script(firmware, mac)}: live"),
        Milestone(KERNEL, re.compile(r"Linux version (\S+)"), "kernel: Linux {0} starts"),
        Milestone(
            LIVE_UP,
            re.compile(r"PROVISION-LIVE-UP (\S+) (\S+)"),
            "live environment up: {1}, kernel uptime {0} s; the agent probes the PC and says hello",
        ),
        Milestone(PLAN, re.compile(r": run ([0-9a-f]+): (\S+) onto (\S+)"), "imaging plan: image {1} onto {2}"),
        Milestone(VERIFIED, re.compile(r"PROVISION-AGENT-RESULT done (\S+)"), "written + verified: run {0} done"),
        Milestone(REBOOT, None, "reboot: QEMU exits (-no-reboot)"),
    )


def own_disk_steps(firmware: Firmware, mac: str) -> tuple[Milestone, ...]:
    """Powered on again: network boot -> "local disk" -> the imaged system's first boot and callback."""
    return (
        *_network_steps(firmware, again=True),
        Milestone(
            LOCAL_DISK,
            re.compile(rf"provision: {re.escape(mac)} -> local disk"),
            f"{_script(firmware, mac)}: local disk",
        ),
        Milestone(FIRSTBOOT, re.compile(rf"{FIRSTBOOT_MARKER} (\S+)"), "first boot of {0} from its own disk"),
        Milestone(CALLBACK, re.compile(CALLBACK_OK), "callback: POST /api/v1/firstboot accepted"),
    )


class Booting(Protocol):
    """What a Follower reads of a PC (``provision.lab.PC``)."""

    @property
    def running(self) -> bool: ...

    @property
    def elapsed(self) -> float: ...

    def serial_text(self) -> str: ...


@dataclass(frozen=True)
class Event:
    """A milestone reached (or ``FAILED``): seconds since the PC's first power-on, label, text."""

    seconds: float
    label: str
    text: str


FAILED = "FAILED"


@dataclass
class Follower:
    """Follows one phase of one PC through its milestones; ``poll()`` returns what happened since the last poll."""

    name: str
    pc: Booting
    steps: Sequence[Milestone]
    timeout: float  # seconds since this phase's power-on
    fail: re.Pattern[str]
    phase: str = IMAGING
    offset: float = 0.0  # seconds from the PC's first power-on to this phase's
    times: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    finished: bool = False

    @property
    def ok(self) -> bool:
        return self.finished and self.error is None

    def poll(self) -> list[Event]:
        """New milestones. Fails the phase on a failure message on the console, QEMU stopping early, or not
        reaching the end within ``timeout``; a phase whose last step is a serial marker ends when QEMU exits
        (``powered off``) or POWER_OFF_TIMEOUT seconds after it."""
        if self.finished:
            return []
        exited = not self.pc.running  # before reading: all it printed is then in the text
        text, elapsed = self.pc.serial_text(), self.pc.elapsed
        seconds = self.offset + elapsed
        news = []
        while len(self.times) < len(self.steps):
            step = self.steps[len(self.times)]
            found = step.pattern.search(text) if step.pattern is not None else None
            if (step.pattern is None and not exited) or (step.pattern is not None and found is None):
                break
            self.times[step.label] = seconds
            news.append(Event(seconds, step.label, step.text.format(*(found.groups() if found else ()))))
        if len(self.times) == len(self.steps):
            last = self.steps[-1]
            if last.pattern is not None and exited:
                self.times[POWERED_OFF] = seconds
                news.append(Event(seconds, POWERED_OFF, "powered off"))
            if last.pattern is None or exited or seconds - self.times[last.label] > POWER_OFF_TIMEOUT:
                self.finished = True
            return news
        waiting = self.steps[len(self.times)].label
        failed = self.fail.search(text)
        if failed:
            self.error = f"printed {failed.group(0).strip()!r} while waiting for {waiting}"
        elif exited:
            self.error = f"QEMU stopped before {waiting}"
        elif elapsed > self.timeout:
            self.error = f"no {waiting} within {self.timeout:.0f} s ({self.phase})"
        if self.error is not None:
            self.finished = True
            news.append(Event(seconds, FAILED, f"FAILED: {self.error}"))
        return news


OnEvent = Callable[[Follower, Event], None]
NextPhase = Callable[[Follower], "Follower | None"]


def follow(followers: Sequence[Follower], on_event: OnEvent, next_phase: NextPhase, poll: float = 0.2) -> None:
    """Poll every PC until each one is done or failed, handing each milestone to ``on_event`` as it comes.
    When a phase ends, ``next_phase`` may start the PC's next one (a Follower that takes its place)."""
    current = list(followers)
    while True:
        for index, follower in enumerate(current):
            ended_before = follower.finished
            if ended_before:
                continue
            for event in follower.poll():
                on_event(follower, event)
            if follower.finished:
                following = next_phase(follower)
                if following is not None:
                    current[index] = following
        if all(f.finished for f in current):
            return
        time.sleep(poll)


def progress_line(name: str, width: int, event: Event, text: str | None = None) -> str:
    """``pc NAME  SECONDS s  TEXT`` with names padded to ``width``."""
    return f"pc {name:<{width}} {event.seconds:5.1f} s  {text or event.text}"
