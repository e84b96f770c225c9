"""View models: what a tile and a machine page show, as typed values made from the store's records only.

A tile's stage comes from the machine's state and its newest run (``stage_of``); its progress, rate and ETA
from the run's newest ``progress`` event; its hardware from the derived facts the run was planned with, else
from the machine's kept probe (``FactsSource``); its reason from ``provision.dashboard.reasons``. Templates
only format these values (every text from a machine is escaped by jinja2's autoescape).

The current session (``Session``): the machines with an event or a sighting in the last ``hours`` hours
(``dashboard.session_hours``, 12 by default: one working day). Tiles are numbered 1, 2, 3 ... in the order the
machines arrived in that window (their first event in it), so a tile keeps its number while the session lasts
(and across a restart of the server) and a new PC takes the next number; the numbers close up only when a
machine leaves the window, silent for ``hours``.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.dashboard.reasons import N_, Explanation, as_warning, explain, no_network
from provision.facts import load_probe
from provision.facts.derive import derive
from provision.states import MachineState, RunState
from provision.store import Machine, Run, Store
from provision.store.records import Event

log = logging.getLogger(__name__)

SILENT_BOOT = 300.0  # seconds after a boot script without a hello: "no network after boot"


class Stage(enum.StrEnum):
    BOOTING = "booting"
    INVENTORY = "inventory"
    WAITING = "waiting"
    ERASING = "erasing"
    CAPTURING = "capturing"
    WRITING = "writing"
    VERIFYING = "verifying"
    HOOKS = "hooks"
    DONE = "done"
    FAILED = "failed"
    REPAIR = "repair"
    IGNORED = "ignored"


STAGE_WORDS: dict[Stage, str] = {
    Stage.BOOTING: N_("booting"),
    Stage.INVENTORY: N_("inventory"),
    Stage.WAITING: N_("waiting"),
    Stage.ERASING: N_("erasing"),
    Stage.CAPTURING: N_("capturing"),
    Stage.WRITING: N_("writing"),
    Stage.VERIFYING: N_("verifying"),
    Stage.HOOKS: N_("finishing"),
    Stage.DONE: N_("done"),
    Stage.FAILED: N_("failed"),
    Stage.REPAIR: N_("repair"),
    Stage.IGNORED: N_("ignored"),
}
# never colour alone: every stage has its icon and its word too (the icon is hidden from screen readers).
# Each is a glyph of DejaVu Sans (the style sheet's font, Debian's fonts-dejavu-core), drawn as text, not emoji.
STAGE_ICONS: dict[Stage, str] = {
    Stage.BOOTING: "\u25b6",  # play: starting (DejaVu Sans has no power symbol, U+23FB)
    Stage.INVENTORY: "\u2630",  # trigram: a list
    Stage.WAITING: "\u25f7",  # a clock (DejaVu Sans has no pause sign, U+23F8)
    Stage.ERASING: "\u2205",  # empty set: the drives emptied
    Stage.CAPTURING: "\u21e7",  # up arrow: the disk sent to the server
    Stage.WRITING: "\u21e9",  # down arrow
    Stage.VERIFYING: "\u27f3",  # circle arrow
    Stage.HOOKS: "\u2699",  # gear
    Stage.DONE: "\u2714",  # check mark
    Stage.FAILED: "\u2716",  # cross
    Stage.REPAIR: "\u26a0",  # warning sign
    Stage.IGNORED: "\u2013",  # dash
}
FORM_WORDS: dict[str, str] = {
    "laptop": N_("laptop"),
    "mini": N_("mini PC"),
    "tower": N_("tower"),
    "desktop": N_("desktop"),
}
DESTINATION_WORDS: dict[str, str] = {  # provision.states.Destination
    "school": N_("school"),
    "family": N_("family"),
    "association": N_("association"),
    "recycling": N_("recycling"),
}
FINAL = frozenset({Stage.DONE, Stage.FAILED, Stage.REPAIR})
RUN_STAGES = {
    RunState.BOOTED: Stage.BOOTING,
    RunState.INVENTORIED: Stage.INVENTORY,
    RunState.ERASING: Stage.ERASING,
    RunState.CAPTURING: Stage.CAPTURING,
    RunState.WRITING: Stage.WRITING,
    RunState.VERIFYING: Stage.VERIFYING,
    RunState.HOOKS: Stage.HOOKS,
    RunState.DONE: Stage.DONE,
    RunState.FAILED: Stage.FAILED,
    RunState.REPAIR: Stage.REPAIR,
}


@dataclass(frozen=True)
class Progress:
    """A run's newest progress report: bytes of its stage done of total, the write rate."""

    stage: str
    done: int
    total: int
    rate: float | None

    @property
    def percent(self) -> int:
        return 0 if self.total <= 0 else max(0, min(100, self.done * 100 // self.total))

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None: unknown, or the stage is over: "1 second left" under a
        full bar was seen on the rack)."""
        if not self.rate or self.rate <= 0 or self.total <= 0 or self.done >= self.total:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    @classmethod
    def from_event(cls, event: Event | None, run: str) -> Progress | None:
        detail = {} if event is None else event.detail
        if detail.get("run") != run:
            return None
        try:
            rate = detail.get("rate")
            return cls(str(detail.get("stage")), int(detail["bytes_done"]), int(detail["bytes_total"]),
                       None if rate is None else float(rate))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def of_erasure(cls, event: Event | None, run: str) -> Progress | None:
        """An erasure's progress (``provision.erasing``): the mean fraction of its drives, in thousandths (None:
        no drive tells its fraction yet)."""
        detail = {} if event is None else event.detail
        fraction = detail.get("fraction")
        if detail.get("run") != run or detail.get("stage") != "erasing" or not isinstance(fraction, int | float):
            return None
        return cls("erasing", round(max(0.0, min(1.0, float(fraction))) * 1000), 1000, None)


@dataclass(frozen=True)
class Hardware:
    """The few facts a tile shows: the model as people name it, the class, firmware, memory, disk."""

    model: str | None = None
    form_factor: str | None = None
    firmware: str | None = None
    ram_mb: int | None = None
    disk_gb: int | None = None

    @classmethod
    def from_facts(cls, facts: Mapping[str, Any]) -> Hardware:
        def text(key: str) -> str | None:
            value = facts.get(key)
            return None if value in (None, "", "unknown") else str(value)[:120]

        def number(key: str) -> int | None:
            value = facts.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(text("model"), text("form_factor"), text("firmware"), number("ram_mb"), number("disk_gb"))


@dataclass(frozen=True)
class Tile:
    """One machine of the session, as its tile shows it."""

    number: int
    mac: str
    vendor: str | None
    model: str | None
    hardware: Hardware
    recipe: str | None
    hostname: str | None
    stage: Stage
    progress: Progress | None
    reasons: tuple[Explanation, ...]
    image: str | None
    label: str | None
    last_seen: float
    warnings: bool = False  # done, but a hook with on_failure warn failed

    @property
    def short_mac(self) -> str:
        """The MAC's last two bytes (what a sticker on the PC may show)."""
        return self.mac[-5:]

    @property
    def word(self) -> str:
        return STAGE_WORDS[self.stage]

    @property
    def icon(self) -> str:
        return STAGE_ICONS[self.stage]

    @property
    def reason(self) -> Explanation | None:
        return self.reasons[0] if self.reasons else None

    @property
    def final(self) -> bool:
        return self.stage in FINAL


