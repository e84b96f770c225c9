"""Running the chosen firmware method on a drive (never the overwrite: ``erasure.overwrite`` does that), and
preparing the drive before the choice (hidden areas removed, a frozen ATA drive unfrozen).

Each tool flag is named where it comes from (the tool's man page in Debian 13: nvme-cli 2.13, hdparm 9.65,
sg3_utils 1.48, util-linux's rtcwake). Every call is an argv list through the ``Runner``; the argvs are
returned for the drive's record. A failure raises ``MethodFailed`` with the device, the method, the argv,
the exit status, the stderr tail and the reason in plain words.

The ATA security password is the fixed, documented ``PASSWORD`` ("provision-erase"): SECURITY ERASE UNIT
needs a user password set first, and a random one lost in a crash (power cut, reboot mid-erase) would leave
the drive locked for good; with a known one anybody can unlock it (``hdparm --user-master u
--security-disable provision-erase DEV``). It protects nothing, so it is no secret and is recorded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from provision.agent.erasure.drives import DriveInfo, inspect_ata
from provision.agent.erasure.hdparm import parse_identify, parse_sanitize_status
from provision.agent.erasure.methods import Choice
from provision.agent.erasure.nvme import parse_sanitize_log
from provision.agent.erasure.record import PASSWORD  # documented on purpose (docs/erasure.md), no secret
from provision.agent.erasure.tools import MethodFailed, Ran, run_tool
from provision.agent.inventory import Runner
from provision.wire.erasure import ErasePlan

__all__ = [
    "PASSWORD", "POLL", "MethodFailed", "Prepared", "after_suspend", "needs_unfreeze", "prepare_drive", "run_method",
    "suspend",
]  # fmt: skip

log = logging.getLogger(__name__)

POLL = 10.0  # seconds between progress polls of a sanitize
SUSPEND_SECONDS = 5  # rtcwake's alarm: the PC sleeps this long, and its drives lose power (unfreezing them)
# An erase's deadline when the drive gives no estimate: an hour, plus the time to write it at 20 MB/s
_BASE, _RATE = 3600.0, 20e6
_QUIET_POLLS = 3  # polls without any sign of the operation before it is judged not started

Progress = Callable[[float | None], None]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Prepared:
    """What ``prepare_drive`` did: the drive as it is now, the commands it ran, notes for the record and
    whether a frozen drive was unfrozen (None: it was not frozen, or unfreezing was not needed)."""

    info: DriveInfo
    commands: list[list[str]]
    notes: list[str]
    unfrozen: bool | None = None


def _rescan(device: str, log_id: str = "") -> None:
    """Ask the kernel to read the drive's size again after an HPA/DCO change (sysfs, no tool)."""
    try:
        Path(f"/sys/block/{device}/device/rescan").write_text("1\n")
    except OSError as exc:
        log.warning("%s: %s: rescan after the HPA/DCO change failed: %s", log_id, device, exc.strerror or exc)


def _remove_hidden(info: DriveInfo, run: Runner, rescan: Callable[[str, str], None], log_id: str) -> Prepared:
    commands: list[list[str]] = []
    notes: list[str] = []
    dev = str(info.path)
    if info.hidden.hpa and info.native_max is not None:
        # hdparm(8) -N: "p" makes the new max permanent; the long flag is hdparm's own guard for -N writes
        ran = run_tool(run, ["hdparm", "--yes-i-know-what-i-am-doing", "-N", f"p{info.native_max.native}", dev])
        commands.append(ran.argv)
        if not ran.ok or ran.aborted:
            notes.append(f"the HPA could not be removed ({ran.tail() or ran.meaning}): its sectors stay hidden")
    if info.hidden.dco:
        # hdparm(8) --dco-restore: back to the factory capacity (refused while an HPA is set: so after -N)
        ran = run_tool(run, ["hdparm", "--yes-i-know-what-i-am-doing", "--dco-restore", dev])
        commands.append(ran.argv)
        if not ran.ok or ran.aborted:
            notes.append(f"the DCO could not be restored ({ran.tail() or ran.meaning}): its sectors stay hidden")
    if not commands:
        return Prepared(info, commands, notes)
    rescan(info.device, log_id)
    after = inspect_ata(info, run, log_id=log_id)
    gone = not after.hidden.hpa and not after.hidden.dco
    sector = after.logical_sector
    size = after.native_max.visible * sector if after.native_max is not None else info.size_bytes
    after = replace(after, hidden=replace(after.hidden, removed=gone), size_bytes=max(size, info.size_bytes))
    notes.append("hidden areas removed: the whole native capacity is erased" if gone
                 else "hidden areas still present after the removal (the drive may need a power cycle)")  # fmt: skip
    return Prepared(after, commands, notes)


