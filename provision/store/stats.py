"""The store's figures in a few aggregate queries (``StoreStats``): what ``provision.metrics`` exposes at each
scrape. Counted from the records themselves, so a restart loses nothing and a restored store gives the same
figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.store.base import Database


@dataclass(frozen=True)
class StoreStats:
    """Counts over the whole store. Machines forgotten from the dashboard are left out of ``machines``;
    their runs and records count (they happened)."""

    machines: dict[str, int]  # machine state -> machines
    runs: dict[str, int]  # run state -> runs
    bytes_written: int  # sum of every run's bytes written, as its agent reported them
    verified_chunks: int  # chunks read back right, over every verification record
    durations: list[tuple[str, float]]  # (final state, seconds from start to end) of every run that ended
    hooks: dict[tuple[str, bool], int]  # (hook name, ok) -> hook results
    erasures: dict[tuple[str, bool], int]  # (method, ok) -> drive erasure records
    erased_bytes: dict[str, int]  # method -> bytes of the drives erased ok
    # "multicast", "http", "repair" (of http) -> bytes the runs' transfer reports say came so (docs/multicast.md)
    transfer_bytes: dict[str, int] = field(default_factory=dict)
    # runs planned over a version their machine held (docs/delta.md): "predicted" (their predicted downloads),
    # "fetched" (what they received), "verified" (the data bytes they read back right)
    delta_bytes: dict[str, int] = field(default_factory=dict)


class StatsRecords(Database):
    """The aggregate reads of the store (no writes)."""

    def stats(self) -> StoreStats:
        """The figures; sums by TOTAL (a float: SUM raises "integer overflow" past 2**63, and an agent's report
        may say up to 2**63 - 1 bytes, so two of them stopped every /metrics scrape)."""
        with self._read():
            db = self._db
            machines = db.execute(
                "SELECT state, COUNT(*) FROM machines WHERE forgotten_at IS NULL GROUP BY state"
            ).fetchall()
            runs = db.execute("SELECT state, COUNT(*) FROM runs GROUP BY state").fetchall()
            written = db.execute("SELECT TOTAL(bytes_written) FROM runs").fetchone()[0]
            chunks = db.execute("SELECT TOTAL(verified) FROM verifications").fetchone()[0]
            ended = db.execute(
                "SELECT state, finished - started FROM runs WHERE finished IS NOT NULL ORDER BY rowid"
            ).fetchall()
            hooks = db.execute(
                "SELECT name, error IS NULL AND timed_out = 0 AND exit_code = 0, COUNT(*) FROM hook_results "
                "GROUP BY 1, 2"
            ).fetchall()
            erasures = db.execute(
                "SELECT method, ok, COUNT(*), TOTAL(size_bytes) FROM erasures GROUP BY method, ok"
            ).fetchall()
            moved = db.execute(
                "SELECT TOTAL(json_extract(transfer, '$.bytes_multicast')), TOTAL(json_extract(transfer, "
                "'$.bytes_http')), TOTAL(json_extract(transfer, '$.repair_bytes')) FROM runs WHERE json_valid(transfer)"
            ).fetchone()
            delta = db.execute(
                "SELECT TOTAL(predicted_download), TOTAL(fetched_bytes), TOTAL(verified_bytes) FROM runs "
                "WHERE held_digest IS NOT NULL"
            ).fetchone()
        return StoreStats(
            machines={str(r[0]): int(r[1]) for r in machines},
            runs={str(r[0]): int(r[1]) for r in runs},
            bytes_written=int(written),
            verified_chunks=int(chunks),
            durations=[(str(r[0]), max(0.0, float(r[1]))) for r in ended],
            hooks={(str(r[0]), bool(r[1])): int(r[2]) for r in hooks},
            erasures={(str(r[0]), bool(r[1])): int(r[2]) for r in erasures},
            erased_bytes={str(r[0]): int(r[3]) for r in erasures if r[1]},
            transfer_bytes={"multicast": int(moved[0]), "http": int(moved[1]), "repair": int(moved[2])},
            delta_bytes={"predicted": int(delta[0]), "fetched": int(delta[1]), "verified": int(delta[2])},
        )