class FactsSource:
    """A machine's derived facts: those its newest run was planned with, else those of its kept probe
    (``STATE/probes/<mac>/``, read again only when the folder changes)."""

    def __init__(self, store: Store, probes_dir: Path | None) -> None:
        self.store = store
        self.probes_dir = probes_dir
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def facts(self, mac: str, run: Run | None) -> dict[str, Any]:
        if run is not None:
            kept = self.store.run_facts(run.id)
            if kept:
                return kept
        return self.probe_facts(mac)

    def probe_facts(self, mac: str) -> dict[str, Any]:
        if self.probes_dir is None:
            return {}
        folder = self.probes_dir / mac.replace(":", "-")
        try:
            stamp = folder.stat().st_mtime
        except OSError:
            return {}
        cached = self._cache.get(mac)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            facts: dict[str, Any] = dict(derive(load_probe(folder)))
        except Exception as exc:  # a probe that does not read shows no facts, never an error page
            log.warning("%s: probe %s does not read: %s", mac, folder, exc)
            facts = {}
        self._cache[mac] = (stamp, facts)
        return facts


def stage_of(machine: Machine, run: Run | None, last_boot: Event | None, now: float) -> Stage:
    """Where the machine is in its work. A machine whose last run ended but which fetched a boot script since
    (it network-boots again) is booting; one with a run in flight is where its run is."""
    booted_since = (
        last_boot is not None
        and last_boot.detail.get("action") not in ("local", "off")  # off: an erased PC powered off
        and (run is None or run.finished is None or last_boot.at > run.finished)
    )
    if machine.state is MachineState.IGNORED:
        return Stage.IGNORED
    if machine.state in (MachineState.DONE, MachineState.FAILED, MachineState.REPAIR):
        if booted_since and run is not None and run.finished is not None:
            return Stage.BOOTING
        return Stage(machine.state.value)
    if machine.state is MachineState.IMAGING and run is not None and run.finished is None:
        return RUN_STAGES[run.state]
    if machine.state is MachineState.WAITING:
        return Stage.WAITING
    return Stage.BOOTING