def needs_unfreeze(info: DriveInfo, plan: ErasePlan) -> bool:
    """Only when the security erase would be chosen: a drive with SANITIZE does not need it (sleeping the PC
    costs its network link for a while)."""
    ata = info.ata
    return bool(plan.method == "auto" and plan.unfreeze and ata is not None and ata.frozen
                and ata.security_supported and not (ata.sanitize_crypto or ata.sanitize_block))  # fmt: skip


def suspend(run: Runner, sleep: Sleep, log_id: str = "") -> Ran:
    """Suspend the PC to RAM once, for every frozen drive (``engine.erase_drives`` calls it before any drive's
    erase starts: a suspend during another drive's SECURITY ERASE UNIT would cut it)."""
    # rtcwake(8): -m mem suspends to RAM, -s 5 wakes the PC after 5 seconds; the drives lose power and come
    # back unfrozen (the firmware's SECURITY FREEZE LOCK is only sent at boot)
    ran = run_tool(run, ["rtcwake", "-m", "mem", "-s", str(SUSPEND_SECONDS)], timeout=120.0)
    log.info("%s: suspend to RAM to unfreeze the drives: %s", log_id, "done" if ran.ok else ran.tail() or ran.meaning)
    sleep(2.0)  # the disks' links come back after the resume
    return ran


def after_suspend(info: DriveInfo, suspended: Ran, run: Runner, *, frozen: bool, log_id: str = "") -> Prepared:
    """An ATA drive asked again (``hdparm -I``) after the suspend; ``frozen``: it was, and the notes say
    whether it still is."""
    identify = run_tool(run, ["hdparm", "-I", str(info.path)])
    ata = parse_identify(identify.stdout) if identify.ok else None
    after = replace(info, ata=ata) if ata is not None else info
    if not frozen:
        return Prepared(after, [identify.argv], [])
    unfrozen = ata is not None and ata.frozen is False
    if not suspended.ok:
        note = f"the suspend to RAM failed ({suspended.tail() or suspended.meaning}): the drive stays frozen"
    else:
        note = (
            "the drive was unfrozen by a suspend to RAM"
            if unfrozen
            else "the drive is still frozen after a suspend to RAM"
        )
    log.info("%s: %s: unfreeze by suspend to RAM: %s", log_id, info.device, "done" if unfrozen else "still frozen")
    return Prepared(after, [suspended.argv, identify.argv], [note], unfrozen)


def _unlock(info: DriveInfo, run: Runner, log_id: str) -> Prepared:
    """A drive locked by an ATA password refuses reads and writes (the marker, the read-back, an overwrite): try
    provision's own password, which an interrupted erase of ours left, then ask the drive again."""
    dev = str(info.path)
    # hdparm(8): --security-unlock PWD unlocks the drive until its next power-off (the password stays set)
    ran = run_tool(run, ["hdparm", "--user-master", "u", "--security-unlock", PASSWORD, dev])
    identify = run_tool(run, ["hdparm", "-I", dev])
    ata = parse_identify(identify.stdout) if identify.ok else None
    after = replace(info, ata=ata) if ata is not None else info
    unlocked = ran.ok and not ran.aborted and ata is not None and ata.locked is False
    why = ran.tail() or ran.meaning or "refused"
    note = ("the drive was locked by provision's erase password (an interrupted erase) and is unlocked" if unlocked
            else f"the drive is locked by an ATA password that is not provision's ({why}): it refuses reads and "
            "writes; unlock it with its password, or set it aside")  # fmt: skip
    log.info("%s: %s: %s", log_id, info.device, note)
    return Prepared(after, [ran.argv, identify.argv], [note])


