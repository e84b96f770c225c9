"""Run records: allowed transitions, `done` only with a complete read-back of the run's own digest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.errors import RunError
from provision.states import MachineState, RunState
from provision.store import MIGRATIONS, Run, Store
from provision.verdict import report_problems
from provision.wire.api import Report, VerificationReport

MAC = "52:54:00:12:34:56"
DIGEST = "a" * 64
OTHER = "b" * 64


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as s:
        s.seen(MAC)
        yield s


def new_run(store: Store, **kw: str) -> Run:
    return store.create_run(MAC, recipe=kw.get("recipe", "default"), image="tiny", label="L", digest=DIGEST)


def verify(store: Store, run: Run, digest: str = DIGEST, chunks: int = 10, verified: int = 10, ok: bool = True) -> None:
    body = VerificationReport(digest, chunks, verified, ok, bytes_written=0, seconds=0.0, mean_rate=0.0)
    store.record_verification(run.id, body)


def test_migration_2_adds_runs(tmp_path: Path) -> None:
    with Store(tmp_path / "x.db") as s:
        assert s.schema_version == len(MIGRATIONS) >= 2
        names = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "verifications", "machines"} <= names


def test_run_walks_to_done_and_machine_follows(store: Store) -> None:
    run = new_run(store)
    assert run.state is RunState.INVENTORIED and len(run.id) == 32
    assert store.machine(MAC).state is MachineState.IMAGING  # type: ignore[union-attr]
    store.set_run_state(run.id, RunState.WRITING, bytes_written=100)
    store.set_run_state(run.id, RunState.VERIFYING)
    verify(store, run)
    done = store.set_run_state(run.id, RunState.DONE, bytes_written=1000, mean_rate=5.0)
    assert (done.state, done.bytes_written, done.mean_rate) == (RunState.DONE, 1000, 5.0)
    assert done.finished is not None
    assert store.machine(MAC).state is MachineState.DONE  # type: ignore[union-attr]
    assert [r.id for r in store.runs(MAC)] == [run.id]
    with pytest.raises(RunError) as exc:
        store.set_run_state(run.id, RunState.FAILED, "late")
    assert exc.value.conflict
    with pytest.raises(RunError):
        verify(store, run)


@pytest.mark.parametrize(
    ("digest", "chunks", "verified", "ok"),
    [
        (None, 0, 0, True),  # no verification at all
        (OTHER, 10, 10, True),  # another digest
        (DIGEST, 10, 9, True),  # not every chunk
        (DIGEST, 10, 10, False),  # read-back failed
        (DIGEST, 0, 0, True),  # nothing verified
    ],
)
def test_done_needs_a_complete_verification_of_the_same_digest(
    store: Store, digest: str | None, chunks: int, verified: int, ok: bool
) -> None:
    run = new_run(store)
    store.set_run_state(run.id, RunState.WRITING)
    store.set_run_state(run.id, RunState.VERIFYING)
    if digest is not None:
        verify(store, run, digest, chunks, verified, ok)
    with pytest.raises(RunError, match="no complete verification"):
        store.set_run_state(run.id, RunState.DONE)
    assert store.run(run.id).state is RunState.VERIFYING  # type: ignore[union-attr]
    assert store.machine(MAC).state is MachineState.IMAGING  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ((), RunState.DONE),
        ((), RunState.VERIFYING),
        ((RunState.WRITING,), RunState.DONE),
        ((RunState.WRITING,), RunState.REPAIR),
        ((RunState.FAILED,), RunState.WRITING),
        ((RunState.REPAIR,), RunState.INVENTORIED),
    ],
)
def test_transitions_are_checked(store: Store, path: tuple[RunState, ...], bad: RunState) -> None:
    run = new_run(store)
    verify(store, run)  # even a complete verification does not allow skipping states
    for state in path:
        store.set_run_state(run.id, state, "why")
    with pytest.raises(RunError, match="not allowed"):
        store.set_run_state(run.id, bad)


def test_failed_and_repair_set_the_machine_with_reason(store: Store) -> None:
    run = new_run(store)
    store.set_run_state(run.id, RunState.FAILED, "disk vanished")
    m = store.machine(MAC)
    assert m is not None and (m.state, m.reason) == (MachineState.FAILED, "disk vanished")
    run = new_run(store)
    store.set_run_state(run.id, RunState.REPAIR, "SMART failed")
    m = store.machine(MAC)
    assert m is not None and (m.state, m.reason) == (MachineState.REPAIR, "SMART failed")


def test_a_new_run_supersedes_an_unfinished_one(store: Store) -> None:
    first = new_run(store)
    second = new_run(store)
    old = store.run(first.id)
    assert old is not None and old.state is RunState.FAILED and second.id in (old.reason or "")
    assert store.run("nope") is None
    with pytest.raises(RunError, match="no run"):
        store.set_run_state("nope", RunState.WRITING)


HOSTILE = ["'; DROP TABLE runs; --", 'x" OR 1=1 --', "\x00\x1b[31mred\n", "é" * 300, "{{ 7*7 }}"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_data(store: Store, text: str) -> None:
    run = store.create_run(MAC, recipe=text, image=text, label=text, digest=DIGEST)
    store.set_run_state(run.id, RunState.WRITING, text)
    body = VerificationReport(text, 1, 1, True, 0, 0.0, 0.0, wipe_method=text, wipe_ranges=[text])  # type: ignore[list-item]
    store.record_verification(run.id, body)
    store.set_run_state(run.id, RunState.FAILED, text)
    got = store.run(run.id)
    assert got is not None and (got.recipe, got.image, got.reason) == (text, text, text)
    [v] = store.verifications(run.id)
    assert (v.digest, v.wipe_method, v.wipe_ranges) == (text, text, [text])
    assert len(store.runs()) == 1 and store.runs(text) == []


def report(ok: bool = True, reason: str | None = None, **kw: object) -> Report:
    base: dict[str, object] = {
        "digest": DIGEST, "chunks": 4, "verified": 4, "read_back_ok": True, "wipe_method": "zeroout",
        "wipe_ranges": [], "bytes_written": 10, "seconds": 1.0, "mean_rate": 10.0,
    }  # fmt: skip
    return Report("0" * 32, ok, reason, VerificationReport(**{**base, **kw}))  # type: ignore[arg-type]


def test_report_problems(store: Store) -> None:
    run = new_run(store)
    assert report_problems(run, report()) == []
    assert "planned" in report_problems(run, report(digest=OTHER))[0]
    assert report_problems(run, report(verified=3)) == ["verified 3 of 4 chunks"]
    assert report_problems(run, report(read_back_ok=False)) == ["read-back failed"]
    assert "disk full" in report_problems(run, report(ok=False, reason="disk full"))[0]
    assert report_problems(run, report(), 4) == []
    assert report_problems(run, report(), 5) == ["report counts 4 data chunks, the image has 5"]
    # the server cannot read the version's index: the agent's counts are not enough to call the run done
    assert report_problems(run, report(), "image version cannot be loaded") == ["image version cannot be loaded"]
