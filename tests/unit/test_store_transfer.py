"""The store's part of rack multicast: how many runs in flight want a version (the transfer choice at hello),
and a run's transfer report kept with it and as an event."""

from __future__ import annotations

import time
from pathlib import Path

from provision.states import RunState
from provision.store import Store
from provision.wire.carousel import TransferReport

DIGEST = "d" * 64
OTHER = "e" * 64


def run(store: Store, mac: str, digest: str = DIGEST) -> str:
    store.seen(mac)
    return store.create_run(mac, recipe="r", image="img", label="L", digest=digest).id


def test_runs_wanting_counts_open_recent_runs_of_other_machines(tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite") as store:
        since = time.time() - 60
        assert store.runs_wanting(DIGEST, since=since) == 0
        run(store, "52:54:00:00:00:01")
        ended = run(store, "52:54:00:00:00:02")
        run(store, "52:54:00:00:00:03", OTHER)
        store.set_run_state(ended, RunState.FAILED, "test")
        assert store.runs_wanting(DIGEST, since=since) == 1
        assert store.runs_wanting(DIGEST, since=since, mac="52:54:00:00:00:01") == 0  # its own run: not counted
        assert store.runs_wanting(DIGEST, since=time.time() + 1) == 0  # too old
        assert store.runs_wanting(OTHER, since=since) == 1


def test_runs_wanting_counts_only_runs_that_still_need_chunks(tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite") as store:
        since = time.time() - 60
        writing = run(store, "52:54:00:00:00:01")
        store.set_run_state(writing, RunState.WRITING)
        verifying = run(store, "52:54:00:00:00:02")
        store.set_run_state(verifying, RunState.WRITING)
        store.set_run_state(verifying, RunState.VERIFYING)
        run(store, "52:54:00:00:00:03")  # inventoried
        assert store.runs_wanting(DIGEST, since=since) == 2  # the one verifying fetches no chunk any more


def test_transfer_is_kept_with_the_run(tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite") as store:
        run_id = run(store, "52:54:00:00:00:01")
        assert store.run(run_id).transfer is None  # type: ignore[union-attr]
        report = TransferReport(mode="multicast", bytes_multicast=900, bytes_http=10, datagrams_lost=3)
        store.record_transfer(run_id, report)
        found = store.run(run_id)
        assert found is not None and found.transfer == report.to_dict()
        assert TransferReport.from_dict(found.transfer) == report
        events = [e for e in store.events("52:54:00:00:00:01") if e.kind == "transfer"]
        assert len(events) == 1 and events[0].detail["bytes_multicast"] == 900
        assert store.stats().transfer_bytes == {"multicast": 900, "http": 10, "repair": 0}


def test_stats_sum_figures_past_what_sqlite_s_sum_holds(tmp_path: Path) -> None:
    """Two agents' reports of 2**62 bytes each (valid: below 2**63): /metrics still reads (SUM overflowed)."""
    with Store(tmp_path / "db.sqlite") as store:
        for mac in ("52:54:00:00:00:01", "52:54:00:00:00:02"):
            store.record_transfer(run(store, mac), TransferReport(mode="unicast", bytes_http=1 << 62))
        assert store.stats().transfer_bytes == {"multicast": 0, "http": 1 << 63, "repair": 0}
