"""The server's records as typed values: machines, runs, their verification and erasure records, events.

Read from SQLite rows by ``provision.store``; shown by the API and the CLI through ``to_dict``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, fields
from typing import Any

from provision.states import MachineState, RunState, verification_complete
from provision.wire.erasure import Category, DriveErasure, HiddenAreas, Method, Smart
from provision.wire.erasure import Verification as ReadBack
from provision.wire.hooks import installed_packages


@dataclass(frozen=True)
class Machine:
    mac: str
    state: MachineState
    first_seen: float
    last_seen: float
    boots: int
    vendor: str | None
    product: str | None
    serial: str | None
    recipe: str | None
    reason: str | None
    hostname: str | None = None  # the name its hostname hook got (unique in the store)
    forgotten_at: float | None = None  # forgotten from the dashboard (runs kept) until it is seen again
    lot: str | None = None  # the donor's delivery it came in (recipe's erase.lot at hello, or an operator)
    destination: str | None = None  # where it goes, set by an operator (wins over its runs' recipes'): Destination

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "state": self.state.value}


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
    erase_only: bool = False  # a PC that leaves as parts: every drive erased, no image (image '', digest '')
    transfer: dict[str, Any] | None = None  # how its chunks came: the report's wire TransferReport (None: none)
    # delta re-imaging (docs/delta.md): the version its machine held when it was planned (None: nothing held) and
    # the prediction; what its report said it fetched (compressed) and the data bytes it verified; its disk
    held_run: str | None = None
    held_digest: str | None = None
    held_label: str | None = None
    predicted_bytes: int | None = None
    predicted_download: int | None = None
    fetched_bytes: int | None = None
    verified_bytes: int | None = None
    target: str | None = None
    capture: str | None = None  # a capture run (docs/capture.md): the image it captures (None: any other run)

    @property
    def kind(self) -> str:
        """What the run does: ``capture``, ``erase`` (erase-only) or ``image``."""
        return "capture" if self.capture is not None else "erase" if self.erase_only else "image"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "state": self.state.value, "kind": self.kind}


@dataclass(frozen=True)
class Verification:
    """What an agent reported it read back after writing a run's image (a run may have several)."""

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
        """The whole image read back right: what a `done` run needs (provision.states)."""
        return verification_complete(self.read_back == "ok", self.chunks, self.verified)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "complete": self.complete}


@dataclass(frozen=True)
class ErasureRecord:
    """One drive's erasure in a run, as the agent reported it (every field of the wire's ``DriveErasure``),
    with who was responsible (``operator``) and the donor's delivery (``lot``) when it was recorded. What an
    erasure certificate states (provision.certificates)."""

    id: int
    run_id: str
    mac: str
    operator: str  # the config's erasure.operator, or the user who last acted on the machine; "unknown"
    lot: str | None
    recorded_at: float
    device: str
    size_bytes: int
    interface: str
    method: Method
    category: Category
    ok: bool
    started: str
    ended: str
    verification: ReadBack | None
    vendor: str | None
    model: str | None
    serial: str | None
    firmware: str | None
    rotational: bool | None
    passes: int
    tools: dict[str, str]
    commands: list[list[str]]
    hidden_areas: HiddenAreas
    smart: Smart
    fallback: str | None
    reason: str | None
    errors: list[str]

    @property
    def drive(self) -> DriveErasure:
        """The record as the wire's ``DriveErasure`` (what the agent sent)."""
        return DriveErasure(**{f.name: getattr(self, f.name) for f in fields(DriveErasure)})

    def to_dict(self) -> dict[str, Any]:
        """Every field (None as null), the nested parts as the wire gives them."""
        drive = self.drive.to_dict()
        return {
            "id": self.id, "run_id": self.run_id, "mac": self.mac, "operator": self.operator, "lot": self.lot,
            "recorded_at": self.recorded_at, **{f.name: drive.get(f.name) for f in fields(DriveErasure)},
        }  # fmt: skip


@dataclass(frozen=True)
class ErasureRun:
    """A run's erasure as a whole: ``ok`` (every drive ok and no internal drive left out, as reported), the
    disks it left out as the agent reported them (wire ``Skipped`` as dicts: device, reason, internal; read by
    ``provision.certificates``, which refuses what does not read rather than drop it), operator and lot."""

    run_id: str
    mac: str
    ok: bool
    skipped: list[dict[str, Any]]
    operator: str
    lot: str | None
    recorded_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def erasure_run_from_row(row: sqlite3.Row) -> ErasureRun:
    skipped = json.loads(row["skipped"])
    return ErasureRun(row["run_id"], row["mac"], bool(row["ok"]), skipped if isinstance(skipped, list) else [skipped],
                      row["operator"], row["lot"], row["recorded_at"])  # fmt: skip


ERASURE_JSON = ("verification", "tools", "commands", "hidden_areas", "smart", "errors")  # kept as JSON text


def erasure_columns(drive: DriveErasure) -> dict[str, Any]:
    """A drive's erasure as the ``erasures`` table's columns (nested parts as JSON)."""
    values = drive.to_dict()
    row: dict[str, Any] = {f.name: getattr(drive, f.name) for f in fields(DriveErasure)}
    for name in ERASURE_JSON:
        row[name] = None if values.get(name) is None else json.dumps(values[name], sort_keys=True)
    row["ok"] = int(drive.ok)
    row["rotational"] = None if drive.rotational is None else int(drive.rotational)
    return row


