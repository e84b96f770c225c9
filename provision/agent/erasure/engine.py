"""Every drive of the machine erased and verified, drive by drive, in parallel: ``erase_drives``.

Which drives: every disk lsblk lists, except the live medium (the names in ``live``), removable and USB
drives (not the PC's own: a card reader, the technician's stick) and loop, zram, RAM and optical devices; each
is named in ``skipped`` with why. At most ``MAX_DRIVES`` drives (the wire's limit); more are skipped, said so.

Per drive, in its own thread (at most ``WORKERS`` at once):

1. inspect (``drives.inspect_drive``: identity, interface, capabilities, hidden areas, SMART, tool versions);
2. prepare (``commands.prepare_drive``: hidden areas removed when the plan says so, a frozen drive unfrozen);
3. choose the method (``methods.choose_method``: the strongest the drive can do, NIST Purge where it can);
4. the sample to read back (``verify.sample_blocks``, seeded by the serial; every byte with ``verify: full``),
   and, for a method that leaves noise (``changed``), its fingerprint BEFORE the method;
5. the method: a firmware command (``commands.run_method``), or the agent's own overwrite; a firmware method
   that fails is replaced by the overwrite, said in ``fallback`` and ``errors`` (the record then says Clear);
6. the read-back (``verify.check``) for the pattern the method leaves: a drive whose command "succeeded" but
   whose read-back finds data is NOT erased;
7. the record (``record.Draft`` -> the wire's ``DriveErasure``), with the reason in plain words when not ok.

``progress(device, stage, fraction)`` is called from the drives' threads (stage ``erasing`` or
``verifying``; fraction None where the tool tells none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from provision.agent.disks import Disk
from provision.agent.erasure.commands import prepare_drive, run_method
from provision.agent.erasure.drive_io import DriveIoError, drive_size, forget_cached
from provision.agent.erasure.drives import DriveInfo, inspect_drive
from provision.agent.erasure.methods import Choice, choose_method
from provision.agent.erasure.overwrite import overwrite
from provision.agent.erasure.record import METHOD_WORDS, Draft, failed, not_verified
from provision.agent.erasure.tools import MethodFailed
from provision.agent.erasure.verify import Fingerprint, check, fingerprint, full_blocks, sample_blocks
from provision.agent.inventory import Runner
from provision.wire.erasure import MAX_DRIVES, DriveErasure, ErasePlan, Skipped

log = logging.getLogger(__name__)

WORKERS = 4
NOT_DRIVES = ("loop", "zram", "ram", "sr", "fd", "nbd", "md", "dm-")  # kernel names of devices that are no drive

Stage = Literal["erasing", "verifying"]
DriveProgress = Callable[[str, Stage, float | None], None]


@dataclass(frozen=True)
class Erased:
    """The drives' records (in the order of the disks) and the disks left alone with why."""

    drives: list[DriveErasure]
    skipped: list[Skipped]

    @property
    def ok(self) -> bool:
        return bool(self.drives) and all(d.ok for d in self.drives)


def skip_reason(disk: Disk, live: set[str]) -> str | None:
    """Why ``disk`` is not erased, in plain words; None: it is erased."""
    if disk.name in live:
        return "the live medium the PC started from (or it holds a mounted file system): not erased"
    if disk.name.startswith(NOT_DRIVES):
        return "a loop, zram, RAM, optical or virtual device, not a drive of the PC: not erased"
    if disk.removable:
        return "removable media (a card reader, a stick): not the PC's own drive, not erased"
    if (disk.transport or "").lower() == "usb":
        return "a USB drive: not the PC's own drive, not erased"
    return None


def erase_drives(
    plan: ErasePlan,
    disks: Sequence[tuple[Disk, Path]],
    *,
    live: set[str],
    run: Runner,
    sleep: Callable[[float], None] = time.sleep,
    progress: DriveProgress | None = None,
    clock: Callable[[], float] = time.time,
    log_id: str = "",
    direct: bool | None = None,
) -> Erased:
    """Erase and verify every drive of ``disks`` but the skipped ones (see the module's docstring)."""
    chosen: list[tuple[Disk, Path]] = []
    skipped: list[Skipped] = []
    for disk, path in disks:
        why = skip_reason(disk, live)
        if why is None and len(chosen) >= MAX_DRIVES:
            why = f"more than {MAX_DRIVES} drives: this one was not erased; erase it on its own"
        if why is None:
            chosen.append((disk, path))
        else:
            skipped.append(Skipped(disk.name[:32], why))
            log.info("%s: %s skipped: %s", log_id, disk.name, why)
    if not chosen:
        return Erased([], skipped)
    job = _Job(plan, run, sleep, progress, clock, log_id, direct)
    log.info("%s: erasing %d drives: %s", log_id, len(chosen), ", ".join(d.name for d, _ in chosen))
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(chosen)), thread_name_prefix="erase") as pool:
        drives = list(pool.map(lambda pair: job.drive(*pair), chosen))
    return Erased(drives, skipped)