def prepare_drive(
    info: DriveInfo, plan: ErasePlan, *, run: Runner, rescan: Callable[[str, str], None] = _rescan,
    log_id: str = "",
) -> Prepared:  # fmt: skip
    """Unlock a drive locked by provision's password, remove hidden areas (``plan.hidden_areas == "remove"``),
    then ask the drive again. Never raises for a tool's failure: the notes say what did not work, and
    ``methods.choose_method`` falls back accordingly. (A frozen drive is unfrozen before, once for the
    machine: ``suspend`` and ``after_suspend``.)"""
    prepared = Prepared(info, [], [])
    if info.ata is not None and info.ata.locked and not info.ata.frozen:  # frozen: SECURITY UNLOCK is refused
        prepared = _unlock(info, run, log_id)
    info = prepared.info
    if info.ata is not None and plan.hidden_areas == "remove" and (info.hidden.hpa or info.hidden.dco):
        removed = _remove_hidden(info, run, rescan, log_id)
        return Prepared(removed.info, [*prepared.commands, *removed.commands], [*prepared.notes, *removed.notes])
    return prepared


class _Run:
    """The calls of one method: each argv kept, a failure raised with the method's facts."""

    def __init__(self, choice: Choice, info: DriveInfo, run: Runner) -> None:
        self.choice, self.info, self.run = choice, info, run
        self.commands: list[list[str]] = []

    def __call__(self, argv: list[str], *, timeout: float = 60.0) -> Ran:
        ran = run_tool(self.run, argv, timeout=timeout)
        self.commands.append(ran.argv)
        return ran

    def must(self, argv: list[str], reason: str, *, timeout: float = 60.0) -> Ran:
        ran = self(argv, timeout=timeout)
        if not ran.ok or ran.aborted:
            raise self.failed(reason + (" (the drive aborted it)" if ran.ok else ""), ran)
        return ran

    def failed(self, reason: str, ran: Ran | None = None, *, password_left: bool = False) -> MethodFailed:
        return MethodFailed(self.info.device, self.choice.method, reason, ran, commands=list(self.commands),
                            password_left=password_left)  # fmt: skip


def _deadline(info: DriveInfo, minutes: int | None = None) -> float:
    """Seconds an erase may take: twice the drive's own estimate plus 10 minutes, else from its size."""
    if minutes:
        return minutes * 60 * 2 + 600.0
    return _BASE + info.size_bytes / _RATE


def _poll(
    call: _Run, argv: list[str], read: Callable[[Ran], tuple[str, float | None]], *, deadline: float,
    sleep: Sleep, progress: Progress,
) -> None:  # fmt: skip
    """Poll ``argv`` until ``read`` says "done" (or "failed", or the deadline passes)."""
    waited, quiet = 0.0, 0
    call.commands.append(list(argv))  # the poll's argv once in the record, however often it ran
    while True:
        ran = run_tool(call.run, argv)
        state, fraction = read(ran) if ran.ok else ("unknown", None)
        if state == "done":
            progress(1.0)
            return
        if state == "failed":
            raise call.failed("the drive reports that the operation failed: set the drive aside", ran)
        if state == "running":
            progress(fraction)
            quiet = 0
        else:
            quiet += 1
            if quiet >= _QUIET_POLLS:
                raise call.failed("the drive accepted the command but never showed it running or done", ran)
        if waited >= deadline:
            raise call.failed(f"still not done after {waited / 60:.0f} minutes: set the drive aside", ran)
        sleep(POLL)
        waited += POLL


def _nvme_log(ran: Ran) -> tuple[str, float | None]:
    log_ = parse_sanitize_log(ran.stdout)
    states = {"completed": "done", "failed": "failed", "in-progress": "running"}
    return states.get(log_.status, "unknown"), log_.progress