def erasure_from_row(row: sqlite3.Row) -> ErasureRecord:
    verification = None if row["verification"] is None else ReadBack.from_dict(json.loads(row["verification"]))
    return ErasureRecord(
        id=row["id"], run_id=row["run_id"], mac=row["mac"], operator=row["operator"], lot=row["lot"],
        recorded_at=row["recorded_at"], device=row["device"], size_bytes=row["size_bytes"],
        interface=row["interface"], method=row["method"], category=row["category"], ok=bool(row["ok"]),
        started=row["started"], ended=row["ended"], verification=verification, vendor=row["vendor"],
        model=row["model"], serial=row["serial"], firmware=row["firmware"],
        rotational=None if row["rotational"] is None else bool(row["rotational"]), passes=row["passes"],
        tools=json.loads(row["tools"]), commands=json.loads(row["commands"]),
        hidden_areas=HiddenAreas.from_dict(json.loads(row["hidden_areas"])),
        smart=Smart.from_dict(json.loads(row["smart"])), fallback=row["fallback"], reason=row["reason"],
        errors=json.loads(row["errors"]),
    )  # fmt: skip


@dataclass(frozen=True)
class HookRecord:
    """One hook's result in a run: where it ran, what the failure rule was, how it ended, its output."""

    run: str
    position: int
    name: str
    place: str  # target | live | server
    on_failure: str  # fail | warn
    exit_code: int | None
    timed_out: bool
    seconds: float
    output: str
    output_bytes: int
    error: str | None
    recorded_at: float
    rerun: bool = False  # run again by hand (provision hooks run), after the run's own hooks

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and self.exit_code == 0

    @property
    def installed(self) -> dict[str, str] | None:
        """What a bundle hook installed (package -> version), from its output; None for other hooks."""
        return installed_packages(self.output)

    def to_dict(self) -> dict[str, Any]:
        installed = self.installed
        return {**self.__dict__, "ok": self.ok, **({"installed": installed} if installed is not None else {})}


@dataclass(frozen=True)
class BootToken:
    """A per-boot token: issued with a boot script to the address that fetched it (``remote``)."""

    mac: str
    issued_at: float
    expires_at: float
    via: str  # ipxe | grub
    used_at: float | None
    remote: str | None


@dataclass(frozen=True)
class Event:
    id: int
    mac: str
    at: float
    kind: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "kind": self.kind, "detail": self.detail}


def machine_from_row(row: sqlite3.Row) -> Machine:
    return Machine(
        mac=row["mac"],
        state=MachineState(row["state"]),
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        boots=row["boots"],
        vendor=row["vendor"],
        product=row["product"],
        serial=row["serial"],
        recipe=row["recipe"],
        reason=row["reason"],
        hostname=row["hostname"],
        forgotten_at=row["forgotten_at"],
        lot=row["lot"],
        destination=row["destination"],
    )


_RUN_FIELDS = (
    "id",
    "mac",
    "recipe",
    "image",
    "label",
    "digest",
    "reason",
    "started",
    "finished",
    "bytes_written",
    "mean_rate",
)  # fmt: skip  (the row's token_hash and plan are not part of the record)


_DELTA_FIELDS = ("held_run", "held_digest", "held_label", "predicted_bytes", "predicted_download", "fetched_bytes",
                 "verified_bytes", "target")  # fmt: skip


def run_from_row(row: sqlite3.Row) -> Run:
    transfer = None if row["transfer"] is None else json.loads(row["transfer"])
    return Run(**{k: row[k] for k in (*_RUN_FIELDS, *_DELTA_FIELDS)}, state=RunState(row["state"]),
               erase_only=bool(row["erase_only"]), transfer=transfer, capture=row["capture"])  # fmt: skip


def verification_from_row(row: sqlite3.Row) -> Verification:
    return Verification(
        run=row["run"],
        digest=row["digest"],
        chunks=row["chunks"],
        verified=row["verified"],
        read_back=row["read_back"],
        wipe_method=row["wipe_method"],
        wipe_ranges=json.loads(row["wipe_ranges"]),
        recorded_at=row["recorded_at"],
    )


def token_from_row(row: sqlite3.Row) -> BootToken:
    return BootToken(row["mac"], row["issued_at"], row["expires_at"], row["via"], row["used_at"], row["remote"])


def secret_hash(secret: str) -> str:
    """What the store keeps of the token that started a run: its sha256, never the token."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def hook_from_row(row: sqlite3.Row) -> HookRecord:
    return HookRecord(
        row["run"], row["position"], row["name"], row["place"], row["on_failure"], row["exit_code"],
        bool(row["timed_out"]), row["seconds"], row["output"], row["output_bytes"], row["error"], row["recorded_at"],
        bool(row["rerun"]),
    )  # fmt: skip


def event_from_row(row: sqlite3.Row) -> Event:
    return Event(row["id"], row["mac"], row["at"], row["kind"], json.loads(row["detail"]))


def event_json(detail: dict[str, Any]) -> str:
    """JSON of an event's detail; escaped to ASCII when it holds text SQLite cannot store (lone surrogates)."""
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(detail, ensure_ascii=True, sort_keys=True)
    return text
