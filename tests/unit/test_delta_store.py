"""Delta re-imaging on the server (provision.delta, the store's run columns of migration 11, retention keeping
the index of versions machines hold): what a machine holds by the rule of docs/delta.md, the prediction against
the real changed chunks, and the index that outlives its version's chunks."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from provision.delta import HELD_DAYS, Deltas, held_for_retention, transfer_note
from provision.images import ImageNotFound, ImageStore
from provision.states import RunState
from provision.store import MIGRATIONS, Store
from tests.support.chunk_server import build_store
from tests.support.delta import CHANGED, done_run, import_v2

MAC = "52:54:00:de:17:01"


@pytest.fixture
def images(tmp_path: Path) -> tuple[ImageStore, Path]:
    store, _, raw = build_store(tmp_path)
    return store, raw


def test_a_machine_whose_last_run_is_done_holds_that_version_and_the_prediction_is_the_changed_chunks(
    tmp_path: Path, images: tuple[ImageStore, Path]
) -> None:
    store, raw = images
    v1 = store.resolve("educ")
    v2 = import_v2(store, raw)
    changed = [i for i, (a, b) in enumerate(zip(v1.index.chunks, v2.index.chunks, strict=True)) if a != b]
    assert len(changed) == len(CHANGED)
    with Store(tmp_path / "db.sqlite") as db:
        deltas = Deltas(db, store)
        assert deltas.held(MAC, v2, target_disk={}, erase=False) is None  # never imaged
        run = done_run(db, MAC, v1)
        held = deltas.held(MAC, v2, target_disk={}, erase=False)
        assert held is not None
        assert (held.plan.digest, held.plan.version, held.plan.run) == (v1.digest, v1.label, run)
        sizes = deltas.sizes(v2)
        assert held.plan.chunks == len(changed)
        assert held.plan.bytes == sum(v2.index.chunks[i].length for i in changed)
        assert held.plan.download == sum(sizes[v2.index.chunks[i].sha256 or ""] for i in changed)
        assert held.prediction.total_download == sum(sizes.values()) and held.small
        assert transfer_note(held) is not None and transfer_note(None) is None
        assert deltas.held(MAC, v2, target_disk={}, erase=True) is None  # an erasure destroys what it holds
        assert deltas.held(MAC, v2, target_disk={"prefer": "nvme"}, erase=False) is None  # maybe another disk
        db.seen(MAC)
        db.create_run(MAC, recipe="r", image="educ", label=v2.label, digest=v2.digest)  # a later run, not done
        assert deltas.held(MAC, v2, target_disk={}, erase=False) is None


def test_held_digests_are_the_newest_done_run_of_each_machine_within_the_bound(
    tmp_path: Path, images: tuple[ImageStore, Path]
) -> None:
    store, raw = images
    v1 = store.resolve("educ")
    v2 = import_v2(store, raw)
    with Store(tmp_path / "db.sqlite") as db:
        done_run(db, MAC, v1)
        done_run(db, "52:54:00:de:17:02", v1)
        done_run(db, "52:54:00:de:17:02", v2)  # this one holds v2 now
        db.seen("52:54:00:de:17:03")
        failed = db.create_run("52:54:00:de:17:03", recipe="r", image="educ", label="L", digest=v2.digest)
        db.set_run_state(failed.id, RunState.FAILED, "test")
        assert db.held_digests("educ", since=time.time() - 60) == {v1.digest, v2.digest}
        assert db.held_digests("educ", since=time.time() + 60) == set()
        assert db.held_digests("other", since=0) == set()


def test_retention_keeps_the_index_of_a_held_version_not_its_chunks(
    tmp_path: Path, images: tuple[ImageStore, Path]
) -> None:
    store, raw = images
    v1 = store.resolve("educ")
    v2 = import_v2(store, raw)
    only_v1 = set(v1.index.unique_chunks()) - set(v2.index.unique_chunks())
    report = store.retain("educ", keep=1, held={v1.digest})
    assert report.removed == (v1.label,) and report.indexes_held == (v1.label,)
    assert report.gc.removed_chunks == len(only_v1) and not any(store.chunks.has(s) for s in only_v1)
    assert [v.digest for v in store.versions("educ")] == [v2.digest]  # not listed, not resolvable
    assert store.held_index("educ", v1.digest) == v1.index
    with Store(tmp_path / "db.sqlite") as db:
        done_run(db, MAC, v1)
        held = Deltas(db, store).held(MAC, v2, target_disk={}, erase=False)
        assert held is not None and held.plan.chunks == len(CHANGED)
    store.retain("educ", keep=1)  # held None: the kept index is left as it is
    assert store.held_index("educ", v1.digest) == v1.index
    store.retain("educ", keep=1, held=set())  # no machine holds it any more: its index goes
    with pytest.raises(ImageNotFound):
        store.held_index("educ", v1.digest)


def test_a_store_of_schema_10_is_migrated_and_its_runs_read_with_no_delta(tmp_path: Path) -> None:
    path = tmp_path / "provision.db"
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:10], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    now = time.time()
    db.execute("INSERT INTO machines (mac, state, first_seen, last_seen) VALUES (?, 'done', ?, ?)", (MAC, now, now))
    db.execute("INSERT INTO runs (id, mac, image, label, digest, state, started, finished) "
               "VALUES ('r1', ?, 'educ', 'L1', ?, 'done', ?, ?)", (MAC, "d" * 64, now - 60, now))  # fmt: skip
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        [run] = store.runs(MAC)
        assert (run.held_digest, run.predicted_download, run.fetched_bytes, run.verified_bytes) == (None,) * 4
        store.record_delta("r1", fetched=123, verified=None, target="/dev/sda")
        store.record_delta("r1", fetched=None, verified=456, target=None)
        [run] = store.runs(MAC)
        assert (run.fetched_bytes, run.verified_bytes, run.target) == (123, 456, "/dev/sda")


def test_runs_wanting_leaves_out_small_deltas(tmp_path: Path, images: tuple[ImageStore, Path]) -> None:
    store, raw = images
    v1 = store.resolve("educ")
    v2 = import_v2(store, raw)
    with Store(tmp_path / "db.sqlite") as db:
        done_run(db, MAC, v1)
        held = Deltas(db, store).held(MAC, v2, target_disk={}, erase=False)
        assert held is not None
        db.create_run(MAC, recipe="r", image="educ", label=v2.label, digest=v2.digest, held=held.plan)
        since = time.time() - 60
        assert db.runs_wanting(v2.digest, since=since) == 1
        assert db.runs_wanting(v2.digest, since=since, small=held.plan.download) == 0
        assert db.runs_wanting(v2.digest, since=since, small=held.plan.download - 1) == 1


def test_retention_holds_the_versions_of_machines_imaged_within_the_bound(
    tmp_path: Path, images: tuple[ImageStore, Path]
) -> None:
    store, _ = images
    v1 = store.resolve("educ")
    with Store(tmp_path / "db.sqlite") as db:
        done_run(db, MAC, v1)
        assert held_for_retention(db, "educ") == {v1.digest}
        assert held_for_retention(db, "educ", now=time.time() + (HELD_DAYS + 1) * 86400) == set()
