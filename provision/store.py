"""The server's records: SQLite in WAL mode, one file in the state directory, schema migrations by number.

Today: machines, per-boot tokens and events. The imaging issue adds runs and verification records as
further migrations; a migration never edits an earlier one.
"""

from __future__ import annotations

import enum
import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.runs import FINAL_RUN_STATES, MACHINE_FOR_RUN, NEXT_RUN_STATES, Run, RunError, RunState, Verification

log = logging.getLogger(__name__)


class MachineState(enum.StrEnum):
    NEW = "new"  # seen by DHCP/HTTP, nothing decided yet
    WAITING = "waiting"  # in the live environment, waiting for an operator or a recipe
    IMAGING = "imaging"  # a run is under way
    DONE = "done"  # last run verified: boots its local disk
    FAILED = "failed"  # last run failed: reason in events
    REPAIR = "repair"  # set aside for a technician
    IGNORED = "ignored"  # never network-booted by this server


MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE machines (
        mac TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        boots INTEGER NOT NULL DEFAULT 0,
        vendor TEXT, product TEXT, serial TEXT, recipe TEXT, reason TEXT
    );
    CREATE TABLE boot_tokens (
        token TEXT PRIMARY KEY,
        mac TEXT NOT NULL REFERENCES machines(mac),
        issued_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        via TEXT NOT NULL,
        used_at REAL
    );
    CREATE INDEX boot_tokens_mac ON boot_tokens(mac, issued_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mac TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_mac ON events(mac, id);
    """,
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        mac TEXT NOT NULL REFERENCES machines(mac),
        recipe TEXT, image TEXT NOT NULL, label TEXT NOT NULL, digest TEXT NOT NULL,
        state TEXT NOT NULL, reason TEXT,
        started REAL NOT NULL, finished REAL,
        bytes_written INTEGER NOT NULL DEFAULT 0, mean_rate REAL
    );
    CREATE INDEX runs_mac ON runs(mac, started);
    CREATE TABLE verifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run TEXT NOT NULL REFERENCES runs(id),
        digest TEXT NOT NULL,
        chunks INTEGER NOT NULL,
        verified INTEGER NOT NULL,
        read_back TEXT NOT NULL CHECK (read_back IN ('ok', 'failed')),
        wipe_method TEXT,
        wipe_ranges TEXT NOT NULL DEFAULT '[]',
        recorded_at REAL NOT NULL
    );
    CREATE INDEX verifications_run ON verifications(run, id);
    """,
)


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

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "state": self.state.value}


