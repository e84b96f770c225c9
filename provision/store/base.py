"""The state store's database: one SQLite file in WAL mode, schema migrations by number
(``provision.store.schema``), write transactions that keep all or nothing (``StoreUnavailable``, HTTP 503,
when SQLite cannot: locked by another process, a full or failing disk), and the events every record writes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from provision.errors import RetryableError
from provision.store.records import Event, event_from_row, event_json
from provision.store.schema import MIGRATIONS

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


class Database:
    """The connection, its transactions and the event log; ``Store`` adds the records on top."""

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

    def __enter__(self) -> Self:
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

    def last_event(self, mac: str, kind: str) -> Event | None:
        """The newest event of ``kind`` of ``mac`` (None: never)."""
        with self._read():
            row = self._db.execute(
                "SELECT * FROM events WHERE mac = ? AND kind = ? ORDER BY id DESC LIMIT 1", (mac, kind)
            ).fetchone()
        return None if row is None else event_from_row(row)

    def events_after(self, after: int, limit: int = 1000) -> list[Event]:
        """Events of every machine recorded after the event id ``after``, oldest first (the dashboard's feed)."""
        with self._read():
            rows = self._db.execute("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()
        return [event_from_row(r) for r in rows]

    def first_events_since(self, since: float) -> dict[str, float]:
        """Each machine's first event at or after ``since`` (a time): when it arrived in that window. Events are
        appended in time order, so the window's first id is found by bisection (``at`` has no index) and only
        the window is read."""
        with self._read():
            first = self._first_event_at(since)
            rows = self._db.execute(
                "SELECT mac, MIN(at) AS at FROM events NOT INDEXED WHERE id >= ? AND at >= ? GROUP BY mac",
                (first, since),
            ).fetchall()
        return {str(r["mac"]): float(r["at"]) for r in rows}

    def _first_event_at(self, since: float) -> int:
        """The smallest event id whose ``at`` is at or after ``since`` (past the last id when none is)."""
        low = int(self._db.execute("SELECT MIN(id) FROM events").fetchone()[0] or 1)  # one MIN or MAX: O(log n)
        high = int(self._db.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0) + 1
        while low < high:
            middle = (low + high) // 2
            row = self._db.execute("SELECT id, at FROM events WHERE id >= ? ORDER BY id LIMIT 1", (middle,)).fetchone()
            if row is None or row["at"] >= since:
                high = middle
            else:
                low = int(row["id"]) + 1
        return int(low)

    def last_event_id(self) -> int:
        """The id of the newest event of any machine (0: none yet)."""
        with self._read():
            row = self._db.execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)

    def events(self, mac: str | None = None, kind: str | None = None, limit: int = 1000) -> list[Event]:
        query = "SELECT * FROM events WHERE (? IS NULL OR mac = ?) AND (? IS NULL OR kind = ?) ORDER BY id LIMIT ?"
        with self._read():
            rows = self._db.execute(query, (mac, mac, kind, kind, limit)).fetchall()
        return [event_from_row(r) for r in rows]
