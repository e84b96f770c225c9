"""write_image against sparse files (os.truncate) with a fake session: no sockets.

Holes and wipe policies, unaligned sizes, random holes, targets larger than the image, resume and delta
(counting fetches), a chunk corrupted on the wire (re-fetched, never written: every write is recorded),
K bad attempts, a target too small, and a disk that does not store what it is given (never reported good).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.agent import (
    ChunkCorrupt,
    DiskTarget,
    FetchFailed,
    HttpRefused,
    IndexInvalid,
    Progress,
    RetryPolicy,
    TargetTooSmall,
    VerifyFailed,
    WriteReport,
    read_index,
    write_image,
)
from tests.support.agent import (
    CHUNK,
    FAST,
    INDEX_PATH,
    SERVER,
    FakeImage,
    FakeSession,
    MiB,
    RecordingTarget,
    build_image,
    random_disk,
    sha,
)
from tests.support.files import sha256_file, sparse_file


def write(session: FakeSession, target: Path | DiskTarget, **kw: object) -> WriteReport:
    kw.setdefault("retry", FAST)
    return write_image(SERVER, INDEX_PATH, target, session=session, **kw)  # type: ignore[arg-type]


def assert_image_on(path: Path, image: FakeImage) -> None:
    assert sha256_file(path, len(image.raw)) == sha(image.raw)


def test_random_holes_unaligned_size_short_last_chunk(tmp_path: Path) -> None:
    size = 37 * CHUNK + 3 * 512  # the last chunk is 1536 bytes
    raw = bytearray(random_disk(size, 0.5, seed=11))
    raw[-1] = 7  # the short last chunk holds data
    image = build_image(bytes(raw))
    target = sparse_file(tmp_path / "disk.img", size)
    session = FakeSession(image)
    progress: list[Progress] = []
    report = write(session, target, progress=progress.append, log_id="52:54:00:12:34:56")
    assert_image_on(target, image)
    data = image.data_indexes()
    assert report.ok and report.verified == len(data) == report.fetched and report.skipped == 0
    assert report.holes == report.holes_verified == 38 - len(data) and report.chunks == 38
    assert report.bytes_written == sum(image.chunks[i]["length"] for i in data)  # type: ignore[misc]
    assert report.downloads == len(set(image.frames)) and report.bytes_fetched == sum(map(len, image.frames.values()))
    assert report.wipe == "zero" and report.wipe_method in ("fallocate-zero-range", "write-zeros")
    assert (report.target_kind, report.io_mode, report.readback) == ("file", "buffered", "page cache")
    assert report.wiped_bytes == size - report.bytes_written
    assert report.digest == read_index(image.index).digest and report.image == "educ"
    assert session.gets[0] == SERVER + INDEX_PATH
    assert [p.stage for p in progress if p.done == 0] == ["checking", "writing", "wiping", "verifying"]
    assert all(p.done <= p.total for p in progress) and progress[-1].done == progress[-1].total
    d = report.to_dict()
    assert d["ok"] and d["wipe"]["compact"]
    assert d["stage_seconds"].keys() == {"checking", "writing", "wiping", "fsync", "verifying"}


def test_all_holes(tmp_path: Path) -> None:
    image = build_image(bytes(5 * CHUNK))
    target = tmp_path / "disk.img"
    target.write_bytes(os.urandom(5 * CHUNK))  # an old disk: every byte must become zero
    session = FakeSession(image)
    report = write(session, target)
    assert report.ok and report.fetched == report.verified == 0 and report.holes_verified == 5
    assert report.wipe_ranges == ((0, 5 * CHUNK),)
    assert sum(session.chunk_gets.values()) == 0
    assert target.read_bytes() == bytes(5 * CHUNK)


@pytest.mark.parametrize("wipe", ["zero", "discard", "none"])
def test_wipe_policies_on_an_old_disk(tmp_path: Path, wipe: str) -> None:
    image = build_image(random_disk(12 * CHUNK, [0, 1, 5, 11], seed=3))
    old = os.urandom(12 * CHUNK)
    target = tmp_path / "disk.img"
    target.write_bytes(old)
    report = write(FakeSession(image), target, wipe=wipe)
    data = target.read_bytes()
    for i, c in enumerate(image.chunks):
        piece = data[i * CHUNK : (i + 1) * CHUNK]
        if c["sha256"] is not None:
            assert sha(piece) == c["sha256"]
        elif wipe == "none":
            assert piece == old[i * CHUNK : (i + 1) * CHUNK]
        else:  # a punched hole in a file reads as zeros too
            assert piece == bytes(CHUNK)
    assert report.wipe_ranges == ((2 * CHUNK, 3 * CHUNK), (6 * CHUNK, 5 * CHUNK))
    expected = {"zero": ("fallocate-zero-range", "write-zeros"), "discard": ("fallocate-punch-hole",),
                "none": ("none",)}[wipe]  # fmt: skip
    assert report.wipe_method in expected
    assert report.holes_verified == (8 if wipe == "zero" else 0) and report.ok
    assert report.wiped_bytes == (0 if wipe == "none" else 8 * CHUNK)


def test_target_larger_than_the_image_keeps_its_tail(tmp_path: Path) -> None:
    image = build_image(random_disk(6 * CHUNK + 512, [0, 2, 6], seed=5))
    tail = os.urandom(3 * CHUNK)
    target = sparse_file(tmp_path / "disk.img", 6 * CHUNK + 512)
    with target.open("ab") as f:
        f.write(tail)
    report = write(FakeSession(image), target, reread_from_media=True)
    assert report.ok and report.readback == "medium (cache dropped)"
    data = target.read_bytes()
    assert sha(data[: len(image.raw)]) == sha(image.raw) and data[len(image.raw) :] == tail


def test_target_too_small(tmp_path: Path) -> None:
    image = build_image(random_disk(8 * CHUNK, [1], seed=1))
    target = sparse_file(tmp_path / "disk.img", 8 * CHUNK - 512)
    session = FakeSession(image)
    with pytest.raises(TargetTooSmall) as exc:
        write(session, target)
    assert (exc.value.size, exc.value.disk_size, exc.value.target) == (8 * CHUNK - 512, 8 * CHUNK, str(target))
    assert str(8 * CHUNK) in str(exc.value) and str(8 * CHUNK - 512) in str(exc.value)
    assert sum(session.chunk_gets.values()) == 0 and target.read_bytes() == bytes(8 * CHUNK - 512)


def test_resume_after_a_cut_fetches_only_the_rest(tmp_path: Path) -> None:
    image = build_image(random_disk(40 * CHUNK, 0.7, seed=21))
    data = image.data_indexes()
    target = sparse_file(tmp_path / "disk.img", 40 * CHUNK)
    cut = FakeSession(image, down_after=10)
    with pytest.raises(FetchFailed) as exc:
        write(cut, target, workers=1, retry=RetryPolicy(deadline=0.2, initial_delay=0.01, max_delay=0.05))
    assert exc.value.chunk is not None
    again = FakeSession(image)
    report = write(again, target, workers=3)
    assert report.ok and report.skipped == 10 and report.fetched == len(data) - 10
    assert sum(again.chunk_gets.values()) == len(data) - 10
    assert not set(again.chunk_gets) & {d for d, n in cut.chunk_gets.items() if n}  # nothing fetched twice
    assert_image_on(target, image)
    third = FakeSession(image)
    report = write(third, target)
    assert report.fetched == 0 and report.skipped == len(data) and sum(third.chunk_gets.values()) == 0


def test_delta_from_an_older_version(tmp_path: Path) -> None:
    old = bytearray(random_disk(20 * CHUNK, [0, 1, 2, 3, 8, 9, 15], seed=8))
    target = tmp_path / "disk.img"
    target.write_bytes(old)
    new = bytearray(old)
    new[2 * CHUNK + 100] ^= 1  # changed
    new[9 * CHUNK : 10 * CHUNK] = bytes(CHUNK)  # became a hole
    new[12 * CHUNK : 12 * CHUNK + 10] = b"new data!!"  # a hole became data
    image = build_image(bytes(new))
    session = FakeSession(image)
    report = write(session, target)
    assert report.ok and report.fetched == 2 and report.skipped == 5  # 0, 1, 3, 8, 15
    assert sorted(session.chunk_gets) == sorted([sha(new[2 * CHUNK : 3 * CHUNK]), sha(new[12 * CHUNK : 13 * CHUNK])])
    assert target.read_bytes() == bytes(new)


def test_a_repeated_chunk_is_fetched_once_and_written_twice(tmp_path: Path) -> None:
    block = os.urandom(CHUNK)
    raw = block + bytes(CHUNK) + block + os.urandom(CHUNK) + block
    image = build_image(raw)
    session = FakeSession(image)
    report = write(session, sparse_file(tmp_path / "disk.img", len(raw)))
    assert report.fetched == 4 and report.downloads == 2 and session.chunk_gets[sha(block)] == 1
    assert_image_on(tmp_path / "disk.img", image)


def test_a_chunk_corrupted_on_the_wire_is_never_written(tmp_path: Path) -> None:
    image = build_image(random_disk(16 * CHUNK, [0, 3, 4, 7, 12], seed=9))
    path = sparse_file(tmp_path / "disk.img", 16 * CHUNK)
    bad = image.chunks[4]["sha256"]
    assert isinstance(bad, str)
    session = FakeSession(image)
    session.fault(bad, "corrupt")
    seen_on_disk: list[str] = []

    def after_each_attempt(url: str) -> None:  # what the target holds at that chunk when it is fetched again
        if url.endswith(bad):
            seen_on_disk.append(sha(path.read_bytes()[4 * CHUNK : 5 * CHUNK]))

    session.on_get = after_each_attempt
    with RecordingTarget.open(path) as target:
        report = write(session, target, workers=2)
    assert report.ok and session.chunk_gets[bad] == 2
    assert seen_on_disk == [sha(bytes(CHUNK)), sha(bytes(CHUNK))]  # nothing written between the attempts
    expected = {c * CHUNK: image.chunks[c]["sha256"] for c in image.data_indexes()}
    assert sorted(target.writes) == sorted(expected.items())  # every write was a right chunk, once
    assert [(f.kind, f.chunk) for f in report.failures] == [("corrupt", 4)] and report.failure_count == 1
    assert_image_on(path, image)


def test_k_bad_attempts_fail_and_nothing_bad_is_written(tmp_path: Path) -> None:
    image = build_image(random_disk(8 * CHUNK, [1, 2, 6], seed=10))
    path = sparse_file(tmp_path / "disk.img", 8 * CHUNK)
    bad = image.chunks[6]["sha256"]
    assert isinstance(bad, str)
    session = FakeSession(image)
    session.fault(bad, "corrupt", "garbage", "corrupt")
    with RecordingTarget.open(path) as target, pytest.raises(ChunkCorrupt) as exc:
        write(session, target, workers=1)
    assert (exc.value.chunk, exc.value.offset, exc.value.expected) == (6, 6 * CHUNK, bad)
    assert exc.value.attempts == 3 and session.chunk_gets[bad] == 3
    assert all(digest != exc.value.actual for _, digest in target.writes)
    assert 6 * CHUNK not in {offset for offset, _ in target.writes}
    assert path.read_bytes()[6 * CHUNK : 7 * CHUNK] == bytes(CHUNK)


def test_a_4xx_chunk_is_fatal(tmp_path: Path) -> None:
    image = build_image(random_disk(4 * CHUNK, [0, 2], seed=2))
    bad = image.chunks[2]["sha256"]
    assert isinstance(bad, str)
    del image.frames[bad]  # the server does not have it: 404
    with pytest.raises(HttpRefused) as exc:
        write(FakeSession(image), sparse_file(tmp_path / "disk.img", 4 * CHUNK))
    assert exc.value.url == f"{SERVER}/chunks/{bad}" and exc.value.status == 404 and exc.value.chunk == 2


def test_transient_failures_are_reported(tmp_path: Path) -> None:
    image = build_image(random_disk(6 * CHUNK, [0, 1, 2, 3], seed=4))
    session = FakeSession(image)
    digests = [image.chunks[i]["sha256"] for i in range(4)]
    for digest, fault in zip(digests, ["refused", "500", "truncated", "cut"], strict=True):
        assert isinstance(digest, str)
        session.fault(digest, fault)
    report = write(session, sparse_file(tmp_path / "disk.img", 6 * CHUNK))
    assert report.ok and report.failure_count == 4 and {f.kind for f in report.failures} == {"transient"}
    assert {f.chunk for f in report.failures} == {0, 1, 2, 3}


def test_a_disk_that_does_not_store_what_it_is_given(tmp_path: Path) -> None:
    image = build_image(random_disk(8 * CHUNK, [0, 3, 5], seed=6))
    path = sparse_file(tmp_path / "disk.img", 8 * CHUNK)
    with RecordingTarget.open(path) as target:
        target.lie_at = {3 * CHUNK}
        with pytest.raises(VerifyFailed) as exc:
            write(FakeSession(image), target)
    [mismatch] = exc.value.mismatches
    assert (mismatch.chunk, mismatch.offset, mismatch.expected) == (3, 3 * CHUNK, image.chunks[3]["sha256"])
    assert mismatch.actual != mismatch.expected and exc.value.target == str(path) and exc.value.checked == 8
    assert "chunk 3" in str(exc.value)


def test_a_hole_that_does_not_read_back_zero(tmp_path: Path) -> None:
    image = build_image(random_disk(4 * CHUNK, [0], seed=6))
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(4 * CHUNK))

    class NoZeroing(DiskTarget):
        def zero(self, offset: int, length: int) -> str:
            return "pretended"

    with NoZeroing.open(path) as target, pytest.raises(VerifyFailed) as exc:
        write(FakeSession(image), target)
    assert [(m.chunk, m.expected) for m in exc.value.mismatches] == [(1, "zeros"), (2, "zeros"), (3, "zeros")]


def test_direct_io_on_a_file(tmp_path: Path) -> None:
    image = build_image(random_disk(10 * CHUNK + 1024, 0.6, seed=12))
    path = sparse_file(tmp_path / "disk.img", 10 * CHUNK + 1024)
    try:
        report = write(FakeSession(image), path, direct=True)
    except Exception as exc:
        if "O_DIRECT" in str(exc):
            pytest.skip(str(exc))
        raise
    assert report.io_mode == "O_DIRECT" and report.readback == "O_DIRECT" and report.ok
    assert_image_on(path, image)


def test_index_given_as_dict_bytes_or_parsed_and_digest_pinned(tmp_path: Path) -> None:
    image = build_image(random_disk(3 * CHUNK, [1], seed=13))
    path = sparse_file(tmp_path / "disk.img", 3 * CHUNK)
    parsed = read_index(image.index)
    for source in (image.index, parsed, read_index(image.index).digest):
        session = FakeSession(image)
        if isinstance(source, str):
            report = write(session, path, expected_digest=source.upper())
        else:
            report = write_image(SERVER, source, path, session=session, retry=FAST)
            assert SERVER + INDEX_PATH not in session.gets
        assert report.ok and report.digest == parsed.digest
    with pytest.raises(IndexInvalid, match="the plan says"):
        write(FakeSession(image), path, expected_digest="0" * 64)


def test_argument_checks(tmp_path: Path) -> None:
    image = build_image(random_disk(CHUNK, [0]))
    path = sparse_file(tmp_path / "disk.img", CHUNK)
    with pytest.raises(ValueError, match="wipe"):
        write(FakeSession(image), path, wipe="shred")
    with pytest.raises(ValueError, match="workers"):
        write(FakeSession(image), path, workers=0)


@pytest.mark.parametrize("workers", [1, 8])
def test_many_chunks_bounded_workers(tmp_path: Path, workers: int) -> None:
    image = build_image(random_disk(2 * MiB + 4096, 0.5, chunk_size=16 * 1024, seed=workers), 16 * 1024)
    path = sparse_file(tmp_path / "disk.img", 2 * MiB + 4096)
    report = write(FakeSession(image), path, workers=workers)
    assert report.ok and report.chunks == 129
    assert_image_on(path, image)