def _ata_status(ran: Ran) -> tuple[str, float | None]:
    status = parse_sanitize_status(ran.stdout)
    if status.failed:
        return "failed", None
    if status.state == "in-progress":
        return "running", status.progress
    return ("done" if status.completed else "unknown"), None


def _nvme_cli(info: DriveInfo) -> tuple[int, int]:
    """nvme-cli's version from the drive's record ("nvme version 2.13 (git 2.13)"); (0, 0) when unknown."""
    found = re.match(r"nvme version (\d+)\.(\d+)", info.tools.get("nvme-cli", ""))
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _nvme(call: _Run, info: DriveInfo, *, sleep: Sleep, progress: Progress) -> None:
    method = call.choice.method
    if method.startswith("nvme-format"):
        ses = "2" if method == "nvme-format-crypto" else "1"
        seconds = _deadline(info)
        # nvme-format(1): --ses Secure Erase Setting (1 user data erase, 2 cryptographic erase); --force skips
        # the confirmation; --timeout in milliseconds (the format can outlast the default admin timeout);
        # all three are in "nvme format --help" of nvme-cli 2.3 (Debian 12) and later
        call.must(["nvme", "format", str(info.path), f"--ses={ses}", "--force", f"--timeout={int(seconds * 1000)}"],
                  "the NVMe Format NVM command failed", timeout=seconds + 60)  # fmt: skip
        progress(1.0)
        return
    sanact = {"nvme-sanitize-crypto": "4", "nvme-sanitize-block": "2", "nvme-sanitize-overwrite": "3"}[method]
    ctrl = str(info.controller)
    # nvme-sanitize(1): --sanact 2 block erase, 3 overwrite, 4 crypto erase (on the controller's character
    # device). --force (skip the warning and its 10 s pause) is refused as unknown by Debian 12's nvme-cli 2.3
    # ("nvme sanitize --help" has no --force there): given only to a version known to take it
    force = ["--force"] if _nvme_cli(info) >= (2, 4) else []
    call.must(["nvme", "sanitize", ctrl, f"--sanact={sanact}", *force], "the NVMe Sanitize command failed")
    # nvme-sanitize-log(1): -o json gives sprog and sstat (sstat's status in bits 0-2)
    _poll(call, ["nvme", "sanitize-log", ctrl, "-o", "json"], _nvme_log, deadline=_deadline(info),
          sleep=sleep, progress=progress)  # fmt: skip


def _ata_security(call: _Run, info: DriveInfo, password: str, progress: Progress) -> None:
    ata = info.ata
    assert ata is not None
    dev = str(info.path)
    enhanced = call.choice.method == "ata-security-erase-enhanced"
    if not ata.locked:  # a locked drive is erased with the password it has (ours, if a run of ours was cut)
        # hdparm(8): --user-master u --security-set-pass PWD sets the user password SECURITY ERASE UNIT needs
        call.must(["hdparm", "--user-master", "u", "--security-set-pass", password, dev],
                  "the drive refused the erase password (SECURITY SET PASSWORD)")  # fmt: skip
        identify = call(["hdparm", "-I", dev])
        now = parse_identify(identify.stdout) if identify.ok else None
        if now is None or now.security_enabled is not True:  # hdparm's exit status alone proves nothing
            raise call.failed("the drive did not take the erase password (its security is still not enabled)",
                              identify)  # fmt: skip
    progress(None)
    minutes = ata.enhanced_erase_minutes if enhanced else ata.erase_minutes
    # hdparm(8): --security-erase / --security-erase-enhanced PWD (SECURITY ERASE PREPARE + ERASE UNIT)
    flag = "--security-erase-enhanced" if enhanced else "--security-erase"
    ran = call(["hdparm", "--user-master", "u", flag, password, dev], timeout=_deadline(info, minutes))
    if ran.ok and not ran.aborted:
        identify = call(["hdparm", "-I", dev])
        after = parse_identify(identify.stdout) if identify.ok else None
        if after is not None and after.security_enabled is False:  # the erase clears the password: proof it ran
            progress(1.0)
            return
        reason = ("the erase reported success but the drive did not answer 'hdparm -I' after it" if after is None
                  else "the erase reported success but the drive cannot say its password is gone"
                  if after.security_enabled is None
                  else "the erase reported success but the drive still has a password set")  # fmt: skip
    else:
        reason = "SECURITY ERASE UNIT failed" + (" (the drive aborted it)" if ran.ok else "")
    # hdparm(8): --security-disable PWD clears the user password, so the drive is not left locked
    undo = call(["hdparm", "--user-master", "u", "--security-disable", password, dev])
    removed = undo.ok and not undo.aborted
    left = ("the password was removed again" if removed else
            f"the drive may be left with the password '{password}': unlock it with "
            f"'hdparm --user-master u --security-disable {password} {dev}'")  # fmt: skip
    raise call.failed(f"{reason}; {left}", ran, password_left=not removed)


