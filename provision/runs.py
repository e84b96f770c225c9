"""The imaging run lifecycle: a hello with facts becomes a plan and a run; progress and a final report move
the run to `done` (only with a complete read-back of the planned digest) or `failed` with the reason.

The records and the state rules live in `provision.store`; this module holds the run types and what the
agent API does with them (recipe selection, image resolution, report checks).
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.errors import ConfigError
from provision.facts import facts_from_dict
from provision.facts.derive import derive
from provision.images import ImageError, ImageStore
from provision.recipes import Action, RecipeSet, load_dir, select

if TYPE_CHECKING:
    from provision.store import Store

log = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # seconds: at most one stored progress event per run in this window


class RunState(enum.StrEnum):
    BOOTED = "booted"
    INVENTORIED = "inventoried"
    WRITING = "writing"
    VERIFYING = "verifying"
    HOOKS = "hooks"
    DONE = "done"  # only with a consistent verification record of the run's digest
    FAILED = "failed"
    REPAIR = "repair"


FINAL_RUN_STATES = frozenset({RunState.DONE, RunState.FAILED, RunState.REPAIR})
NEXT_RUN_STATES: dict[RunState, frozenset[RunState]] = {
    RunState.BOOTED: frozenset({RunState.INVENTORIED, RunState.FAILED, RunState.REPAIR}),
    RunState.INVENTORIED: frozenset({RunState.WRITING, RunState.FAILED, RunState.REPAIR}),
    RunState.WRITING: frozenset({RunState.WRITING, RunState.VERIFYING, RunState.FAILED}),
    RunState.VERIFYING: frozenset({RunState.VERIFYING, RunState.HOOKS, RunState.DONE, RunState.FAILED}),
    RunState.HOOKS: frozenset({RunState.HOOKS, RunState.DONE, RunState.FAILED}),
}
MACHINE_FOR_RUN = {RunState.DONE: "done", RunState.FAILED: "failed", RunState.REPAIR: "repair"}


class RunError(Exception):
    """A run operation the store refuses; `conflict` is True when the run's state is the cause (HTTP 409)."""

    def __init__(self, message: str, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


@dataclass(frozen=True)
class Run:
    id: str
    mac: str
    recipe: str | None
    image: str
    label: str
    digest: str
    state: RunState
    reason: str | None
    started: float
    finished: float | None
    bytes_written: int
    mean_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "state": self.state.value}


@dataclass(frozen=True)
class Verification:
    run: str
    digest: str
    chunks: int
    verified: int
    read_back: str  # ok | failed
    wipe_method: str | None
    wipe_ranges: list[Any]
    recorded_at: float

    @property
    def complete(self) -> bool:
        """The whole image read back right: what a `done` run needs."""
        return self.read_back == "ok" and self.chunks > 0 and self.verified == self.chunks

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "complete": self.complete}


@dataclass(frozen=True)
class FinalReport:
    """What the agent says at the end of a write (already validated by the API)."""

    ok: bool
    reason: str | None
    digest: str
    chunks: int
    verified: int
    read_back_ok: bool
    wipe_method: str | None
    wipe_ranges: list[Any]
    bytes_written: int
    seconds: float
    mean_rate: float


def report_problems(run: Run, report: FinalReport) -> list[str]:
    """Why a report does not make the run done (empty: it does)."""
    problems = []
    if not report.ok:
        problems.append(f"agent reports failure: {report.reason or 'no reason given'}")
    if report.digest != run.digest:
        problems.append(f"wrote digest {report.digest[:64]}, the run planned {run.digest}")
    if report.chunks <= 0 or report.verified != report.chunks:
        problems.append(f"verified {report.verified} of {report.chunks} chunks")
    if not report.read_back_ok:
        problems.append("read-back failed")
    return problems


