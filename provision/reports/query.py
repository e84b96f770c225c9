"""The report's reads of the store, in SQL: the only module of ``provision.reports`` that knows the tables.

Its own connection, read-only (``mode=ro``), to the store's file: a report never writes and never waits for
the server's writes (WAL). Three reads over the period ``[first, last)``:

- the runs that ended in it (``done``, ``failed``, ``repair``), with the machine's destination (an operator's)
  else the one the run's recipe gave, the hardware class (``form_factor``) of the facts the run was
  planned with, and the bytes by HTTP and by multicast of its transfer report;
- the machines its recipe's health gate set aside at hello (``decision`` events whose action is ``repair``:
  no run is made), each once, its latest reasons;
- each drive's erasure recorded in it (``erasures``), with its run's recipe, destination and class.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from provision.reports.aggregate import build_report
from provision.reports.model import Ended, Erased, Period, Report
from provision.store.base import BUSY_TIMEOUT, unavailable

log = logging.getLogger(__name__)

RUNS = """
    SELECT r.id, r.mac, r.recipe, r.state, r.reason, r.started, r.finished, r.bytes_written, r.erase_only,
           CASE WHEN json_valid(r.transfer) THEN json_extract(r.transfer, '$.bytes_http') END AS transfer_http,
           CASE WHEN json_valid(r.transfer) THEN json_extract(r.transfer, '$.bytes_multicast') END AS transfer_mc,
           COALESCE(m.destination, r.destination) AS destination, r.held_digest, r.verified_bytes,
           CASE WHEN json_valid(r.facts) THEN json_extract(r.facts, '$.form_factor') END AS hw_class
    FROM runs r LEFT JOIN machines m ON m.mac = r.mac
    WHERE r.finished >= ? AND r.finished < ? AND r.state IN ('done', 'failed', 'repair')
      AND r.capture IS NULL  -- a golden PC captured (docs/capture.md) is not a machine refurbished
    ORDER BY r.finished, r.id
"""
SET_ASIDE = """
    SELECT e.mac, e.at, e.detail, m.destination FROM events e LEFT JOIN machines m ON m.mac = e.mac
    WHERE e.kind = 'decision' AND e.at >= ? AND e.at < ? AND json_valid(e.detail)
      AND json_extract(e.detail, '$.action') = 'repair'
    ORDER BY e.id
"""
ERASURES = """
    SELECT e.run_id, e.mac, e.method, e.ok, e.size_bytes, e.recorded_at, r.recipe,
           COALESCE(m.destination, r.destination) AS destination,
           CASE WHEN json_valid(r.facts) THEN json_extract(r.facts, '$.form_factor') END AS hw_class
    FROM erasures e JOIN runs r ON r.id = e.run_id LEFT JOIN machines m ON m.mac = e.mac
    WHERE e.recorded_at >= ? AND e.recorded_at < ?
    ORDER BY e.id
"""


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _ended(row: sqlite3.Row) -> Ended:
    return Ended(
        run=row["id"], mac=row["mac"], state=row["state"], reason=row["reason"], started=row["started"],
        finished=row["finished"], bytes_written=int(row["bytes_written"] or 0), erase_only=bool(row["erase_only"]),
        recipe=row["recipe"], destination=row["destination"], hw_class=_text(row["hw_class"]),
        bytes_http=None if row["transfer_http"] is None else int(row["transfer_http"]),
        bytes_multicast=int(row["transfer_mc"] or 0), held=row["held_digest"] is not None,
        verified_bytes=None if row["verified_bytes"] is None else int(row["verified_bytes"]),
    )  # fmt: skip


def _set_aside(rows: list[sqlite3.Row]) -> list[Ended]:
    """One row per machine set aside at hello: its latest decision in the period."""
    latest: dict[str, sqlite3.Row] = {}
    for row in rows:
        latest[row["mac"]] = row
    found = []
    for row in latest.values():
        detail = json.loads(row["detail"])
        reasons = detail.get("reasons")
        reason = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else _text(reasons)
        found.append(Ended(
            run=None, mac=row["mac"], state="repair", reason=reason, started=None, finished=row["at"],
            recipe=_text(detail.get("recipe")), destination=row["destination"] or _text(detail.get("destination")),
            hw_class=_text(detail.get("class")),
        ))  # fmt: skip
    return sorted(found, key=lambda e: (e.finished, e.mac))


def _erased(row: sqlite3.Row) -> Erased:
    return Erased(
        run=row["run_id"], mac=row["mac"], method=row["method"], ok=bool(row["ok"]), size_bytes=row["size_bytes"],
        recorded=row["recorded_at"], recipe=row["recipe"], destination=row["destination"],
        hw_class=_text(row["hw_class"]),
    )  # fmt: skip


def read_rows(db_path: Path, period: Period) -> tuple[list[Ended], list[Erased]]:
    """What ended and what was erased in the period, from the store at ``db_path``. StoreUnavailable (503)
    when SQLite cannot answer (no such file, locked past BUSY_TIMEOUT, failing)."""
    bounds = (period.first, period.last)
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    except sqlite3.OperationalError as exc:
        raise unavailable(exc, "readable") from None
    try:
        db.row_factory = sqlite3.Row
        runs = [_ended(r) for r in db.execute(RUNS, bounds)]
        aside = _set_aside(db.execute(SET_ASIDE, bounds).fetchall())
        drives = [_erased(r) for r in db.execute(ERASURES, bounds)]
    except sqlite3.OperationalError as exc:
        raise unavailable(exc, "readable") from None
    finally:
        db.close()
    log.debug("report %s..%s: %d runs, %d set aside, %d drives", period.start, period.end, len(runs), len(aside),
              len(drives))  # fmt: skip
    return runs + aside, drives


def read_report(db_path: Path, period: Period, by: str | None = None) -> Report:
    """The report of the period from the store at ``db_path``, grouped ``by`` (None: totals only)."""
    ended, erased = read_rows(db_path, period)
    return build_report(period, ended, erased, by)
