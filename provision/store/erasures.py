"""Donor data erasure records (``ErasureRecords``, part of ``Store``) and the machine's lot.

- ``record_erasure`` keeps each drive's erasure of a run as the agent reported it (``provision.wire.erasure``),
  once: only while the run is ``inventoried`` or ``erasing`` and its plan orders an erasure; the run then moves
  by the rules of ``provision.states`` (``Runs.erasure`` decides where to).
- The run's erasure as a whole is one ``erasure_runs`` row (``erasure_run``): complete or not, the disks it
  left out (the wire's ``Skipped``: the live medium, removable media, an internal drive it could not erase),
  which certificates state as not covered, the operator and the lot.
- Each record names its ``operator``: the user who acted on the machine for this run, from the dashboard or the
  CLI (an ``action`` such as re-image, or setting its lot), since the machine's previous run ended (a user who
  acted in an earlier cycle is not named), else the server's configured operator (``erasure.operator``), else
  ``unknown``; and the machine's ``lot`` (the donor's delivery) at that time.
- ``set_lot`` sets the lot by an operator, or from the recipe's rendered ``erase.lot`` at hello; a recipe
  never replaces a lot an operator set. ``set_destination``, the machine's destination (school, family ...;
  what the city's report counts it under), set by an operator: it wins over the one its runs' recipes gave.
"""

from __future__ import annotations

import json
import sqlite3
import time

from provision.errors import NotFound, RequestError, RunConflict, RunError
from provision.states import Destination, RunState, check_run_open
from provision.store.base import Database
from provision.store.records import (
    ErasureRecord,
    ErasureRun,
    Machine,
    erasure_columns,
    erasure_from_row,
    erasure_run_from_row,
    machine_from_row,
)
from provision.wire.erasure import ErasureReport

UNKNOWN_OPERATOR = "unknown"
ERASABLE = (RunState.INVENTORIED, RunState.ERASING)  # the states a run's erasure may be recorded in
MAX_LOT = 128


