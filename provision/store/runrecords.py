"""Runs and what they record: verification records and hook results, every move checked by the rules of
``provision.states`` (allowed moves, ``done`` only with a complete verification of the run's own digest) in
the transaction that makes it, the machine moving with its run.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from typing import Any

from provision.errors import RunError
from provision.states import RunState, check_run_move, check_run_open, is_final, machine_state_for
from provision.store.base import Database
from provision.store.records import (
    HookRecord,
    Run,
    Verification,
    hook_from_row,
    run_from_row,
    secret_hash,
    verification_from_row,
)
from provision.wire.api import VerificationReport
from provision.wire.carousel import TransferReport
from provision.wire.delta import HeldVersion
from provision.wire.hooks import HookResult

# the states of a run that still fetches its image's chunks (runs_wanting): verifying and hooks need none
WANTING_CHUNKS = tuple(s.value for s in (RunState.BOOTED, RunState.INVENTORIED, RunState.ERASING, RunState.WRITING))


class RunRecords(Database):
    """The runs part of the store."""

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
        live_address: str | None = None,
        host_key: str | None = None,
        facts: dict[str, Any] | None = None,
        erase_only: bool = False,
        destination: str | None = None,
        held: HeldVersion | None = None,
        capture: str | None = None,
    ) -> Run:
        """A new run of `mac` (the machine goes to imaging); any unfinished earlier run of it fails. ``token``:
        the boot token that started it (calls about the run must carry it; only its hash is kept); ``plan``:
        what the agent was told (JSON); ``live_address`` and ``host_key``: where its live environment answers
        SSH and the host key its hello reported (pinned: the hooks run there or not at all); ``facts``: the
        machine's derived facts, for the hooks that need some; ``erase_only``: a run that erases every drive
        and writes nothing (``image``, ``label`` and ``digest`` are then ''); ``destination``: where the recipe
        says its machines go (provision.states.Destination), for the city's report; ``held``: the version the
        machine held and the prediction (docs/delta.md); ``capture``: a capture run of that image (its digest and
        label filled when the version is published: docs/capture.md)."""
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
                "INSERT INTO runs (id, mac, recipe, image, label, digest, state, started, token_hash, plan, "
                "live_address, host_key, facts, erase_only, destination, held_run, held_digest, held_label, "
                "predicted_bytes, predicted_download, capture) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, mac, recipe, image, label, digest, state.value, now,
                    None if token is None else secret_hash(token), None if plan is None else json.dumps(plan),
                    live_address, host_key, None if facts is None else json.dumps(facts), int(erase_only),
                    destination, *((None,) * 5 if held is None else
                                   (held.run, held.digest, held.version, held.bytes, held.download)),
                    capture,
                ),
            )  # fmt: skip
            db.execute(
                "UPDATE machines SET state = ?, reason = NULL, recipe = ? WHERE mac = ?",
                (machine_state_for(state).value, recipe, mac),
            )
            started = {"run": run_id, "state": state.value, "image": image, "digest": digest}
            kind = {"erase_only": True} if erase_only else {"capture": capture} if capture is not None else {}
            self._event(db, mac, "run", {**started, **kind})
        found = self.run(run_id)
        assert found is not None
        return found

    def run_destination(self, run_id: str) -> str | None:
        """The destination the run's recipe gave (None: none, or the run was made before destinations)."""
        with self._read():
            row = self._db.execute("SELECT destination FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else row["destination"]

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

    def run_facts(self, run_id: str) -> dict[str, Any]:
        """The derived facts the run was planned with ({} when none were kept)."""
        with self._read():
            row = self._db.execute("SELECT facts FROM runs WHERE id = ?", (run_id,)).fetchone()
        facts: dict[str, Any] = {} if row is None or row["facts"] is None else json.loads(row["facts"])
        return facts

    def run_live(self, run_id: str) -> tuple[str | None, str | None]:
        """(address, host key) of the run's live environment, as its hello gave them."""
        with self._read():
            row = self._db.execute("SELECT live_address, host_key FROM runs WHERE id = ?", (run_id,)).fetchone()
        return (None, None) if row is None else (row["live_address"], row["host_key"])

    def record_hook(
        self, run_id: str, position: int, place: str, on_failure: str, result: HookResult, *, rerun: bool = False
    ) -> HookRecord:
        """Keep one hook's result for a run that is still open (RunConflict when it has ended). ``rerun``: a
        hook run again by hand (``provision hooks run``), kept after the run's own hooks whatever its state;
        ``position`` is then ignored."""
        with self._tx() as db:
            run = self._locked_run(db, run_id)
            if rerun:
                query = "SELECT COALESCE(MAX(position) + 1, 0) FROM hook_results WHERE run = ?"
                position = int(db.execute(query, (run_id,)).fetchone()[0])
            else:
                check_run_open(run_id, run.state)
            db.execute(
                "INSERT INTO hook_results (run, position, name, place, on_failure, exit_code, timed_out, seconds, "
                "output, output_bytes, error, recorded_at, rerun) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, position, result.name, place, on_failure, result.exit_code, int(result.timed_out),
                    result.seconds, result.output, result.output_bytes, result.error, time.time(), int(rerun),
                ),
            )  # fmt: skip
            detail = {"run": run_id, "hook": result.name, "ok": result.ok, "exit_code": result.exit_code,
                      "error": result.error, **({"rerun": True} if rerun else {})}  # fmt: skip
            self._event(db, run.mac, "hook", detail)
        return self.hook_results(run_id)[-1]

    def claim_hostname(self, run_id: str, wanted: str) -> str:
        """The host name the run's machine gets: ``wanted`` when no other machine has it (case does not
        matter), else ``wanted-2``, ``wanted-3`` ... (cut to fit 63 characters); kept on the machine, with a
        ``hostname`` event saying what was wanted. One transaction: two machines never get the same name."""
        with self._tx() as db:
            run = self._locked_run(db, run_id)
            rows = db.execute(
                "SELECT hostname FROM machines WHERE mac != ? AND hostname IS NOT NULL", (run.mac,)
            ).fetchall()
            given = free_hostname(wanted, {str(r["hostname"]).lower() for r in rows})
            db.execute("UPDATE machines SET hostname = ? WHERE mac = ?", (given, run.mac))
            self._event(db, run.mac, "hostname", {"run": run_id, "wanted": wanted, "hostname": given})
        return given

    def machine_hostname(self, mac: str) -> str | None:
        """The host name the machine got last (None: never one)."""
        with self._read():
            row = self._db.execute("SELECT hostname FROM machines WHERE mac = ?", (mac,)).fetchone()
        return None if row is None else row["hostname"]

    def live_run(self, mac: str) -> Run | None:
        """The machine's newest run whose hello reported a live environment (an address and a host key)."""
        with self._read():
            row = self._db.execute(
                "SELECT * FROM runs WHERE mac = ? AND live_address IS NOT NULL AND host_key IS NOT NULL "
                "ORDER BY started DESC, rowid DESC LIMIT 1",
                (mac,),
            ).fetchone()
        return run_from_row(row) if row else None

    def hook_results(self, run_id: str) -> list[HookRecord]:
        with self._read():
            rows = self._db.execute(
                "SELECT * FROM hook_results WHERE run = ? ORDER BY position, id", (run_id,)
            ).fetchall()
        return [hook_from_row(r) for r in rows]

    def runs(self, mac: str | None = None) -> list[Run]:
        query = "SELECT * FROM runs WHERE (? IS NULL OR mac = ?) ORDER BY started, rowid"
        with self._read():
            rows = self._db.execute(query, (mac, mac)).fetchall()
        return [run_from_row(r) for r in rows]

    def runs_wanting(self, digest: str, *, since: float, mac: str | None = None, small: int | None = None) -> int:
        """Runs of version ``digest`` that still need its chunks (not yet past writing: a run verifying or
        running its hooks fetches no chunk) started at ``since`` or later, other than ``mac``'s (the transfer
        decision at hello, provision.multicast.choose); with ``small``, not those predicted to download at most
        that many bytes (a small delta fetches by HTTP: docs/delta.md)."""
        with self._read():
            row = self._db.execute(
                "SELECT COUNT(*) FROM runs WHERE digest = ? AND finished IS NULL AND erase_only = 0 "
                "AND state IN (?, ?, ?, ?) AND started >= ? AND mac != COALESCE(?, '') "
                "AND (? IS NULL OR predicted_download IS NULL OR predicted_download > ?)",
                (digest, *WANTING_CHUNKS, since, mac, small, small),
            ).fetchone()
        return int(row[0])

    def record_transfer(self, run_id: str, transfer: TransferReport) -> None:
        """Keep how the run's chunks came (its report's ``transfer``), and a ``transfer`` event of its machine."""
        detail = transfer.to_dict()
        with self._tx() as db:
            run = self._locked_run(db, run_id)
            db.execute("UPDATE runs SET transfer = ? WHERE id = ?", (json.dumps(detail), run_id))
            self._event(db, run.mac, "transfer", {"run": run_id, **detail})

    def last_run(self, mac: str) -> Run | None:
        """The machine's newest run (whatever its state)."""
        with self._read():
            row = self._db.execute(
                "SELECT * FROM runs WHERE mac = ? ORDER BY started DESC, rowid DESC LIMIT 1", (mac,)
            ).fetchone()
        return run_from_row(row) if row else None

    def held_digests(self, image: str, *, since: float) -> set[str]:
        """Digests of ``image``'s versions that machines hold (docs/delta.md): each machine's newest run, when it
        wrote ``image``, ended ``done`` (so verified) at ``since`` or later; what retention keeps an index of."""
        with self._read():
            rows = self._db.execute(
                "SELECT DISTINCT r.digest FROM runs r WHERE r.image = ? AND r.state = ? AND r.erase_only = 0 "
                "AND r.finished >= ? AND r.rowid = (SELECT n.rowid FROM runs n WHERE n.mac = r.mac "
                "ORDER BY n.started DESC, n.rowid DESC LIMIT 1)",
                (image, RunState.DONE.value, since),
            ).fetchall()
        return {str(r[0]) for r in rows}

    def record_delta(self, run_id: str, *, fetched: int | None, verified: int | None, target: str | None) -> None:
        """Keep what a run's report says it fetched (compressed bytes, every chunk source) and verified (plain data
        bytes), and the disk it wrote; None leaves a figure as it was."""
        with self._tx() as db:
            self._locked_run(db, run_id)
            db.execute(
                "UPDATE runs SET fetched_bytes = COALESCE(?, fetched_bytes), verified_bytes = COALESCE(?, "
                "verified_bytes), target = COALESCE(?, target) WHERE id = ?",
                (fetched, verified, target, run_id),
            )

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
        complete verification record of the run's own digest, or for an erase-only run every drive's erasure
        ok; ``writing`` after an ordered erasure only once it is recorded, ok). RunConflict / RunError when
        refused."""
        now = time.time()
        with self._tx() as db:
            run = self._locked_run(db, run_id)
            rows = db.execute("SELECT * FROM verifications WHERE run = ?", (run_id,)).fetchall()
            complete = [v.digest for v in map(verification_from_row, rows) if v.complete]
            plan = db.execute("SELECT plan FROM runs WHERE id = ?", (run_id,)).fetchone()["plan"]
            erase = bool(plan and json.loads(plan).get("erase"))
            oks = [bool(r["ok"]) for r in db.execute("SELECT ok FROM erasures WHERE run_id = ?", (run_id,))]
            whole = db.execute("SELECT ok FROM erasure_runs WHERE run_id = ?", (run_id,)).fetchone()
            if whole is not None and not whole["ok"]:  # every drive ok, but an internal drive was left out
                oks.append(False)
            check_run_move(
                run_id, run.state, state, digest=run.digest, complete_digests=complete, erase=erase,
                erase_only=run.erase_only, erasures_ok=oks, capture=run.capture is not None,
            )  # fmt: skip
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


def free_hostname(wanted: str, taken: set[str], limit: int = 63) -> str:
    """``wanted``, or the first of ``wanted-2``, ``wanted-3`` ... not in ``taken`` (lower case names); the
    base is cut (and a trailing ``-`` dropped) so the name stays within ``limit`` characters."""
    if wanted.lower() not in taken:
        return wanted
    number = 2
    while True:
        suffix = f"-{number}"
        name = wanted[: limit - len(suffix)].rstrip("-") + suffix
        if name.lower() not in taken:
            return name
        number += 1