@dataclass(frozen=True)
class _Job:
    plan: ErasePlan
    run: Runner
    sleep: Callable[[float], None]
    progress: DriveProgress | None
    clock: Callable[[], float]
    log_id: str
    direct: bool | None

    def tell(self, device: str, stage: Stage, fraction: float | None) -> None:
        if self.progress is not None:
            self.progress(device, stage, fraction)

    def drive(self, disk: Disk, path: Path) -> DriveErasure:
        """One drive's erasure, whatever happens: a bug or an unforeseen error is its reason, not a crash."""
        draft = Draft(disk.name, disk.size_bytes or 0, self.clock(), model=disk.model, serial=disk.serial)
        draft.interface = disk.transport or "unknown"
        draft.rotational = disk.rotational
        try:
            self._erase(disk, path, draft)
        except Exception as exc:
            log.exception("%s: %s: the erasure stopped", self.log_id, disk.name)
            draft.error(f"{type(exc).__name__}: {exc}")
            draft.reason = failed(disk.name, draft.serial, "the erasure stopped", f"{type(exc).__name__}: {exc}")
        record = draft.record(self.clock())
        log.info(
            "%s: %s (serial %s): %s, %s: %s", self.log_id, record.device, record.serial, record.method,
            record.category, "erased and verified" if record.ok else record.reason,
        )  # fmt: skip
        return record

    def _erase(self, disk: Disk, path: Path, draft: Draft) -> None:
        self.tell(disk.name, "erasing", None)
        info = inspect_drive(
            disk.name, path, size_bytes=disk.size_bytes or drive_size(path), transport=disk.transport,
            rotational=disk.rotational, model=disk.model, serial=disk.serial, run=self.run,
        )  # fmt: skip
        self._identity(info, draft)
        prepared = prepare_drive(info, self.plan, run=self.run, sleep=self.sleep)
        info = prepared.info
        self._identity(info, draft)
        draft.commands.extend(prepared.commands)
        for note in prepared.notes:
            log.info("%s: %s: %s", self.log_id, disk.name, note)
        choice = choose_method(self.plan, info)
        # why not stronger, and what the method leaves out (the preparation's notes when it chose a weaker one)
        said = [choice.fallback, choice.note, *(prepared.notes if choice.fallback else [])]
        draft.method, draft.fallback = choice.method, "; ".join(s for s in said if s) or None
        size = drive_size(path)  # after the hidden areas were removed: what the kernel sees now
        draft.size_bytes = size
        if size == 0:  # a faulty drive (or a slot without its medium): nothing can be erased nor read back
            draft.reason = failed(disk.name, draft.serial, "the drive reports a size of 0 bytes", "check it")
            return
        full = self.plan.verify == "full"
        blocks = full_blocks(size) if full else sample_blocks(size, self.plan.sample_percent, info.serial or disk.name)
        pattern = choice.pattern
        before: Fingerprint | None = None
        if pattern == "changed":
            before = fingerprint(path, blocks, direct=self.direct)
        try:
            self._method(choice, info, path, draft)
        except DriveIoError as exc:
            draft.error(str(exc))
            draft.reason = failed(disk.name, draft.serial, f"the {METHOD_WORDS['overwrite']} failed", _io(exc))
            return
        for problem in forget_cached(path):  # what the kernel cached before the erase must not answer later
            log.info("%s: %s: %s", self.log_id, disk.name, problem)
        if draft.method == "overwrite":
            pattern = "zeros"
        self.tell(disk.name, "verifying", 0.0)
        try:
            found = check(
                path, blocks, pattern, before if pattern == "changed" else None, method="full" if full else "sample",
                direct=self.direct, progress=lambda done, total: self.tell(disk.name, "verifying", done / total),
            )  # fmt: skip
        except DriveIoError as exc:
            draft.error(str(exc))
            draft.reason = failed(disk.name, draft.serial, "the read-back failed", _io(exc))
            return
        draft.verification = found
        if not found.ok:
            draft.reason = not_verified(disk.name, draft.serial, draft.method, found)

    def _method(self, choice: Choice, info: DriveInfo, path: Path, draft: Draft) -> None:
        """The chosen method; a firmware method that fails falls back to the overwrite (Clear)."""
        device = info.device
        if choice.method != "overwrite":
            try:
                tell = lambda fraction: self.tell(device, "erasing", fraction)  # noqa: E731
                draft.commands.extend(run_method(choice, info, run=self.run, sleep=self.sleep, progress=tell))
                return
            except MethodFailed as exc:
                draft.error(str(exc))
                if exc.argv:
                    draft.commands.append(list(exc.argv))
                draft.method = "overwrite"
                draft.fallback = (
                    f"the {METHOD_WORDS.get(choice.method, choice.method)} failed ({exc.reason}): "
                    f"overwritten with zeros instead (NIST Clear, not Purge)"
                )
                log.warning("%s: %s: %s; overwriting instead", self.log_id, device, exc)
        overwrite(
            path, direct=self.direct, log_id=self.log_id,
            progress=lambda written, total: self.tell(device, "erasing", written / total if total else 1.0),
        )  # fmt: skip
        draft.passes = 1

    def _identity(self, info: DriveInfo, draft: Draft) -> None:
        draft.interface = info.interface or draft.interface
        draft.vendor, draft.model = info.vendor or draft.vendor, info.model or draft.model
        draft.serial, draft.firmware = info.serial or draft.serial, info.firmware or draft.firmware
        draft.rotational = info.rotational if info.rotational is not None else draft.rotational
        draft.hidden_areas, draft.smart = info.hidden, info.smart
        draft.tools.update(info.tools)


def _io(exc: DriveIoError) -> str:
    """A drive's I/O failure in words: what, where, what the kernel said."""
    if exc.offset is None:
        return f"{exc.what} the drive gave '{exc.strerror}'"
    return f"{exc.what} at byte {exc.offset} gave '{exc.strerror}': the drive has sectors it cannot write or read"