class ErasureRecords(Database):
    """The erasure part of the store."""

    def record_erasure(self, run_id: str, report: ErasureReport, operator: str | None) -> list[ErasureRecord]:
        """Keep every drive of ``report`` as the run's erasure records (one transaction), each with the
        operator (``operator_of``; ``operator``: the configured one) and the machine's lot. RunError when the
        run does not exist or its plan orders no erasure, RunConflict (409) when it has ended or its erasure
        was recorded already."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id, mac, state, plan, started FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunError(f"no run {run_id[:64]!r}", run=run_id[:64])
            state = RunState(row["state"])
            check_run_open(run_id, state)
            plan = json.loads(row["plan"]) if row["plan"] else {}
            if not plan.get("erase"):
                raise RunError(f"run {run_id}: its plan orders no erasure", run=run_id)
            done = db.execute("SELECT COUNT(*) FROM erasure_runs WHERE run_id = ?", (run_id,)).fetchone()[0]
            done += db.execute("SELECT COUNT(*) FROM erasures WHERE run_id = ?", (run_id,)).fetchone()[0]
            if done or state not in ERASABLE:
                raise RunConflict(f"run {run_id}: its erasure was recorded already", run=run_id, state=state.value)
            mac = str(row["mac"])
            who = self._operator(db, mac, float(row["started"])) or operator or UNKNOWN_OPERATOR
            lot_row = db.execute("SELECT lot FROM machines WHERE mac = ?", (mac,)).fetchone()
            lot = None if lot_row is None else lot_row["lot"]
            for drive in report.drives:
                columns = {**erasure_columns(drive), "run_id": run_id, "mac": mac, "operator": who, "lot": lot,
                           "recorded_at": now}  # fmt: skip
                names = ", ".join(columns)
                marks = ", ".join("?" for _ in columns)
                db.execute(
                    f"INSERT INTO erasures ({names}) VALUES ({marks})",  # nosec B608  # noqa: S608 - fixed columns
                    tuple(columns.values()),
                )
            skipped = [s.to_dict() for s in report.skipped]
            db.execute(
                "INSERT INTO erasure_runs (run_id, mac, ok, skipped, operator, lot, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, mac, int(report.ok), json.dumps(skipped, sort_keys=True), who, lot, now),
            )
            detail = {
                "run": run_id, "ok": report.ok, "operator": who, "lot": lot,
                "drives": [{"device": d.device, "serial": d.serial, "method": d.method, "ok": d.ok}
                           for d in report.drives],
                "skipped": skipped,
            }  # fmt: skip
            self._event(db, mac, "erasure", detail)
        return self.erasures(run=run_id)

    def erasures(
        self, *, mac: str | None = None, run: str | None = None, lot: str | None = None
    ) -> list[ErasureRecord]:
        """Erasure records, oldest first, of a machine, a run and/or a lot (none given: every record)."""
        query = (
            "SELECT * FROM erasures WHERE (? IS NULL OR mac = ?) AND (? IS NULL OR run_id = ?) "
            "AND (? IS NULL OR lot = ?) ORDER BY id"
        )
        with self._read():
            rows = self._db.execute(query, (mac, mac, run, run, lot, lot)).fetchall()
        return [erasure_from_row(r) for r in rows]

    def erasure_run(self, run_id: str) -> ErasureRun | None:
        """The run's erasure as a whole (None: none recorded): complete or not, the disks it left out."""
        with self._read():
            row = self._db.execute("SELECT * FROM erasure_runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else erasure_run_from_row(row)

    def operator_of(self, mac: str) -> str | None:
        """The user who would be named operator of the machine's next erasure: who acted on it (an operator's
        action, or its lot set by hand) since its last run ended, if anyone."""
        with self._read():
            return self._operator(self._db, mac, float("inf"))

    @staticmethod
    def _operator(db: sqlite3.Connection, mac: str, started: float) -> str | None:
        """Who acted on ``mac`` for its run that started at ``started``: since the end of the machine's previous
        run (one superseded by this run ended at its very start: the one before counts)."""
        since = db.execute(
            "SELECT MAX(finished) FROM runs WHERE mac = ? AND finished IS NOT NULL AND finished < ?", (mac, started)
        ).fetchone()[0]
        rows = db.execute(
            "SELECT kind, detail FROM events WHERE mac = ? AND kind IN ('action', 'lot') AND at > ? "
            "ORDER BY id DESC LIMIT 200",
            (mac, since or 0.0),
        ).fetchall()
        for row in rows:
            detail = json.loads(row["detail"])
            if row["kind"] == "action" and detail.get("user"):
                return str(detail["user"])
            if row["kind"] == "lot" and detail.get("source") == "operator" and detail.get("by"):
                return str(detail["by"])
        return None

    def set_lot(self, mac: str, lot: str | None, by: str, *, source: str = "operator") -> Machine:
        """The machine's lot (the donor's delivery; None: none), set by user ``by`` (``source`` "operator") or
        by recipe ``by`` at hello (``source`` "recipe": it never replaces a lot an operator set). A ``lot``
        event says who. NotFound (404) for an unknown machine; RequestError (400) for a lot too long or with
        control characters."""
        if lot is not None:
            lot = lot.strip() or None
        if lot is not None and (len(lot) > MAX_LOT or not lot.isprintable()):
            raise RequestError(f"a lot is at most {MAX_LOT} printable characters (no tab or newline)", mac=mac)
        with self._tx() as db:
            row = db.execute("SELECT * FROM machines WHERE mac = ?", (mac,)).fetchone()
            if row is None:
                raise NotFound(f"no machine {mac}", mac=mac)
            if source == "recipe" and self._lot_by_operator(db, mac):
                return machine_from_row(row)
            if row["lot"] != lot:
                db.execute("UPDATE machines SET lot = ? WHERE mac = ?", (lot, mac))
                self._event(db, mac, "lot", {"lot": lot, "by": by, "source": source, "before": row["lot"]})
            found = db.execute("SELECT * FROM machines WHERE mac = ?", (mac,)).fetchone()
        return machine_from_row(found)

    def set_destination(self, mac: str, destination: Destination | None, by: str) -> Machine:
        """The machine's destination as an operator (user ``by``) sets it (None: none, its runs' recipes' then
        count); a ``destination`` event says who. NotFound (404) for an unknown machine."""
        value = None if destination is None else Destination(destination).value
        with self._tx() as db:
            row = db.execute("SELECT * FROM machines WHERE mac = ?", (mac,)).fetchone()
            if row is None:
                raise NotFound(f"no machine {mac}", mac=mac)
            if row["destination"] != value:
                db.execute("UPDATE machines SET destination = ? WHERE mac = ?", (value, mac))
                self._event(db, mac, "destination", {"destination": value, "by": by, "before": row["destination"]})
            found = db.execute("SELECT * FROM machines WHERE mac = ?", (mac,)).fetchone()
        return machine_from_row(found)

    @staticmethod
    def _lot_by_operator(db: sqlite3.Connection, mac: str) -> bool:
        row = db.execute(
            "SELECT detail FROM events WHERE mac = ? AND kind = 'lot' ORDER BY id DESC LIMIT 1", (mac,)
        ).fetchone()
        return row is not None and json.loads(row["detail"]).get("source") == "operator"
