"""Every drive of the machine erased and verified, drive by drive, in parallel: ``erase_drives``.

Which drives: every disk lsblk lists, except the live medium (the names in ``live``), removable and USB
drives (not the PC's own: a card reader, the technician's stick) and loop, zram, RAM and optical devices; each
is named in ``skipped`` with why (``skipped``). At most ``MAX_DRIVES`` drives (the wire's limit); more are
skipped, said so. A drive of the PC itself left out (over the limit, or an internal disk that holds the live
medium or a mounted file system) is ``internal``: the machine's erasure is then incomplete.

1. every drive inspected (``drives.inspect_drive``: identity, interface, capabilities, hidden areas, SMART,
   tool versions), in parallel;
2. when a frozen ATA drive needs it (``commands.needs_unfreeze``), ONE suspend to RAM for the machine
   (``commands.suspend``), before any erase starts (a suspend in one drive's thread would cut another drive's
   SECURITY ERASE UNIT), then every ATA drive asked again (``commands.after_suspend``);

then per drive, in its own thread (at most ``WORKERS`` at once):

3. prepare (``commands.prepare_drive``: hidden areas removed when the plan says so);
4. choose the method (``methods.choose_method``: the strongest the drive can do, NIST Purge where it can);
5. the sample to read back (``verify.sample_blocks``, seeded by the serial; every byte with ``verify: full``),
   a random marker written at the start of every piece of it (``drive_io.write_markers``: no piece the
   read-back judges is blank, so a drive that ignores its erase command fails), and, for a method that leaves
   noise (``changed``), its fingerprint BEFORE the method;
6. the method: a firmware command (``commands.run_method``), or the agent's own overwrite; a firmware method
   that fails is replaced by the overwrite, said in ``fallback`` and ``errors`` (the record then says Clear);
   an ATA erase password that could not be removed again leaves the drive not ok, overwritten or not;
7. the read-back (``verify.check``) for the pattern the method leaves: a drive whose command "succeeded" but
   whose read-back finds data is NOT erased;
8. the record (``record.Draft`` -> the wire's ``DriveErasure``), with the reason in plain words when not ok.

The namespaces of one NVMe controller are erased one after the other (a lock per controller held from the
marker to the read-back): a Sanitize is controller-wide, and a namespace cannot be read or written while it
runs. Each namespace gets its own command and its own read-back.

``progress(device, stage, fraction)`` is called from the drives' threads (stage ``erasing`` or
``verifying``; fraction None where the tool tells none). Every log line carries ``log_id`` (the run).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from provision.agent.disks import Disk
from provision.agent.erasure.commands import after_suspend, needs_unfreeze, prepare_drive, run_method, suspend
from provision.agent.erasure.drive_io import DriveIoError, drive_size, forget_cached, write_markers
from provision.agent.erasure.drives import DriveInfo, inspect_drive
from provision.agent.erasure.methods import Choice, choose_method
from provision.agent.erasure.overwrite import overwrite
from provision.agent.erasure.record import METHOD_WORDS, Draft, failed, not_verified
from provision.agent.erasure.tools import MethodFailed
from provision.agent.erasure.verify import Fingerprint, check, fingerprint, full_blocks, pieces, sample_blocks
from provision.agent.inventory import Runner
from provision.wire.erasure import MAX_DRIVES, DriveErasure, ErasePlan, Skipped, erasure_complete

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
        return erasure_complete(self.drives, self.skipped)


def skip(disk: Disk, live: set[str]) -> Skipped | None:
    """Why ``disk`` is not erased, in plain words (``internal``: a drive of the PC itself); None: it is erased."""
    name = disk.name[:32]
    if disk.name.startswith(NOT_DRIVES):
        return Skipped(name, "a loop, zram, RAM, optical or virtual device, not a drive of the PC: not erased")
    outside = disk.removable or (disk.transport or "").lower() == "usb"
    if disk.name in live:
        return Skipped(name, "the live medium the PC started from (or it holds a mounted file system): not erased"
                       + ("" if outside else "; an internal drive of the PC: its erasure is incomplete, erase it "
                          "after starting from another medium"), internal=not outside)  # fmt: skip
    if disk.removable:
        return Skipped(name, "removable media (a card reader, a stick): not the PC's own drive, not erased")
    if outside:
        return Skipped(name, "a USB drive: not the PC's own drive, not erased")
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
        left = skip(disk, live)
        if left is None and len(chosen) >= MAX_DRIVES:
            left = Skipped(disk.name[:32], f"more than {MAX_DRIVES} drives: this one was not erased; erase it on "
                           "its own", internal=True)  # fmt: skip
        if left is None:
            chosen.append((disk, path))
        else:
            skipped.append(left)
            log.info("%s: %s skipped: %s", log_id, disk.name, left.reason)
    if not chosen:
        return Erased([], skipped)
    job = _Job(plan, run, sleep, progress, clock, log_id, direct)
    log.info("%s: erasing %d drives: %s", log_id, len(chosen), ", ".join(d.name for d, _ in chosen))
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(chosen)), thread_name_prefix="erase") as pool:
        states = list(pool.map(lambda pair: job.inspect(*pair), chosen))
        job.unfreeze(states)  # once for the machine, before any erase
        job.lock_controllers(states)
        drives = list(pool.map(job.drive, states))
    return Erased(drives, skipped)


@dataclass
class _State:
    """One drive between its inspection and its erasure: None info when the inspection stopped (the draft
    then holds the reason)."""

    disk: Disk
    path: Path
    draft: Draft
    info: DriveInfo | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    plan: ErasePlan
    run: Runner
    sleep: Callable[[float], None]
    progress: DriveProgress | None
    clock: Callable[[], float]
    log_id: str
    direct: bool | None
    locks: dict[str, threading.Lock] = field(default_factory=dict)  # NVMe controller -> its lock

    def tell(self, device: str, stage: Stage, fraction: float | None) -> None:
        if self.progress is not None:
            self.progress(device, stage, fraction)

    def _stopped(self, state: _State, exc: Exception) -> None:
        log.exception("%s: %s: the erasure stopped", self.log_id, state.disk.name)
        state.draft.error(f"{type(exc).__name__}: {exc}")
        state.draft.reason = failed(state.disk.name, state.draft.serial, "the erasure stopped",
                                    f"{type(exc).__name__}: {exc}")  # fmt: skip

    def inspect(self, disk: Disk, path: Path) -> _State:
        """The drive asked what it is and can do; a bug or an unforeseen error is its reason, not a crash."""
        draft = Draft(disk.name, disk.size_bytes or 0, self.clock(), model=disk.model, serial=disk.serial)
        draft.interface = disk.transport or "unknown"
        draft.rotational = disk.rotational
        state = _State(disk, path, draft)
        self.tell(disk.name, "erasing", None)
        try:
            state.info = inspect_drive(
                disk.name, path, size_bytes=disk.size_bytes or drive_size(path), transport=disk.transport,
                rotational=disk.rotational, model=disk.model, serial=disk.serial, run=self.run, log_id=self.log_id,
            )  # fmt: skip
            self._identity(state.info, draft)
        except Exception as exc:
            self._stopped(state, exc)
        return state

    def unfreeze(self, states: Sequence[_State]) -> None:
        """One suspend to RAM when a frozen drive needs it, then every ATA drive asked again."""
        frozen = {id(s) for s in states if s.info is not None and needs_unfreeze(s.info, self.plan)}
        if not frozen:
            return
        suspended = suspend(self.run, self.sleep, self.log_id)
        for state in states:
            if state.info is None or state.info.ata is None:
                continue
            try:
                after = after_suspend(state.info, suspended, self.run, frozen=id(state) in frozen, log_id=self.log_id)
            except Exception as exc:
                self._stopped(state, exc)
                state.info = None
                continue
            state.info = after.info
            state.draft.commands.extend(after.commands)
            state.notes.extend(after.notes)

    def lock_controllers(self, states: Sequence[_State]) -> None:
        for state in states:
            if state.info is not None and state.info.interface == "nvme":
                self.locks.setdefault(str(state.info.controller), threading.Lock())

    @contextlib.contextmanager
    def _exclusive(self, info: DriveInfo) -> Iterator[None]:
        """The drive's NVMe controller to itself (its other namespaces wait), or nothing to wait for."""
        lock = self.locks.get(str(info.controller)) if info.interface == "nvme" else None
        if lock is None:
            yield
            return
        with lock:
            yield

    def drive(self, state: _State) -> DriveErasure:
        """One drive's erasure, whatever happens: a bug or an unforeseen error is its reason, not a crash."""
        if state.info is not None:
            try:
                self._erase(state, state.info)
            except Exception as exc:
                self._stopped(state, exc)
        record = state.draft.record(self.clock())
        log.info(
            "%s: %s (serial %s): %s, %s: %s", self.log_id, record.device, record.serial, record.method,
            record.category, "erased and verified" if record.ok else record.reason,
        )  # fmt: skip
        return record

    def _erase(self, state: _State, info: DriveInfo) -> None:
        disk, path, draft = state.disk, state.path, state.draft
        prepared = prepare_drive(info, self.plan, run=self.run, log_id=self.log_id)
        info = prepared.info
        self._identity(info, draft)
        draft.commands.extend(prepared.commands)
        notes = [*state.notes, *prepared.notes]
        for note in notes:
            log.info("%s: %s: %s", self.log_id, disk.name, note)
        choice = choose_method(self.plan, info)
        # why not stronger, and what the method leaves out (the preparation's notes when it chose a weaker one)
        said = [choice.fallback, choice.note, *(notes if choice.fallback else [])]
        draft.method, draft.fallback = choice.method, "; ".join(s for s in said if s) or None
        size = drive_size(path)  # after the hidden areas were removed: what the kernel sees now
        draft.size_bytes = size
        if size == 0:  # a faulty drive (or a slot without its medium): nothing can be erased nor read back
            draft.reason = failed(disk.name, draft.serial, "the drive reports a size of 0 bytes", "check it")
            return
        full = self.plan.verify == "full"
        blocks = full_blocks(size) if full else sample_blocks(size, self.plan.sample_percent, info.serial or disk.name)
        with self._exclusive(info):
            self._erase_and_check(disk, path, draft, info, choice, blocks, full)

    def _erase_and_check(
        self, disk: Disk, path: Path, draft: Draft, info: DriveInfo, choice: Choice, blocks: list[tuple[int, int]],
        full: bool,
    ) -> None:  # fmt: skip
        pattern = choice.pattern
        try:  # the marker: no piece the read-back judges is blank, so a drive that ignores the command fails
            write_markers(path, pieces(blocks), direct=self.direct, log_id=self.log_id)
        except DriveIoError as exc:
            draft.error(str(exc))
            draft.reason = failed(disk.name, draft.serial, "writing the verification marker failed", _io(exc))
            return
        before: Fingerprint | None = None
        if pattern == "changed":
            before = fingerprint(path, blocks, direct=self.direct, log_id=self.log_id)
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
                direct=self.direct, log_id=self.log_id,
                progress=lambda done, total: self.tell(disk.name, "verifying", done / total),
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
                draft.commands.extend(
                    run_method(choice, info, run=self.run, sleep=self.sleep, progress=tell, log_id=self.log_id)
                )
                return
            except MethodFailed as exc:
                draft.error(str(exc))
                draft.password_left = draft.password_left or exc.password_left
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