def _ata_sanitize(call: _Run, info: DriveInfo, *, sleep: Sleep, progress: Progress) -> None:
    flags = {"ata-sanitize-crypto": "--sanitize-crypto-scramble", "ata-sanitize-block": "--sanitize-block-erase"}
    flag = flags.get(call.choice.method)
    if flag is None:
        raise call.failed("ATA SANITIZE OVERWRITE is not run by provision (an overwrite pass is used instead)")
    dev = str(info.path)
    # hdparm(8): --sanitize-crypto-scramble / --sanitize-block-erase need --yes-i-know-what-i-am-doing;
    # --sanitize-status reads the progress ("State: SD2 ... Progress: 0x41c2 (25%)")
    call.must(["hdparm", "--yes-i-know-what-i-am-doing", flag, dev], "the ATA SANITIZE command failed")
    _poll(call, ["hdparm", "--sanitize-status", dev], _ata_status, deadline=_deadline(info), sleep=sleep,
          progress=progress)  # fmt: skip


def _scsi(call: _Run, info: DriveInfo, *, sleep: Sleep, progress: Progress) -> None:
    # sg_sanitize(8): --crypto / --block / --overwrite (with --zero: a pattern of zeros); --quick skips the 15 s
    # pause; --early returns once the drive started (IMMED), then sg_requests(8) --progress polls it
    action = {"scsi-sanitize-crypto": ["--crypto"], "scsi-sanitize-block": ["--block"],
              "scsi-sanitize-overwrite": ["--overwrite", "--zero"]}[call.choice.method]  # fmt: skip
    dev = str(info.path)
    call.must(["sg_sanitize", "--quick", "--early", *action, dev], "the SCSI SANITIZE command failed")

    def read(ran: Ran) -> tuple[str, float | None]:
        # "Progress indication: 47.36% done" while it runs; no progress line once the drive is ready again
        for line in ran.stdout.splitlines():
            if "progress indication" in line.lower():
                digits = line.split(":", 1)[-1].strip().split("%", 1)[0]
                try:
                    return "running", float(digits) / 100
                except ValueError:
                    return "running", None
        return "done", None

    _poll(call, ["sg_requests", "--progress", dev], read, deadline=_deadline(info), sleep=sleep,
          progress=progress)  # fmt: skip


def run_method(
    choice: Choice, info: DriveInfo, *, run: Runner, sleep: Sleep, progress: Progress, password: str = PASSWORD,
    log_id: str = "",
) -> list[list[str]]:  # fmt: skip
    """Run ``choice`` (a firmware method) on ``info``; return every argv run. Raises ``MethodFailed``
    (``password_left``: an ATA erase password could not be removed again)."""
    call = _Run(choice, info, run)
    method = choice.method
    log.info("%s: %s: erasing with %s (NIST %s)", log_id, info.device, method, choice.category)
    if method == "overwrite":
        raise call.failed("the overwrite is not a firmware method: erasure.overwrite runs it")
    if method.startswith("nvme-"):
        _nvme(call, info, sleep=sleep, progress=progress)
    elif method.startswith("ata-security-erase"):
        _ata_security(call, info, password, progress)
    elif method.startswith("ata-sanitize"):
        _ata_sanitize(call, info, sleep=sleep, progress=progress)
    elif method.startswith("scsi-sanitize"):
        _scsi(call, info, sleep=sleep, progress=progress)
    return call.commands
