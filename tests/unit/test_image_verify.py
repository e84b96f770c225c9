"""verify: a corrupted chunk, a missing chunk, a chunk swapped for another valid frame, a bad index, a stale bmap."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from provision.images import ImageStore, ImageVersion
from provision.images.chunks import compress
from tests.support.images import CHUNK, MiB, make_disk


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ImageStore, ImageVersion]:
    # data in chunks 20..23, and chunk 40 repeats chunk 20's content
    raw = make_disk(tmp_path / "d.img", 4 * MiB, [(20 * CHUNK, 4 * CHUNK)], seed=1)
    with raw.open("r+b") as f:
        f.seek(20 * CHUNK)
        first = f.read(CHUNK)
        f.seek(40 * CHUNK)
        f.write(first)
    store = ImageStore(tmp_path / "store")
    return store, store.import_raw(raw, "educ", chunk_size=CHUNK)


def sha_at(version: ImageVersion, i: int) -> str:
    sha = version.index.chunks[i].sha256
    assert sha is not None
    return sha


def test_clean(setup: tuple[ImageStore, ImageVersion]) -> None:
    store, version = setup
    progress: list[int] = []
    report = store.verify("educ", progress=lambda done, total: progress.append(done))
    assert report.ok and report.problems() == []
    assert (report.chunks, report.checked, report.holes) == (64, 7, 57)  # GPT, 4 data, repeat, backup GPT
    assert report.bytes_checked == 7 * CHUNK and progress[-1] == 4 * MiB
    assert report.to_dict()["ok"] is True and report.label == version.label


def test_corrupted_chunk(setup: tuple[ImageStore, ImageVersion]) -> None:
    store, version = setup
    path = store.chunks.path(sha_at(version, 21))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    report = store.verify(version.ref)
    assert not report.ok
    [bad] = report.bad
    assert (bad.index, bad.offset, bad.length, bad.expected) == (21, 21 * CHUNK, CHUNK, sha_at(version, 21))
    assert "undecodable" in bad.found or "hashes to" in bad.found
    assert report.problems() == [str(bad)]
    assert f"chunk 21 at offset {21 * CHUNK}" in str(bad)


def test_chunk_replaced_by_another_valid_frame(setup: tuple[ImageStore, ImageVersion]) -> None:
    store, version = setup
    other = b"\x01" * CHUNK
    store.chunks.path(sha_at(version, 22)).write_bytes(compress(other))
    [bad] = store.verify("educ").bad
    assert bad.index == 22 and bad.found == f"content hashes to {hashlib.sha256(other).hexdigest()}"


def test_missing_chunk_reported_at_every_position(setup: tuple[ImageStore, ImageVersion]) -> None:
    store, version = setup
    assert sha_at(version, 20) == sha_at(version, 40)
    store.chunks.path(sha_at(version, 20)).unlink()
    report = store.verify("educ")
    assert [(b.index, b.offset, b.found) for b in report.bad] == [
        (20, 20 * CHUNK, "missing"),
        (40, 40 * CHUNK, "missing"),
    ]
    assert report.bmap_problem is None  # not checked while chunks are bad


def test_truncated_frame(setup: tuple[ImageStore, ImageVersion]) -> None:
    store, version = setup
    path = store.chunks.path(sha_at(version, 23))
    path.write_bytes(path.read_bytes()[:100])
    [bad] = store.verify("educ").bad
    assert bad.index == 23 and "undecodable" in bad.found


def test_corrupted_index(setup: tuple[ImageStore, ImageVersion]) -> None:
    store, version = setup
    path = store.index_path("educ", version.digest)
    path.write_bytes(path.read_bytes().replace(b'"root"', b'"ROOT"'))
    report = store.verify("educ")
    assert not report.ok and report.index_problem is not None and "hashes to" in report.index_problem
    assert report.bad == ()  # the chunks themselves are fine
    path.write_bytes(b"{garbage")
    report = store.verify("educ")
    assert report.label is None and report.checked == 0 and "not a valid image index" in str(report.index_problem)


def test_stale_bmap_is_reported_and_rewritten(setup: tuple[ImageStore, ImageVersion]) -> None:
    store, version = setup
    path = store.bmap_path("educ", version.digest)
    good = path.read_text()
    path.write_text(good.replace("<Range", "<Range x='1'", 1))
    report = store.verify("educ")
    assert not report.ok and report.bmap_problem is not None and "rewritten" in report.bmap_problem
    assert path.read_text() == good
    assert store.verify("educ").ok
    path.unlink()
    assert store.verify("educ").ok and path.read_text() == good


def test_unreadable_chunk(setup: tuple[ImageStore, ImageVersion]) -> None:
    store, version = setup
    path = store.chunks.path(sha_at(version, 22))
    path.unlink()
    path.mkdir()  # reading it fails with EISDIR: reported, not raised
    [bad] = store.verify("educ").bad
    assert bad.index == 22 and bad.found.startswith("unreadable")