@dataclass(frozen=True)
class Event:
    id: int
    mac: str
    at: float
    kind: str
    detail: dict[str, Any]


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                log.info("store %s: migrating schema to version %d", self.path, number)
                self._db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -------------------------------------------------------------------------------------- machines
    def machine(self, mac: str) -> Machine | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM machines WHERE mac = ?", (mac,)).fetchone()
        return _machine(row) if row else None

    def machines(self) -> list[Machine]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM machines ORDER BY first_seen, mac").fetchall()
        return [_machine(r) for r in rows]

    def seen(self, mac: str, initial: MachineState = MachineState.NEW) -> Machine:
        """Record that a machine showed up; create it in `initial` state if new."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO machines (mac, state, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mac) DO UPDATE SET last_seen = excluded.last_seen",
                (mac, initial.value, now, now),
            )
        found = self.machine(mac)
        assert found is not None
        return found

    def set_state(self, mac: str, state: MachineState, reason: str | None = None, **fields: str | None) -> None:
        allowed = {"vendor", "product", "serial", "recipe"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown machine fields {sorted(unknown)}")
        sets = ", ".join([*(f"{k} = ?" for k in fields), "state = ?", "reason = ?"])
        with self._tx() as db:
            db.execute(
                f"UPDATE machines SET {sets} WHERE mac = ?",  # noqa: S608 - column names from a fixed set
                (*fields.values(), state.value, reason, mac),
            )
            self._event(db, mac, "state", {"state": state.value, "reason": reason})

    # ---------------------------------------------------------------------------------------- tokens
    def issue_token(self, mac: str, via: str, ttl: float) -> str:
        """A fresh per-boot token for the machine (the boot script puts it on the kernel command line)."""
        token = secrets.token_hex(16)
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO machines (mac, state, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mac) DO UPDATE SET last_seen = excluded.last_seen",
                (mac, MachineState.NEW.value, now, now),
            )
            db.execute("UPDATE machines SET boots = boots + 1 WHERE mac = ?", (mac,))
            db.execute(
                "INSERT INTO boot_tokens (token, mac, issued_at, expires_at, via) VALUES (?, ?, ?, ?, ?)",
                (token, mac, now, now + ttl, via),
            )
            self._event(db, mac, "boot", {"via": via})
        return token

    def local_boot(self, mac: str, via: str) -> None:
        """A known machine network-booted and was told to boot its local disk: counted, seen, an event."""
        with self._tx() as db:
            found = db.execute(
                "UPDATE machines SET boots = boots + 1, last_seen = ? WHERE mac = ?", (time.time(), mac)
            ).rowcount
            if found:
                self._event(db, mac, "boot", {"via": via, "action": "local"})

    def check_token(self, mac: str, token: str) -> bool:
        """True when `token` was issued to `mac`, is the newest one for it, and has not expired."""
        with self._lock:
            row = self._db.execute(
                "SELECT token, expires_at FROM boot_tokens WHERE mac = ? ORDER BY issued_at DESC, rowid DESC LIMIT 1",
                (mac,),
            ).fetchone()
        if row is None or row["expires_at"] < time.time():
            return False
        return secrets.compare_digest(str(row["token"]), token)

    def mark_token_used(self, token: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE boot_tokens SET used_at = ? WHERE token = ? AND used_at IS NULL", (time.time(), token))

    # ---------------------------------------------------------------------------------------- events
    def event(self, mac: str, kind: str, detail: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            self._event(db, mac, kind, detail or {})

    @staticmethod
    def _event(db: sqlite3.Connection, mac: str, kind: str, detail: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO events (mac, at, kind, detail) VALUES (?, ?, ?, ?)",
            (mac, time.time(), kind, _event_json(detail)),
        )

    def events(self, mac: str | None = None, kind: str | None = None, limit: int = 1000) -> list[Event]:
        query = "SELECT * FROM events WHERE (? IS NULL OR mac = ?) AND (? IS NULL OR kind = ?) ORDER BY id LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (mac, mac, kind, kind, limit)).fetchall()
        return [Event(r["id"], r["mac"], r["at"], r["kind"], json.loads(r["detail"])) for r in rows]

    # ------------------------------------------------------------------------------------------ runs
    def create_run(
        self,
        mac: str,
        *,
        recipe: str | None,
        image: str,
        label: str,
        digest: str,
        state: RunState = RunState.INVENTORIED,
    ) -> Run:
        """A new run of `mac` (the machine goes to imaging); any unfinished earlier run of it fails."""
        run_id = uuid.uuid4().hex
        now = time.time()
        with self._tx() as db:
            stale = db.execute("SELECT id FROM runs WHERE mac = ? AND finished IS NULL", (mac,)).fetchall()
            for row in stale:
                reason = f"superseded by run {run_id}"
                db.execute(
                    "UPDATE runs SET state = ?, reason = ?, finished = ? WHERE id = ?",
                    (RunState.FAILED.value, reason, now, row["id"]),
                )
                self._event(db, mac, "run", {"run": row["id"], "state": "failed", "reason": reason})
            db.execute(
                "INSERT INTO runs (id, mac, recipe, image, label, digest, state, started) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, mac, recipe, image, label, digest, state.value, now),
            )
            db.execute(
                "UPDATE machines SET state = ?, reason = NULL, recipe = ? WHERE mac = ?",
                (MachineState.IMAGING.value, recipe, mac),
            )
            self._event(db, mac, "run", {"run": run_id, "state": state.value, "image": image, "digest": digest})
        found = self.run(run_id)
        assert found is not None
        return found

    def run(self, run_id: str) -> Run | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def runs(self, mac: str | None = None) -> list[Run]:
        query = "SELECT * FROM runs WHERE (? IS NULL OR mac = ?) ORDER BY started, rowid"
        with self._lock:
            rows = self._db.execute(query, (mac, mac)).fetchall()
        return [_run(r) for r in rows]

    def verifications(self, run_id: str) -> list[Verification]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM verifications WHERE run = ? ORDER BY id", (run_id,)).fetchall()
        return [_verification(r) for r in rows]

    def record_verification(
        self,
        run_id: str,
        *,
        digest: str,
        chunks: int,
        verified: int,
        read_back_ok: bool,
        wipe_method: str | None = None,
        wipe_ranges: list[Any] | None = None,
    ) -> Verification:
        with self._tx() as db:
            run = self._locked_run(db, run_id)
            if run.state in FINAL_RUN_STATES:
                raise RunError(f"run {run_id} is {run.state.value} already", conflict=True)
            db.execute(
                "INSERT INTO verifications (run, digest, chunks, verified, read_back, wipe_method, wipe_ranges, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, digest, chunks, verified, "ok" if read_back_ok else "failed", wipe_method,
                    json.dumps(wipe_ranges or []), time.time(),
                ),
            )  # fmt: skip
        return self.verifications(run_id)[-1]

    def set_run_state(
        self,
        run_id: str,
        state: RunState,
        reason: str | None = None,
        *,
        bytes_written: int | None = None,
        mean_rate: float | None = None,
    ) -> Run:
        """Move a run along (see NEXT_RUN_STATES), and its machine with it when the run ends. `done` needs a complete
        verification record of the run's own digest: refused (RunError) otherwise."""
        now = time.time()
        with self._tx() as db:
            run = self._locked_run(db, run_id)
            if state not in NEXT_RUN_STATES.get(run.state, frozenset()):
                raise RunError(f"run {run_id}: {run.state.value} -> {state.value} is not allowed", conflict=True)
            if state is RunState.DONE:
                rows = db.execute("SELECT * FROM verifications WHERE run = ? AND digest = ?", (run_id, run.digest))
                if not any(_verification(r).complete for r in rows.fetchall()):
                    raise RunError(f"run {run_id}: no complete verification of {run.digest} recorded")
            db.execute(
                "UPDATE runs SET state = ?, reason = ?, finished = ?, bytes_written = COALESCE(?, bytes_written), "
                "mean_rate = COALESCE(?, mean_rate) WHERE id = ?",
                (state.value, reason, now if state in FINAL_RUN_STATES else None, bytes_written, mean_rate, run_id),
            )
            machine = MachineState(MACHINE_FOR_RUN.get(state, MachineState.IMAGING.value))
            db.execute("UPDATE machines SET state = ?, reason = ? WHERE mac = ?", (machine.value, reason, run.mac))
            self._event(db, run.mac, "run", {"run": run_id, "state": state.value, "reason": reason})
        found = self.run(run_id)
        assert found is not None
        return found

    @staticmethod
    def _locked_run(db: sqlite3.Connection, run_id: str) -> Run:
        row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunError(f"no run {run_id[:64]!r}")
        return _run(row)


def _run(row: sqlite3.Row) -> Run:
    return Run(**{k: row[k] for k in row.keys() if k != "state"}, state=RunState(row["state"]))  # noqa: SIM118


def _event_json(detail: dict[str, Any]) -> str:
    """JSON of an event's detail; escaped to ASCII when it holds text SQLite cannot store (lone surrogates)."""
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(detail, ensure_ascii=True, sort_keys=True)
    return text


def _verification(row: sqlite3.Row) -> Verification:
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


def _machine(row: sqlite3.Row) -> Machine:
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
    )