@dataclass
class Session:
    """The machines of the current session and their tile numbers (see the module's docstring)."""

    hours: float = 12.0
    numbers: dict[str, int] = field(default_factory=dict)  # the last numbering (a live update reads it)

    def since(self, now: float) -> float:
        return now - self.hours * 3600.0

    def members(self, store: Store, now: float | None = None) -> list[Machine]:
        """The session's machines in tile order (arrival in the window); ``numbers`` updated."""
        now = time.time() if now is None else now
        since = self.since(now)
        arrivals = store.first_events_since(since)
        machines = [m for m in store.machines() if m.last_seen >= since or m.mac in arrivals]
        order = sorted(machines, key=lambda m: (arrivals.get(m.mac, max(m.first_seen, since)), m.mac))
        self.numbers = {m.mac: i for i, m in enumerate(order, start=1)}
        return order


class Views:
    """Builds the view models from one store (and the machines' probes)."""

    def __init__(self, store: Store, probes_dir: Path | None, session: Session) -> None:
        self.store = store
        self.facts = FactsSource(store, probes_dir)
        self.session = session

    def rack(self, now: float | None = None) -> list[Tile]:
        now = time.time() if now is None else now
        return [self.tile(m, now) for m in self.session.members(self.store, now)]

    def tile_of(self, mac: str, now: float | None = None) -> Tile | None:
        """The tile of one machine (None: unknown); its number from the session (0 when outside it)."""
        machine = self.store.machine(mac)
        if machine is None:
            return None
        if mac not in self.session.numbers:
            self.session.members(self.store, now)
        return self.tile(machine, time.time() if now is None else now)

    def tile(self, machine: Machine, now: float) -> Tile:
        runs = self.store.runs(machine.mac)
        run = runs[-1] if runs else None
        last_boot = self.store.last_event(machine.mac, "boot")
        stage = stage_of(machine, run, last_boot, now)
        facts = self.facts.facts(machine.mac, run)
        progress = None
        if run is not None and stage in (Stage.WRITING, Stage.VERIFYING, Stage.CAPTURING):
            progress = Progress.from_event(self.store.last_event(machine.mac, "progress"), run.id)
        if run is not None and stage is Stage.ERASING:
            progress = Progress.of_erasure(self.store.last_event(machine.mac, "progress"), run.id)
        reason = machine.reason if machine.reason is not None else (run.reason if run is not None else None)
        reasons = tuple(explain(reason)) if stage in (Stage.FAILED, Stage.REPAIR, Stage.WAITING, Stage.DONE) else ()
        if stage is Stage.BOOTING and last_boot is not None and now - last_boot.at > SILENT_BOOT:
            hello = self.store.last_event(machine.mac, "hello")
            if hello is None or hello.at < last_boot.at:
                reasons = (no_network(),)
        warnings = stage is Stage.DONE and bool(reason) and str(reason).startswith("done with warnings")
        reasons = tuple(as_warning(e) for e in reasons) if warnings else () if stage is Stage.DONE else reasons
        return Tile(
            number=self.session.numbers.get(machine.mac, 0),
            mac=machine.mac,
            vendor=maker_name(facts, machine.vendor),
            model=_text(facts.get("model") or machine.product),
            hardware=Hardware.from_facts(facts),
            recipe=machine.recipe,
            hostname=machine.hostname,
            stage=stage,
            progress=progress,
            reasons=reasons,
            image=None if run is None else run.image,
            label=None if run is None else run.label,
            last_seen=machine.last_seen,
            warnings=warnings,
        )


def _text(value: object) -> str | None:
    return None if value in (None, "") else str(value)[:120]


# The makers provision.facts knows, as people write them (the fact ``maker`` is a lower-case key for recipes)
MAKER_NAMES = {"dell": "Dell", "hp": "HP", "lenovo": "Lenovo", "fujitsu": "Fujitsu", "acer": "Acer",
               "asus": "ASUS", "toshiba": "Toshiba", "qemu": "QEMU"}  # fmt: skip


def maker_name(facts: Mapping[str, object], vendor: str | None) -> str | None:
    """The maker as a tile shows it: a known maker's name ("HP", not the key "hp"), else the DMI vendor as
    reported, else the ``maker`` fact."""
    maker = facts.get("maker")
    if isinstance(maker, str) and maker in MAKER_NAMES:
        return MAKER_NAMES[maker]
    return _text(facts.get("vendor") or vendor or maker)
