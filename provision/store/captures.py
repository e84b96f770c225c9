"""Capture records (docs/capture.md): the capture asked for a machine, and what each capture run offered,
was asked to upload and uploaded. The rules of an offer (in disk order, contiguous, the same again for a
retry, never more positions than the disk holds) are checked here, in the transaction that records it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from provision.errors import ActionRefused, RunConflict, RunError
from provision.states import MachineState, RunState
from provision.store.base import Database


@dataclass(frozen=True)
class CaptureRequest:
    """A capture asked for a machine: at its next network boot, its disk becomes a new version of ``image``."""

    mac: str
    image: str
    requested_at: float
    requested_by: str
    target_disk: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CaptureRun:
    """A capture run's figures: its chunk size, the disk's size (None: no offer yet), positions offered,
    sha256s asked for, chunks uploaded (``new``: not in the store before) and the compressed bytes sent."""

    run_id: str
    image: str
    chunk_size: int
    disk_size: int | None
    requested_by: str | None
    offered: int
    asked: int
    uploaded_chunks: int
    uploaded_bytes: int
    new_chunks: int

    @property
    def positions(self) -> int | None:
        """The disk's chunk count (None: its size is not known yet)."""
        return None if self.disk_size is None else -(-self.disk_size // self.chunk_size)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "positions": self.positions}


@dataclass(frozen=True)
class Offered:
    """What an offer recorded: the sha256s of its chunks not asked for before in the run (distinct, in disk
    order; the caller keeps those the chunk store lacks) and the positions recorded so far."""

    new: list[str]
    offered: int


def _request(row: sqlite3.Row) -> CaptureRequest:
    return CaptureRequest(row["mac"], row["image"], row["requested_at"], row["requested_by"],
                          json.loads(row["target_disk"]))  # fmt: skip


class CaptureRecords(Database):
    """The capture part of the store."""

    def request_capture(
        self, mac: str, image: str, by: str, target_disk: dict[str, Any] | None = None
    ) -> CaptureRequest:
        """Ask for a capture of ``mac`` as ``image`` at its next network boot (the machine is made known if new,
        and goes back to ``new`` so that it boots the live environment; any unused boot token expires). One
        request per machine: a new one replaces it. ActionRefused (409) while the machine is being imaged."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state FROM machines WHERE mac = ?", (mac,)).fetchone()
            if row is not None and MachineState(row["state"]) is MachineState.IMAGING:
                raise ActionRefused(f"{mac} is being imaged: a capture is not possible now", mac=mac,
                                    state=row["state"], action="capture")  # fmt: skip
            db.execute(
                "INSERT INTO machines (mac, state, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mac) DO UPDATE SET state = excluded.state, reason = NULL, forgotten_at = NULL",
                (mac, MachineState.NEW.value, now, now),
            )
            db.execute("UPDATE boot_tokens SET expires_at = MIN(expires_at, ?) WHERE mac = ?", (now, mac))
            db.execute(
                "INSERT OR REPLACE INTO capture_requests (mac, image, requested_at, requested_by, target_disk) "
                "VALUES (?, ?, ?, ?, ?)",
                (mac, image, now, by, json.dumps(target_disk or {}, sort_keys=True)),
            )
            self._event(db, mac, "capture-requested", {"image": image, "user": by, "target_disk": target_disk or {}})
        found = self.capture_request(mac)
        assert found is not None
        return found

    def cancel_capture(self, mac: str, by: str) -> CaptureRequest | None:
        """Forget the machine's pending capture: its request, and a capture run of an operator's that never ended
        (the PC rebooted mid-capture: ``pending_capture`` would start it again), which ends ``failed``; an agent
        still capturing then gets 409 and stops. None: there was neither."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT * FROM capture_requests WHERE mac = ?", (mac,)).fetchone()
            open_runs = db.execute(
                "SELECT r.id, r.started, r.plan, c.image, c.requested_by FROM runs r JOIN capture_runs c ON "
                "c.run_id = r.id WHERE r.mac = ? AND r.finished IS NULL AND c.requested_by IS NOT NULL "
                "ORDER BY r.started DESC",
                (mac,),
            ).fetchall()
            if row is None and not open_runs:
                return None
            db.execute("DELETE FROM capture_requests WHERE mac = ?", (mac,))
            reason = f"capture cancelled by {by}"
            for run in open_runs:
                db.execute("UPDATE runs SET state = ?, reason = ?, finished = ? WHERE id = ?",
                           (RunState.FAILED.value, reason, now, run["id"]))  # fmt: skip
                self._event(db, mac, "run", {"run": run["id"], "state": "failed", "reason": reason})
            image = row["image"] if row is not None else open_runs[0]["image"]
            self._event(db, mac, "capture-cancelled", {"image": image, "user": by,
                                                       "runs": [r["id"] for r in open_runs]})  # fmt: skip
        if row is not None:
            return _request(row)
        last = open_runs[0]
        disk = (json.loads(last["plan"] or "{}").get("capture") or {}).get("target_disk") or {}
        return CaptureRequest(mac, last["image"], last["started"], last["requested_by"], disk)

    def keep_request(self, run_id: str) -> CaptureRequest | None:
        """A failed capture run that an operator asked for: its request is kept for the machine's next network
        boot (unless a newer one replaced it meanwhile), so that a golden PC is captured again, never imaged by its
        recipe in its place. None for a run no operator asked for (a recipe's: it still applies)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT c.image, c.requested_by, r.mac, r.plan FROM capture_runs c JOIN runs r ON r.id = c.run_id "
                "WHERE c.run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None or row["requested_by"] is None:
                return None
            plan = json.loads(row["plan"] or "{}").get("capture") or {}
            disk = json.dumps(plan.get("target_disk") or {}, sort_keys=True)
            kept = db.execute(
                "INSERT OR IGNORE INTO capture_requests (mac, image, requested_at, requested_by, target_disk) "
                "VALUES (?, ?, ?, ?, ?)",
                (row["mac"], row["image"], time.time(), row["requested_by"], disk),
            ).rowcount
            if kept:
                self._event(db, row["mac"], "capture-requested", {"image": row["image"], "user": row["requested_by"],
                                                                  "after_failed_run": run_id})  # fmt: skip
        return self.capture_request(row["mac"])

    def capture_request(self, mac: str) -> CaptureRequest | None:
        with self._read():
            row = self._db.execute("SELECT * FROM capture_requests WHERE mac = ?", (mac,)).fetchone()
        return None if row is None else _request(row)

    def pending_capture(self, mac: str) -> CaptureRequest | None:
        """The capture the machine's next hello starts: its request, else the one of its capture run that never
        ended (the PC rebooted mid-capture: its new run supersedes it; never imaged by its recipe in its place)."""
        found = self.capture_request(mac)
        if found is not None:
            return found
        with self._read():
            row = self._db.execute(
                "SELECT r.mac, c.image, r.started, c.requested_by, r.plan FROM runs r JOIN capture_runs c ON "
                "c.run_id = r.id WHERE r.mac = ? AND r.finished IS NULL AND c.requested_by IS NOT NULL "
                "ORDER BY r.started DESC LIMIT 1",
                (mac,),
            ).fetchone()
        if row is None:
            return None
        disk = (json.loads(row["plan"] or "{}").get("capture") or {}).get("target_disk") or {}
        return CaptureRequest(row["mac"], row["image"], row["started"], row["requested_by"], disk)

    def capture_requests(self) -> list[CaptureRequest]:
        with self._read():
            rows = self._db.execute("SELECT * FROM capture_requests ORDER BY requested_at, mac").fetchall()
        return [_request(r) for r in rows]

    def begin_capture(self, run_id: str, image: str, chunk_size: int, requested_by: str | None) -> None:
        """Keep a new capture run's chunk size and who asked for it; its machine's request (if any) is used up."""
        with self._tx() as db:
            mac = db.execute("SELECT mac FROM runs WHERE id = ?", (run_id,)).fetchone()["mac"]
            db.execute("INSERT INTO capture_runs (run_id, image, chunk_size, requested_by) VALUES (?, ?, ?, ?)",
                       (run_id, image, chunk_size, requested_by))  # fmt: skip
            db.execute("DELETE FROM capture_requests WHERE mac = ?", (mac,))

    def capture_run(self, run_id: str) -> CaptureRun | None:
        with self._read():
            row = self._db.execute("SELECT * FROM capture_runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            offered = self._db.execute("SELECT COUNT(*) FROM capture_chunks WHERE run_id = ?", (run_id,)).fetchone()
            asked = self._db.execute("SELECT COUNT(*) FROM capture_asked WHERE run_id = ?", (run_id,)).fetchone()
        return CaptureRun(row["run_id"], row["image"], row["chunk_size"], row["disk_size"], row["requested_by"],
                          int(offered[0]), int(asked[0]), row["uploaded_chunks"], row["uploaded_bytes"],
                          row["new_chunks"])  # fmt: skip

    def record_offer(self, run_id: str, disk_size: int, first: int, chunks: list[str | None]) -> Offered:
        """Record chunks ``first`` ... of a capture run. The disk's size is fixed by the first offer; positions
        come in disk order with no gap, never past the disk's chunk count; an offer of positions already
        recorded is accepted only with the same sha256s (the agent retried). RunConflict (409) otherwise."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM capture_runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunConflict(f"run {run_id} is not a capture", run=run_id)
            known = row["disk_size"]
            if known is not None and known != disk_size:
                raise RunConflict(f"run {run_id}: the disk is {known} bytes (first offer), this offer says {disk_size}",
                                  run=run_id)  # fmt: skip
            positions = -(-disk_size // row["chunk_size"])
            end = first + len(chunks)
            if end > positions:
                raise RunConflict(f"run {run_id}: positions {first}..{end - 1} offered, the disk of {disk_size} bytes "
                                  f"has {positions} chunks of {row['chunk_size']}", run=run_id)  # fmt: skip
            offered = int(db.execute("SELECT COUNT(*) FROM capture_chunks WHERE run_id = ?", (run_id,)).fetchone()[0])
            if first > offered:
                raise RunConflict(f"run {run_id}: offer starts at position {first}, {offered} positions offered so "
                                  f"far: offers come in disk order with no gap", run=run_id)  # fmt: skip
            before = db.execute("SELECT position, sha256 FROM capture_chunks WHERE run_id = ? AND position >= ? "
                                "AND position < ? ORDER BY position", (run_id, first, end)).fetchall()  # fmt: skip
            for old in before:
                if old["sha256"] != chunks[old["position"] - first]:
                    now = chunks[old["position"] - first] or "a hole"
                    raise RunConflict(f"run {run_id}: position {old['position']} was offered before as "
                                      f"{old['sha256'] or 'a hole'}, now as {now}", run=run_id)  # fmt: skip
            if known is None:
                db.execute("UPDATE capture_runs SET disk_size = ? WHERE run_id = ?", (disk_size, run_id))
            db.executemany("INSERT OR IGNORE INTO capture_chunks (run_id, position, sha256) VALUES (?, ?, ?)",
                           [(run_id, first + i, sha) for i, sha in enumerate(chunks)])  # fmt: skip
            wanted = list(dict.fromkeys(sha for sha in chunks if sha is not None))
            asked = {str(r[0]): bool(r[1]) for r in db.execute("SELECT sha256, uploaded FROM capture_asked "
                                                               "WHERE run_id = ?", (run_id,))}  # fmt: skip
            # an offer again of recorded positions is a retry whose answer may have been lost: what it was asked
            # for and has not uploaded yet is named again (the caller leaves out what the store holds by now)
            retried = {str(old["sha256"]) for old in before if old["sha256"] is not None}
            total = int(db.execute("SELECT COUNT(*) FROM capture_chunks WHERE run_id = ?", (run_id,)).fetchone()[0])
        return Offered([sha for sha in wanted if sha not in asked or (sha in retried and not asked[sha])], total)

    def mark_asked(self, run_id: str, shas: list[str]) -> None:
        """Keep that the server asked the run's agent for these sha256s (never asked again in the run)."""
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO capture_asked (run_id, sha256) VALUES (?, ?)",
                           [(run_id, sha) for sha in shas])  # fmt: skip

    def capture_asked(self, run_id: str, sha256: str) -> bool:
        """True when the run offered ``sha256`` and the server asked for it."""
        with self._read():
            row = self._db.execute("SELECT 1 FROM capture_asked WHERE run_id = ? AND sha256 = ?",
                                   (run_id, sha256)).fetchone()  # fmt: skip
        return row is not None

    def record_upload(self, run_id: str, sha256: str, *, sent: int, new: bool) -> CaptureRun:
        """One chunk uploaded and stored (``sent``: its compressed bytes; ``new``: not in the store before). An
        upload of a chunk already uploaded in the run (a retry) is not counted again."""
        with self._tx() as db:
            done = db.execute("UPDATE capture_asked SET uploaded = 1 WHERE run_id = ? AND sha256 = ? AND uploaded = 0",
                              (run_id, sha256)).rowcount  # fmt: skip
            if done:
                db.execute("UPDATE capture_runs SET uploaded_chunks = uploaded_chunks + 1, uploaded_bytes = "
                           "uploaded_bytes + ?, new_chunks = new_chunks + ? WHERE run_id = ?",
                           (sent, int(new), run_id))  # fmt: skip
        found = self.capture_run(run_id)
        assert found is not None
        return found

    def capture_pins(self) -> set[str]:
        """The sha256s the capture runs in flight offered (uploaded, or found in the image store): no index
        names them yet, so garbage collection must spare them (``provision.images.retention``)."""
        with self._read():
            rows = self._db.execute("SELECT DISTINCT c.sha256 FROM capture_chunks c JOIN runs r ON r.id = c.run_id "
                                    "WHERE r.finished IS NULL AND c.sha256 IS NOT NULL").fetchall()  # fmt: skip
        return {str(r[0]) for r in rows}

    def capture_chunks(self, run_id: str) -> list[str | None]:
        """The sha256s (None: a hole) the run offered, in disk order."""
        with self._read():
            rows = self._db.execute("SELECT sha256 FROM capture_chunks WHERE run_id = ? ORDER BY position",
                                    (run_id,)).fetchall()  # fmt: skip
        return [r[0] for r in rows]

    def set_captured(self, run_id: str, label: str, digest: str) -> None:
        """The version a capture run published: its label and digest become the run's (before it ends done)."""
        with self._tx() as db:
            row = db.execute("SELECT capture FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row["capture"] is None:
                raise RunError(f"run {run_id[:64]} is not a capture", run=run_id[:64])
            db.execute("UPDATE runs SET label = ?, digest = ? WHERE id = ?", (label, digest, run_id))