class Runs:
    """The run lifecycle over a store, an image store and a recipe folder (reloaded when it changes)."""

    def __init__(self, store: Store, images: ImageStore | None, recipes_dir: Path) -> None:
        self.store = store
        self.images = images
        self.recipes_dir = recipes_dir
        self._recipes: tuple[tuple[float, ...], RecipeSet] | None = None
        self._last_progress: dict[str, float] = {}

    def recipes(self) -> RecipeSet:
        """The recipe set, loaded again only when a file's mtime (or the file list) changed."""
        files = sorted(self.recipes_dir.glob("*.y*ml"))
        stamp = (self.recipes_dir.stat().st_mtime, *(f.stat().st_mtime for f in files), float(len(files)))
        if self._recipes is None or self._recipes[0] != stamp:
            self._recipes = (stamp, load_dir(self.recipes_dir))
        return self._recipes[1]

    def _wait(self, mac: str, reason: str, **extra: Any) -> dict[str, Any]:
        from provision.store import MachineState

        self.store.set_state(mac, MachineState.WAITING, reason, **extra)
        return {"action": "wait", "reason": reason, "retry_after": 30}

    def hello(self, mac: str, facts_data: dict[str, Any]) -> dict[str, Any]:
        """Select a recipe for the facts: an image plan (and a new run), repair, or wait."""
        from provision.store import MachineState

        derived = derive(facts_from_dict(facts_data))
        ident = {k: _text(derived.get(k)) for k in ("vendor", "product", "serial")}
        try:
            decision = select(self.recipes(), derived)
        except (ConfigError, OSError) as exc:
            log.error("%s: recipes in %s do not load: %s", mac, self.recipes_dir, exc)
            return self._wait(mac, f"recipes do not load: {str(exc)[:300]}", **ident)
        recipe = decision.recipe.name if decision.recipe else None
        reasons = list(decision.reasons)
        self.store.event(mac, "decision", {"action": decision.action.value, "recipe": recipe, "reasons": reasons})
        if decision.action is Action.REPAIR:
            self.store.set_state(mac, MachineState.REPAIR, "; ".join(reasons), recipe=recipe, **ident)
            return {"action": "repair", "recipe": recipe, "reasons": reasons}
        if decision.action is Action.LOCAL:
            return {**self._wait(mac, "recipe says: boot the local disk", recipe=recipe, **ident), "action": "local"}
        if decision.action is not Action.IMAGE or decision.plan is None or decision.plan.image is None:
            return self._wait(mac, "; ".join(reasons) or f"recipe {recipe} says wait", recipe=recipe, **ident)
        plan, image = decision.plan, decision.plan.image
        try:
            if self.images is None:
                raise ImageError("this server has no image store")
            version = self.images.resolve(image)
        except ImageError as exc:
            reason = f"image {plan.image} is not available: {exc}"
            self.store.event(mac, "image-missing", {"image": plan.image, "recipe": recipe, "reason": str(exc)})
            return self._wait(mac, reason, recipe=recipe, **ident)
        self.store.set_state(mac, MachineState.WAITING, None, recipe=recipe, **ident)
        run = self.store.create_run(mac, recipe=recipe, image=version.name, label=version.label, digest=version.digest)
        return {
            "action": "image",
            "run": run.id,
            "recipe": recipe,
            "plan": {
                "image": version.name,
                "version": version.label,
                "digest": version.digest,
                "index_url": f"/images/{version.name}/{version.digest}/index.json",
                "wipe": plan.wipe,
                "target_disk": plan.target_disk,
                "grow_root": plan.grow_root,
                "hostname": plan.hostname,
                "hooks": plan.hooks,
            },
        }

    def progress(self, run: Run, stage: RunState, bytes_done: int, bytes_total: int, rate: float) -> Run:
        """Record the stage; a progress event at most every PROGRESS_EVERY seconds per run."""
        if run.state is not stage:
            run = self.store.set_run_state(run.id, stage, bytes_written=bytes_done, mean_rate=rate)
        now = time.monotonic()
        last = self._last_progress.get(run.id)
        if last is None or now - last >= PROGRESS_EVERY or bytes_done >= bytes_total:
            self._last_progress[run.id] = now
            detail = {"run": run.id, "stage": stage.value, "bytes_done": bytes_done, "bytes_total": bytes_total}
            self.store.event(run.mac, "progress", {**detail, "rate": rate})
        return run

    def report(self, run: Run, report: FinalReport) -> Run:
        """Record the verification; the run ends done only when it is consistent, else failed with why."""
        self._last_progress.pop(run.id, None)
        self.store.record_verification(
            run.id,
            digest=report.digest,
            chunks=report.chunks,
            verified=report.verified,
            read_back_ok=report.read_back_ok,
            wipe_method=report.wipe_method,
            wipe_ranges=report.wipe_ranges,
        )
        problems = report_problems(run, report)
        if not problems and run.state is RunState.WRITING:  # the report carries the read-back itself
            run = self.store.set_run_state(run.id, RunState.VERIFYING)
        if not problems and run.state in (RunState.VERIFYING, RunState.HOOKS):
            return self.store.set_run_state(
                run.id, RunState.DONE, bytes_written=report.bytes_written, mean_rate=report.mean_rate
            )
        if not problems:
            problems = [f"report arrived in state {run.state.value}, before verification"]
        return self.store.set_run_state(
            run.id, RunState.FAILED, "; ".join(problems), bytes_written=report.bytes_written, mean_rate=report.mean_rate
        )


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:200]
