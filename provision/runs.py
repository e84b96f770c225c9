"""The imaging run lifecycle: a hello with facts becomes a plan and a run; progress and a final report move
the run to `done` (only with a complete read-back of the planned digest) or `failed` with the reason.

The records and the state rules live in `provision.store`; this module holds the run types and what the
agent API does with them (recipe selection, image resolution, report checks).
"""

from __future__ import annotations

import enum
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.errors import ConfigError, ProbeError
from provision.facts import Facts, facts_from_dict, load_probe
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
    """What the agent says at the end of a write (already validated by the API).

    ``chunks`` and ``verified`` count the image's data chunks (holes are not chunks on disk); ``holes`` and
    ``holes_verified`` the hole chunks, read back as zeros under the ``zero`` wipe policy."""

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
    holes: int = 0
    holes_verified: int = 0


def report_problems(run: Run, report: FinalReport, data_chunks: int | str | None = None) -> list[str]:
    """Why a report does not make the run done (empty: it does). ``data_chunks``: the number of data chunks
    of the run's image version per the server's own index (the agent's count is not taken on trust), or why
    that index cannot be read (then the run cannot be done)."""
    problems = []
    if isinstance(data_chunks, str):
        problems.append(data_chunks)
        data_chunks = None
    if not report.ok:
        problems.append(f"agent reports failure: {report.reason or 'no reason given'}")
    if report.digest != run.digest:
        problems.append(f"wrote digest {report.digest[:64]}, the run planned {run.digest}")
    if data_chunks is not None and report.chunks != data_chunks:
        problems.append(f"report counts {report.chunks} data chunks, the image has {data_chunks}")
    if report.chunks <= 0 or report.verified != report.chunks:
        problems.append(f"verified {report.verified} of {report.chunks} chunks")
    if not report.read_back_ok:
        problems.append("read-back failed")
    return problems


class Runs:
    """The run lifecycle over a store, an image store and a recipe folder (reloaded when it changes)."""

    def __init__(
        self, store: Store, images: ImageStore | None, recipes_dir: Path, probes_dir: Path | None = None
    ) -> None:
        self.store = store
        self.images = images
        self.recipes_dir = recipes_dir
        self.probes_dir = probes_dir
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

    def save_probe(self, mac: str, files: dict[str, str]) -> Facts:
        """Keep the raw probe of ``mac`` (the files the live environment collected) under
        ``probes_dir/<mac>/``, replacing the previous one, and read its facts. File names are checked by the API.
        Raises ProbeError (a file too large) or OSError (the folder cannot be written)."""
        if self.probes_dir is None:
            raise ProbeError("this server keeps no probes (no probes_dir)", path=mac)
        folder = self.probes_dir / mac.replace(":", "-")
        fresh = folder.with_name(folder.name + ".new")
        if fresh.exists():
            shutil.rmtree(fresh)
        fresh.mkdir(parents=True)
        for name, text in files.items():
            (fresh / name).write_text(text, encoding="utf-8", errors="replace")
        facts = load_probe(fresh)
        old = folder.with_name(folder.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if folder.exists():
            folder.rename(old)
        fresh.rename(folder)
        if old.exists():
            shutil.rmtree(old)
        return facts

    def hello(self, mac: str, facts_data: dict[str, Any] | Facts) -> dict[str, Any]:
        """Select a recipe for the facts: an image plan (and a new run), repair, or wait."""
        from provision.store import MachineState

        derived = derive(facts_data if isinstance(facts_data, Facts) else facts_from_dict(facts_data))
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

    def data_chunks(self, run: Run) -> int | str | None:
        """The number of data chunks of the run's image version, from the server's index; the reason when
        that version cannot be loaded (a report is then not trusted); None when the server has no store."""
        if self.images is None:
            return None
        try:
            index = self.images.load(run.image, run.digest).index
        except (ImageError, OSError) as exc:
            return f"image version {run.image}@{run.digest[:12]} cannot be loaded to check the report: {exc}"
        return len(index.chunks) - index.holes

    def fail(self, run: Run, reason: str, detail: dict[str, Any] | None = None) -> Run:
        """The agent gave up on the run (no disk, a fatal write error ...): failed with its reason."""
        self._last_progress.pop(run.id, None)
        self.store.event(run.mac, "run-failed", {"run": run.id, "reason": reason, **(detail or {})})
        return self.store.set_run_state(run.id, RunState.FAILED, reason)

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
        problems = report_problems(run, report, self.data_chunks(run))
        if not problems and run.state is RunState.INVENTORIED:  # no progress reached us (a short write)
            run = self.store.set_run_state(run.id, RunState.WRITING)
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
