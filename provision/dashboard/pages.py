"""View models of the machine page and the image page, from the store's records and the image store.

The machine page: the machine's tile, its facts, why its recipe was chosen (the recipes of today evaluated on
its facts, as ``provision recipes explain`` does), its lot and the drives of its last erasure (``ErasureView``),
every run with its verification records and hook results (outputs are kept as text: the template escapes
them), and its newest events. The image page: each stored
version (date, sizes, chunks) and the machines whose newest finished run wrote it and ended ``done``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from provision.dashboard.reasons import N_, Explanation, explain
from provision.dashboard.views import RUN_STAGES, Stage, Tile, Views
from provision.errors import ProvisionError
from provision.images import ImageError, ImageStore
from provision.recipes import RecipeSet, select
from provision.states import RunState
from provision.store import Run
from provision.store.records import ErasureRecord, HookRecord, Verification

log = logging.getLogger(__name__)

EVENTS_SHOWN = 200
HOOK_RESULTS = (N_("ok"), N_("failed"), N_("timed out"), N_("error"))  # how a hook ended, in words


@dataclass(frozen=True)
class Condition:
    fact: str
    expected: str
    actual: str
    matched: bool


@dataclass(frozen=True)
class RecipeExplanation:
    """Why the recipes of today give this machine what they give (None fields: not known)."""

    action: str | None
    recipe: str | None
    file: str | None
    via_default: bool
    conditions: tuple[Condition, ...]
    runners_up: tuple[str, ...]
    health_checks: tuple[str, ...]
    reasons: tuple[Explanation, ...]
    problem: str | None = None  # a msgid: the recipes do not load, or the machine has no facts
    detail: str = ""  # the problem as recorded (the loader's message)


@dataclass(frozen=True)
class HookView:
    name: str
    place: str
    on_failure: str
    ok: bool
    result: str  # ok | failed | timed out | error
    exit_code: int | None
    seconds: float
    output: str
    output_bytes: int
    error: str | None
    rerun: bool

    @classmethod
    def of(cls, hook: HookRecord) -> HookView:
        result = "ok" if hook.ok else "error" if hook.error else "timed out" if hook.timed_out else "failed"
        return cls(hook.name, hook.place, hook.on_failure, hook.ok, result, hook.exit_code, hook.seconds,
                   hook.output, hook.output_bytes, hook.error, hook.rerun)  # fmt: skip


@dataclass(frozen=True)
class RunView:
    run: Run
    reasons: tuple[Explanation, ...]
    verifications: tuple[Verification, ...]
    hooks: tuple[HookView, ...]

    @property
    def stage(self) -> Stage:
        return RUN_STAGES[self.run.state]


@dataclass(frozen=True)
class EventView:
    id: int
    at: float
    kind: str
    detail: str  # JSON text, escaped when shown


@dataclass(frozen=True)
class ErasureView:
    """The drives of the machine's last erasure, one record each, as the certificate states them."""

    run: str
    drives: tuple[ErasureRecord, ...]

    @property
    def ok(self) -> bool:
        return bool(self.drives) and all(d.ok for d in self.drives)

    @property
    def recorded_at(self) -> float:
        return self.drives[0].recorded_at


def last_erasure(records: list[ErasureRecord]) -> ErasureView | None:
    """The newest run's erasure records (None: the machine was never erased)."""
    if not records:
        return None
    run = records[-1].run_id
    return ErasureView(run, tuple(r for r in records if r.run_id == run))


@dataclass(frozen=True)
class MachinePage:
    tile: Tile
    serial: str | None
    first_seen: float
    boots: int
    facts: tuple[tuple[str, str], ...]
    recipe: RecipeExplanation
    runs: tuple[RunView, ...]  # newest first
    events: tuple[EventView, ...]  # newest first
    lot: str | None = None  # the donor's delivery
    erasure: ErasureView | None = None  # the drives of its last erasure
    destination: str | None = None  # where it goes (provision.states.Destination): the operator's, else its recipe's
    destination_by_operator: bool = False


