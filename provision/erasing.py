"""Donor data erasure in a run (``Erasing``, used by ``provision.runs``): the recipe's ``erase:`` given to the
agent (an erase-only run of its own, or before an image's write), its progress, and its report, which moves
the run by the rules of ``provision.states``:

- every drive erased and verified (``ErasureReport.ok``): an erase-only run ends ``done``, an image run goes
  on to ``writing``;
- a drive not ok, or no drive at all: the run ends ``repair`` with the reason in plain words (which drive,
  its serial, what failed, what to do), never ``done``.

The records are the store's (``Store.record_erasure``); the lot (the donor's delivery) rendered by the
recipe is kept on the machine at hello, unless an operator set one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from provision.errors import RunConflict
from provision.states import RunState
from provision.store import Run, Store
from provision.wire.api import EraseAnswer, ProgressAnswer, RunAnswer
from provision.wire.erasure import DriveErasure, ErasePlan, ErasureProgress, ErasureReport, Skipped

log = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # seconds: at most one stored erasure progress event per run in this window
TOKEN_TTL = 6 * 3600.0  # seconds a run's token lives after its last accepted progress (config boot.token_ttl_seconds)
OpenRun = Callable[[str, str, "str | None"], Run]  # (run id, token, remote) -> the open run, or raise


def _drive_name(drive: DriveErasure) -> str:
    return f"drive {drive.device} (serial {drive.serial or 'unknown'})"


def _what_failed(drive: DriveErasure) -> str:
    if drive.verification is None:
        return f"{_drive_name(drive)} was not erased ({drive.method})"
    if not drive.verification.ok:
        return f"{_drive_name(drive)} failed its verification"
    return f"{_drive_name(drive)} failed"


def _left_out(skipped: Skipped) -> str:
    if skipped.internal:
        return f"internal drive {skipped.device} of the PC was left out, not erased: {skipped.reason}"
    return f"{skipped.device} skipped: {skipped.reason}"


def erasure_reason(report: ErasureReport) -> str:
    """What the erasure did, in plain words, with what to do when a drive is not ok or an internal drive of the
    PC was left out (its erasure is then incomplete: never ``done``)."""
    ok = [d for d in report.drives if d.ok]
    failed = [d for d in report.drives if not d.ok]
    internal = [s for s in report.skipped if s.internal]
    skipped = "; ".join(_left_out(s) for s in [*internal, *(s for s in report.skipped if not s.internal)])
    if not report.drives:
        found = f" ({skipped})" if skipped else ""
        return f"no drive was erased{found}: check that the PC's disks are connected; set it aside for a technician"
    words = [f"{len(ok)} drive{'' if len(ok) == 1 else 's'} erased and verified"]
    if not failed:
        words[0] += " (" + ", ".join(f"{d.device}: {d.category}" for d in ok) + ")"
    words.extend(f"{_what_failed(d)}: {d.reason}" for d in failed)
    if skipped:
        words.append(skipped)
    if failed:
        words.append("set it aside for a technician (the drive may be faulty: replace or destroy it)")
    elif internal:
        words.append("the PC's erasure is incomplete: set it aside for a technician, who frees the drive (or takes "
                     "it out) and erases the PC again (re-image it from the dashboard)")  # fmt: skip
    return "; ".join(words)[:2000]


def erase_plan(recipe_erase: dict[str, Any], lot: str | None, only: bool) -> ErasePlan:
    """The wire plan from a rendered recipe ``erase:`` (select.Plan.erase), with the machine's lot."""
    values = {k: v for k, v in recipe_erase.items() if k != "lot"}
    return ErasePlan.from_dict({**values, "only": only, **({"lot": lot} if lot else {})})


