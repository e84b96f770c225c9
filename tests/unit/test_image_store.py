"""The store: import, publish, resolve, list; bad input publishes nothing; retention and gc; the lock."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provision import __version__
from provision.images import ImageError, ImageNotFound, ImageStore, ImageVersion, StoreBusy
from provision.images.errors import CorruptImage
from tests.support.files import sha256_file
from tests.support.images import CHUNK, MiB, make_disk

T0 = datetime(2025, 11, 27, 3, 0, tzinfo=UTC)
SIZE = 4 * MiB


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store", lock_timeout=2)


def disk(tmp_path: Path, seed: int, extents: list[tuple[int, int]] | None = None, name: str = "") -> Path:
    path = tmp_path / (name or f"disk{seed}.img")
    return make_disk(path, SIZE, extents or [(2 * MiB, 3 * CHUNK), (3 * MiB + seed * CHUNK, 100)], seed=seed)


def imp(store: ImageStore, raw: Path, name: str = "educ", hours: int = 0, **kw: object) -> ImageVersion:
    return store.import_raw(raw, name, chunk_size=CHUNK, created=T0 + timedelta(hours=hours), **kw)  # type: ignore[arg-type]


def chunk_files(store: ImageStore) -> set[str]:
    return {sha for sha, _ in store.chunks.iter_stored()}


def test_import_publishes_and_records(store: ImageStore, tmp_path: Path) -> None:
    raw = disk(tmp_path, 1)
    seen: list[tuple[int, int]] = []
    version = imp(
        store,
        raw,
        provenance={"definition": "abc", "packages": {"bash": "5.2.15-2"}},
        progress=lambda done, total: seen.append((done, total)),
    )
    assert store.resolve("educ") == version == store.resolve("educ@current")
    assert store.current_path("educ").read_text() == f"{version.digest}\n"
    path = store.index_path("educ", version.digest)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == version.digest
    ix = version.index
    assert (ix.disk_size, ix.sector_size, ix.chunk_size, ix.layout.label) == (SIZE, 512, CHUNK, "gpt")
    assert [p.name for p in ix.layout.partitions] == ["EFI", "root"]
    assert ix.provenance["definition"] == "abc" and ix.provenance["packages"] == {"bash": "5.2.15-2"}
    assert ix.provenance["source"] == {
        "file": raw.name,
        "size": SIZE,
        "sha256": sha256_file(raw),
        "by": f"provision {__version__}",
    }
    assert version.label == f"20251127-030000-{version.digest[:12]}"
    assert seen[-1] == (SIZE, SIZE) and len(seen) == SIZE // CHUNK
    assert chunk_files(store) == set(ix.unique_chunks())


def test_import_without_publish(store: ImageStore, tmp_path: Path) -> None:
    v1 = imp(store, disk(tmp_path, 1))
    v2 = imp(store, disk(tmp_path, 2), hours=1, publish=False)
    assert store.resolve("educ") == v1
    assert store.versions("educ") == (v2, v1)
    store.publish(v2)
    assert store.resolve("educ") == v2


def test_same_disk_twice_is_the_same_version(store: ImageStore, tmp_path: Path) -> None:
    raw = disk(tmp_path, 1)
    assert imp(store, raw) == imp(store, raw)
    assert len(store.versions("educ")) == 1


def test_resolve(store: ImageStore, tmp_path: Path) -> None:
    v1 = imp(store, disk(tmp_path, 1))
    v2 = imp(store, disk(tmp_path, 2), hours=1)
    assert store.resolve(f"educ@{v1.label}") == v1
    assert store.resolve(f"educ@{v1.digest[:8]}") == v1
    assert store.resolve(f"educ@{v2.digest}") == v2
    with pytest.raises(ImageNotFound, match="no version"):
        store.resolve(f"educ@{v1.label[:-1]}0" if not v1.label.endswith("0") else f"educ@{v1.label[:-1]}1")
    with pytest.raises(ImageNotFound, match="no image named other"):
        store.resolve("other")
    with pytest.raises(ImageError, match="bad version"):
        store.resolve("educ@v1")


def test_ambiguous_prefix(store: ImageStore, tmp_path: Path) -> None:
    folder = store.versions_dir("educ")
    folder.mkdir(parents=True)
    for d in ("abcdef01" + "0" * 56, "abcdef01" + "1" * 56):
        (folder / f"{d}.json").write_text("{}")
    with pytest.raises(ImageError, match="ambiguous: 2 versions"):
        store.find_digest("educ", "abcdef01")


def test_list_images(store: ImageStore, tmp_path: Path) -> None:
    v1 = imp(store, disk(tmp_path, 1))
    light = imp(store, disk(tmp_path, 2), name="educ-light", publish=False)
    infos = store.list_images()
    assert [(i.name, i.current, i.versions) for i in infos] == [("educ", v1, (v1,)), ("educ-light", None, (light,))]
    data = json.loads(json.dumps([i.to_dict() for i in infos]))
    assert data[0]["current"]["label"] == v1.label and "chunks" in data[0]["current"]
    assert data[1]["current"] is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"x" * 1000, "not a multiple of the sector size"),
        (bytes(1 << 20), "no partition table"),
    ],
)
def test_not_a_disk_publishes_nothing(store: ImageStore, tmp_path: Path, content: bytes, message: str) -> None:
    raw = tmp_path / "notadisk.img"
    raw.write_bytes(content)
    with pytest.raises(ImageError, match=message) as err:
        imp(store, raw)
    assert str(raw) in str(err.value)
    assert store.list_images() == () and store.digests("educ") == []


def test_truncated_disk_publishes_nothing(store: ImageStore, tmp_path: Path) -> None:
    v1 = imp(store, disk(tmp_path, 1))
    raw = disk(tmp_path, 2)
    os.truncate(raw, SIZE // 2)
    with pytest.raises(ImageError, match="truncated"):
        imp(store, raw, hours=1)
    assert store.resolve("educ") == v1 and store.versions("educ") == (v1,)


def test_missing_raw_file(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot open"):
        imp(store, tmp_path / "nope.img")


def test_provenance_must_be_json(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not JSON"):
        imp(store, disk(tmp_path, 1), provenance={"when": datetime.now(UTC)})
    with pytest.raises(ImageError, match="reserved"):
        imp(store, disk(tmp_path, 1), provenance={"source": "mine"})


def test_publish_refuses_missing_chunks(store: ImageStore, tmp_path: Path) -> None:
    v1 = imp(store, disk(tmp_path, 1))
    v2 = imp(store, disk(tmp_path, 2), hours=1, publish=False)
    only_v2 = set(v2.index.unique_chunks()) - set(v1.index.unique_chunks())
    store.chunks.path(sorted(only_v2)[0]).unlink()
    with pytest.raises(ImageError, match="1 chunks are missing"):
        store.publish(v2)
    assert store.resolve("educ") == v1


def test_corrupt_index_is_refused_on_load(store: ImageStore, tmp_path: Path) -> None:
    v1 = imp(store, disk(tmp_path, 1))
    path = store.index_path("educ", v1.digest)
    path.write_bytes(path.read_bytes().replace(b'"EFI"', b'"EFJ"'))
    with pytest.raises(CorruptImage, match="hashes to"):
        ImageStore(store.root).resolve("educ")


def test_retention_and_gc(store: ImageStore, tmp_path: Path) -> None:
    versions = [imp(store, disk(tmp_path, i), hours=i, publish=False) for i in range(6)]
    store.publish(versions[1])  # current is old: a rollback
    other = imp(store, disk(tmp_path, 9), name="educ-light")
    report = store.retain("educ", keep=2, in_use={versions[3].digest})
    kept = {versions[i].digest for i in (5, 4, 3, 1)}
    assert {v.digest for v in store.versions("educ")} == kept
    assert report.removed == (versions[2].label, versions[0].label)
    assert report.kept == tuple(versions[i].label for i in (5, 4, 3, 1))
    assert store.resolve("educ") == versions[1]
    assert not store.bmap_path("educ", versions[0].digest).exists()
    referenced = set().union(*(set(store.load("educ", d).index.unique_chunks()) for d in kept))
    referenced |= set(other.index.unique_chunks())  # chunks of every image are marked
    assert chunk_files(store) == referenced
    removed = (set(versions[0].index.unique_chunks()) | set(versions[2].index.unique_chunks())) - referenced
    assert removed and report.gc.removed_chunks == len(removed)
    assert report.gc.freed_bytes > 0
    for v in (*[versions[i] for i in (5, 4, 3, 1)], other):
        assert store.verify(v.ref).ok


def test_retention_arguments(store: ImageStore, tmp_path: Path) -> None:
    imp(store, disk(tmp_path, 1))
    with pytest.raises(ImageError, match="keep must be at least 1"):
        store.retain("educ", keep=0)
    with pytest.raises(ImageError, match="full sha256"):
        store.retain("educ", keep=1, in_use={"abc"})
    with pytest.raises(ImageNotFound):
        store.retain("nope", keep=1)


def test_gc_removes_orphans_and_temps(store: ImageStore, tmp_path: Path) -> None:
    v1 = imp(store, disk(tmp_path, 1))
    orphan = store.chunks.put(b"orphan" * 100)
    temp = store.chunks.path(orphan.sha256).with_name(".tmp-1-dead-x.zst")
    temp.write_bytes(b"partial")
    stale = store.versions_dir("educ") / ("f" * 64 + ".bmap")
    stale.write_text("old")
    report = store.gc()
    assert (report.removed_chunks, report.removed_temps) == (1, 2)
    assert chunk_files(store) == set(v1.index.unique_chunks())
    assert not temp.exists() and not stale.exists()
    assert store.verify("educ").ok


def test_gc_refuses_when_an_index_is_unreadable(store: ImageStore, tmp_path: Path) -> None:
    imp(store, disk(tmp_path, 1))
    store.chunks.put(b"orphan" * 100)
    (store.versions_dir("educ") / ("e" * 64 + ".json")).write_text("{not json")
    before = chunk_files(store)
    with pytest.raises(CorruptImage, match="garbage collection refused"):
        store.gc()
    assert chunk_files(store) == before


def test_lock_excludes_publish_while_an_import_writes(store: ImageStore, tmp_path: Path) -> None:
    v1 = imp(store, disk(tmp_path, 1))
    store.lock.timeout = 0.2
    with store.lock.shared("import elsewhere"), pytest.raises(StoreBusy, match="stayed locked"):
        store.publish(v1)
    with store.lock.shared("import elsewhere"), store.lock.shared("another import"):
        pass  # imports run side by side


def test_lock_waits_for_the_holder(store: ImageStore, tmp_path: Path) -> None:
    raw = disk(tmp_path, 1)
    order: list[str] = []
    held = threading.Event()

    def retention_run() -> None:
        with store.lock.exclusive("retain"):
            held.set()
            time.sleep(0.3)
            order.append("retain done")

    thread = threading.Thread(target=retention_run)
    thread.start()
    held.wait(5)
    imp(store, raw)
    order.append("import done")
    thread.join()
    assert order == ["retain done", "import done"]