def machine_page(views: Views, mac: str, recipes: Callable[[], RecipeSet] | None) -> MachinePage | None:
    store = views.store
    machine = store.machine(mac)
    tile = views.tile_of(mac)
    if machine is None or tile is None:
        return None
    runs = store.runs(mac)
    facts = views.facts.facts(mac, runs[-1] if runs else None)
    shown = tuple((k, _show(v)) for k, v in sorted(facts.items()) if v is not None)
    run_views = tuple(run_view(views, r) for r in reversed(runs))
    events = store.events(mac, limit=100_000)[-EVENTS_SHOWN:]
    event_views = tuple(
        EventView(e.id, e.at, e.kind, json.dumps(e.detail, ensure_ascii=False, sort_keys=True)[:4000])
        for e in reversed(events)
    )
    destination = machine.destination or (store.run_destination(runs[-1].id) if runs else None)
    return MachinePage(tile, machine.serial, machine.first_seen, machine.boots, shown,
                       recipe_explanation(facts, recipes), run_views, event_views, machine.lot,
                       last_erasure(store.erasures(mac=mac)), destination, machine.destination is not None)  # fmt: skip


def run_view(views: Views, run: Run) -> RunView:
    store = views.store
    hooks = tuple(HookView.of(h) for h in store.hook_results(run.id))
    return RunView(run, tuple(explain(run.reason)), tuple(store.verifications(run.id)), hooks)


def recipe_explanation(facts: dict[str, Any], recipes: Callable[[], RecipeSet] | None) -> RecipeExplanation:
    """The recipes of today evaluated on ``facts``."""
    empty = RecipeExplanation(None, None, None, False, (), (), (), ())
    if recipes is None:
        return replace(empty, problem=N_("this server has no recipes"))
    if not facts:
        return replace(empty, problem=N_("No facts known yet."))
    try:
        decision = select(recipes(), facts)
    except (ProvisionError, OSError, ValueError) as exc:
        return replace(empty, problem=N_("the recipes on the server have an error"), detail=str(exc)[:500])
    chosen = decision.chosen
    conditions = () if chosen is None else tuple(
        Condition(o.fact, o.expected, _show(o.actual), o.matched) for o in chosen.outcomes
    )  # fmt: skip
    return RecipeExplanation(
        action=decision.action.value,
        recipe=decision.recipe.name if decision.recipe else None,
        file=str(decision.recipe.file) if decision.recipe else None,
        via_default=decision.via_default,
        conditions=conditions,
        runners_up=tuple(c.recipe.name for c in decision.runners_up),
        health_checks=decision.health_checks,
        reasons=tuple(e for r in decision.reasons for e in explain(r)),
    )


@dataclass(frozen=True)
class VersionView:
    label: str
    digest: str
    created: float
    current: bool
    disk_size: int
    chunk_size: int
    chunks: int
    holes: int
    mapped_bytes: int
    stored_bytes: int | None
    machines: tuple[str, ...]  # MACs whose newest finished run wrote this version and is done


@dataclass(frozen=True)
class ImagePage:
    name: str
    versions: tuple[VersionView, ...]  # newest first
    problem: str | None = None  # a msgid
    detail: str = ""


def image_page(views: Views, images: ImageStore | None, name: str) -> ImagePage | None:
    """The image ``name`` (None: no such image)."""
    if images is None or name not in images.names():
        return None
    holders: dict[str, list[str]] = {}
    newest: dict[str, Run] = {}
    for run in views.store.runs():
        if run.finished is not None:
            newest[run.mac] = run
    for mac, run in sorted(newest.items()):
        if run.image == name and run.state is RunState.DONE:
            holders.setdefault(run.digest, []).append(mac)
    try:
        current = images.current_digest(name)
        versions = images.versions(name)
    except (ImageError, OSError) as exc:
        return ImagePage(name, (), N_("this image does not load"), str(exc)[:500])
    shown = []
    for version in versions:
        index = version.index
        try:
            stored: int | None = images.stored_bytes(version)
        except OSError:
            stored = None
        shown.append(VersionView(
            version.label, version.digest, version.created.timestamp(), version.digest == current, index.disk_size,
            index.chunk_size, len(index.chunks), index.holes, index.mapped_bytes, stored,
            tuple(holders.get(version.digest, ())),
        ))  # fmt: skip
    return ImagePage(name, tuple(shown))


def _show(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)[:2000]
    return str(value)[:2000]