class Erasing:
    """Erasure runs over the store; ``open_run`` is ``Runs.open_run`` (token and remote checked)."""

    def __init__(
        self, store: Store, open_run: OpenRun, operator: str | None = None, token_ttl: float = TOKEN_TTL
    ) -> None:
        self.store = store
        self.open_run = open_run
        self.operator = operator  # the config's erasure.operator (None: "unknown", unless a user acted)
        self.token_ttl = token_ttl  # each accepted progress keeps the run's token alive this long
        self._last_progress: dict[str, float] = {}

    def lot_for(self, mac: str, recipe: str | None, recipe_erase: dict[str, Any]) -> str | None:
        """The machine's lot after the recipe's rendered ``erase.lot`` (kept unless an operator set one)."""
        lot = recipe_erase.get("lot")
        if lot:
            return self.store.set_lot(mac, str(lot), recipe or "recipe", source="recipe").lot
        machine = self.store.machine(mac)
        return None if machine is None else machine.lot

    def start(
        self,
        mac: str,
        recipe: str | None,
        recipe_erase: dict[str, Any],
        *,
        token: str | None,
        live: tuple[str | None, str | None],
        facts: dict[str, Any],
        destination: str | None = None,
    ) -> EraseAnswer:
        """A new erase-only run (a PC that leaves as parts): nothing is written after. ``destination``: the
        recipe's (recorded with the run, for the city's report)."""
        plan = erase_plan(recipe_erase, self.lot_for(mac, recipe, recipe_erase), only=True)
        run = self.store.create_run(
            mac, recipe=recipe, image="", label="", digest="", token=token, plan={"erase": plan.to_dict()},
            live_address=live[0], host_key=live[1], facts=facts, erase_only=True, destination=destination,
        )  # fmt: skip
        log.info("%s: erase-only run %s (recipe %s, lot %s)", mac, run.id, recipe, plan.lot)
        return EraseAnswer(run=run.id, erase=plan, recipe=recipe)

    def progress(self, run_id: str, msg: ErasureProgress, remote: str | None = None) -> ProgressAnswer:
        """The run moves to ``erasing``; a ``progress`` event (stage ``erasing``, each drive's fraction and
        their mean) at most every PROGRESS_EVERY seconds per run, for the dashboard's live tile. The run's token
        lives ``token_ttl`` seconds more (one store transaction with the move): an erasure may outlast the
        token's first lifetime (a 2 TB disk overwritten and read back whole: about 7 h)."""
        with self.store.atomic():
            run = self.open_run(run_id, msg.token, remote)
            if run.state is RunState.INVENTORIED:
                run = self.store.set_run_state(run.id, RunState.ERASING)
            elif run.state is not RunState.ERASING:
                raise RunConflict(f"run {run.id} is {run.state.value}: not erasing", run=run.id, state=run.state.value)
            self.store.extend_token(run.mac, msg.token, self.token_ttl)
            now = time.monotonic()
            last = self._last_progress.get(run.id)
            known = [f for f in msg.drives.values() if f is not None]
            fraction = None if not known else max(0.0, min(1.0, sum(known) / len(known)))
            if last is None or now - last >= PROGRESS_EVERY or fraction == 1.0:
                self._last_progress[run.id] = now
                detail = {"run": run.id, "stage": RunState.ERASING.value, "step": msg.stage, "drives": msg.drives}
                self.store.event(run.mac, "progress", {**detail, "fraction": fraction})
        return ProgressAnswer(run.id, run.state.value)

    def report(self, run_id: str, msg: ErasureReport, remote: str | None = None) -> RunAnswer:
        """Every drive's erasure recorded and the run moved (one store transaction: all of it or nothing).
        The same report again while the run is still open (its answer was lost) gets the same answer."""
        with self.store.atomic():
            run = self.open_run(run_id, msg.token, remote)
            self._last_progress.pop(run.id, None)
            if self.store.erasure_run(run.id) is not None:
                log.info("%s: run %s: erasure reported again: %s", run.mac, run.id, run.state.value)
                return RunAnswer(run.id, run.state.value, run.reason)
            self.store.record_erasure(run.id, msg, self.operator)
            if run.state is RunState.INVENTORIED:
                run = self.store.set_run_state(run.id, RunState.ERASING)
            reason = erasure_reason(msg)
            if not msg.ok:
                run = self.store.set_run_state(run.id, RunState.REPAIR, reason)
            elif run.erase_only:
                run = self.store.set_run_state(run.id, RunState.DONE, reason)
            else:
                run = self.store.set_run_state(run.id, RunState.WRITING)
        log.info("%s: run %s erasure: %s (%s)", run.mac, run.id, run.state.value, reason)
        return RunAnswer(run.id, run.state.value, run.reason)
