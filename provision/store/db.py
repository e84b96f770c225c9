"""The server's records: SQLite in WAL mode, one file in the state directory, schema migrations by number
(``provision.store.schema``): machines, per-boot tokens, events, runs and their verification records.

Every change of a run goes through one transaction that checks the rules of ``provision.states`` (allowed
moves, ``done`` only with a complete verification of the run's digest) and moves the machine with its run.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from provision.errors import RetryableError, RunError
from provision.states import MachineState, RunState, check_run_move, check_run_open, is_final, machine_state_for
from provision.store.records import (
    BootToken,
    Event,
    Machine,
    Run,
    Verification,
    event_from_row,
    event_json,
    machine_from_row,
    run_from_row,
    secret_hash,
    token_from_row,
    verification_from_row,
)
from provision.store.schema import MIGRATIONS
from provision.wire.api import VerificationReport

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 30.0  # seconds a statement waits for another connection's lock before "database is locked"


class StoreUnavailable(RetryableError):
    """The state store cannot be used now: another process holds its lock past ``BUSY_TIMEOUT``, or its file
    system is full, read-only or failing. HTTP 503: the same call may succeed later (the agent retries)."""


def unavailable(exc: sqlite3.OperationalError, doing: str) -> StoreUnavailable:
    """SQLite's OperationalError as a StoreUnavailable that says which of the two it is, in plain words."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreUnavailable(f"state store busy (another process holds its lock): {exc}", error=name)
    return StoreUnavailable(f"state store not {doing}: {exc}", error=name or None)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0  # transactions open on this connection: 1, or more inside atomic()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT)
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
        """One write transaction: all of it or nothing. StoreUnavailable (503) when the store is locked by
        another process past BUSY_TIMEOUT, full or failing: nothing of the transaction is kept."""
        with self._lock:
            if self._depth:  # inside atomic(): part of that transaction, which commits or rolls back
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise unavailable(exc, "writable") from None
            self._depth = 1
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.OperationalError):
                    raise unavailable(exc, "writable") from None
                raise
            finally:
                self._depth = 0

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Several calls of this store as one transaction: the writes of the calls made inside are all kept, or
        none (an exception, a StoreUnavailable included, undoes them all). Other threads wait meanwhile."""
        with self._tx():
            yield

    def _rollback(self) -> None:
        """Undo the open transaction (SQLite may have done it already: a failed COMMIT on a full disk)."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the connection stays in the transaction: the next BEGIN says so
            log.error("store %s: rollback failed: %s", self.path, exc)

    @contextmanager
    def _read(self) -> Iterator[None]:
        """A read: StoreUnavailable (503) when SQLite cannot answer it (locked, failing)."""
        with self._lock:
            try:
                yield
            except sqlite3.OperationalError as exc:
                raise unavailable(exc, "readable") from None

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
        with self._read():
            row = self._db.execute("SELECT * FROM machines WHERE mac = ?", (mac,)).fetchone()
        return machine_from_row(row) if row else None

    def machines(self) -> list[Machine]:
        with self._read():
            rows = self._db.execute("SELECT * FROM machines ORDER BY first_seen, mac").fetchall()
        return [machine_from_row(r) for r in rows]

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
                f"UPDATE machines SET {sets} WHERE mac = ?",  # nosec B608  # noqa: S608 - columns from a fixed set
                (*fields.values(), state.value, reason, mac),
            )
            self._event(db, mac, "state", {"state": state.value, "reason": reason})

    # ---------------------------------------------------------------------------------------- tokens
    def issue_token(self, mac: str, via: str, ttl: float, remote: str | None = None) -> str:
        """A fresh per-boot token for the machine (the boot script puts it on the kernel command line), bound
        to ``remote``, the address that fetched the boot script."""
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
                "INSERT INTO boot_tokens (token, mac, issued_at, expires_at, via, remote) VALUES (?, ?, ?, ?, ?, ?)",
                (token, mac, now, now + ttl, via, remote),
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

    def current_token(self, mac: str, token: str) -> BootToken | None:
        """The token record when ``token`` was issued to ``mac``, is the newest one for it and has not expired."""
        with self._read():
            row = self._db.execute(
                "SELECT * FROM boot_tokens WHERE mac = ? ORDER BY issued_at DESC, rowid DESC LIMIT 1", (mac,)
            ).fetchone()
        if row is None or row["expires_at"] < time.time():
            return None
        return token_from_row(row) if secrets.compare_digest(str(row["token"]), token) else None

    def check_token(self, mac: str, token: str) -> bool:
        """True when `token` was issued to `mac`, is the newest one for it, and has not expired."""
        return self.current_token(mac, token) is not None

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
            (mac, time.time(), kind, event_json(detail)),
        )

    def last_event_at(self, mac: str, kind: str) -> float | None:
        """When the newest event of ``kind`` of ``mac`` was recorded (None: never)."""
        with self._read():
            row = self._db.execute(
                "SELECT at FROM events WHERE mac = ? AND kind = ? ORDER BY id DESC LIMIT 1", (mac, kind)
            ).fetchone()
        return None if row is None else float(row["at"])

    def events(self, mac: str | None = None, kind: str | None = None, limit: int = 1000) -> list[Event]:
        query = "SELECT * FROM events WHERE (? IS NULL OR mac = ?) AND (? IS NULL OR kind = ?) ORDER BY id LIMIT ?"
        with self._read():
            rows = self._db.execute(query, (mac, mac, kind, kind, limit)).fetchall()
        return [event_from_row(r) for r in rows]

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
        token: str | None = None,
        plan: dict[str, Any] | None = None,
    ) -> Run:
        """A new run of `mac` (the machine goes to imaging); any unfinished earlier run of it fails. ``token``:
        the boot token that started it (calls about the run must carry it; only its hash is kept); ``plan``:
        what the agent was told (JSON)."""
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
                "INSERT INTO runs (id, mac, recipe, image, label, digest, state, started, token_hash, plan) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, mac, recipe, image, label, digest, state.value, now,
                    None if token is None else secret_hash(token), None if plan is None else json.dumps(plan),
                ),
            )  # fmt: skip
            db.execute(
                "UPDATE machines SET state = ?, reason = NULL, recipe = ? WHERE mac = ?",
                (machine_state_for(state).value, recipe, mac),
            )
            self._event(db, mac, "run", {"run": run_id, "state": state.value, "image": image, "digest": digest})
        found = self.run(run_id)
        assert found is not None
        return found

    def run(self, run_id: str) -> Run | None:
        with self._read():
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return run_from_row(row) if row else None

    def run_started_by(self, token: str) -> Run | None:
        """The run the boot token ``token`` started, if any."""
        with self._read():
            row = self._db.execute("SELECT * FROM runs WHERE token_hash = ?", (secret_hash(token),)).fetchone()
        return run_from_row(row) if row else None

    def run_token_matches(self, run_id: str, token: str) -> bool:
        """True when ``token`` is the boot token that started the run."""
        with self._read():
            row = self._db.execute("SELECT token_hash FROM runs WHERE id = ?", (run_id,)).fetchone()
        found = None if row is None else row["token_hash"]
        return found is not None and secrets.compare_digest(str(found), secret_hash(token))

    def open_run(self, mac: str) -> Run | None:
        """The machine's run that has not ended, if any (there is at most one)."""
        with self._read():
            row = self._db.execute(
                "SELECT * FROM runs WHERE mac = ? AND finished IS NULL ORDER BY started DESC LIMIT 1", (mac,)
            ).fetchone()
        return run_from_row(row) if row else None

    def run_plan(self, run_id: str) -> dict[str, Any] | None:
        """The plan the run's agent was given (None: the run was made without one)."""
        with self._read():
            row = self._db.execute("SELECT plan FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row["plan"] is None:
            return None
        plan: dict[str, Any] = json.loads(row["plan"])
        return plan

    def runs(self, mac: str | None = None) -> list[Run]:
        query = "SELECT * FROM runs WHERE (? IS NULL OR mac = ?) ORDER BY started, rowid"
        with self._read():
            rows = self._db.execute(query, (mac, mac)).fetchall()
        return [run_from_row(r) for r in rows]

    def verifications(self, run_id: str) -> list[Verification]:
        with self._read():
            rows = self._db.execute("SELECT * FROM verifications WHERE run = ? ORDER BY id", (run_id,)).fetchall()
        return [verification_from_row(r) for r in rows]

    def record_verification(self, run_id: str, report: VerificationReport) -> Verification:
        """Keep what the agent verified for an unfinished run (RunConflict when the run has ended)."""
        with self._tx() as db:
            run = self._locked_run(db, run_id)
            check_run_open(run_id, run.state)
            db.execute(
                "INSERT INTO verifications (run, digest, chunks, verified, read_back, wipe_method, wipe_ranges, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, report.digest, report.chunks, report.verified, "ok" if report.read_back_ok else "failed",
                    report.wipe_method, json.dumps(report.wipe_ranges), time.time(),
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
        """Move a run along, and its machine with it (provision.states: the allowed moves, ``done`` only with a
        complete verification record of the run's own digest). RunConflict / RunError when refused."""
        now = time.time()
        with self._tx() as db:
            run = self._locked_run(db, run_id)
            rows = db.execute("SELECT * FROM verifications WHERE run = ?", (run_id,)).fetchall()
            complete = [v.digest for v in map(verification_from_row, rows) if v.complete]
            check_run_move(run_id, run.state, state, digest=run.digest, complete_digests=complete)
            db.execute(
                "UPDATE runs SET state = ?, reason = ?, finished = ?, bytes_written = COALESCE(?, bytes_written), "
                "mean_rate = COALESCE(?, mean_rate) WHERE id = ?",
                (state.value, reason, now if is_final(state) else None, bytes_written, mean_rate, run_id),
            )
            machine = machine_state_for(state)
            db.execute("UPDATE machines SET state = ?, reason = ? WHERE mac = ?", (machine.value, reason, run.mac))
            self._event(db, run.mac, "run", {"run": run_id, "state": state.value, "reason": reason})
        found = self.run(run_id)
        assert found is not None
        return found

    @staticmethod
    def _locked_run(db: sqlite3.Connection, run_id: str) -> Run:
        row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunError(f"no run {run_id[:64]!r}", run=run_id[:64])
        return run_from_row(row)
