"""The writer's concurrency (issue 16): each chunk is read back by its worker right after its write (before the
fsync) when the read-back needs no cache dropped, and compared with the bytes that hashed right; with
``reread_from_media`` every read-back waits for the fsync. An error in one worker stops them all, and nothing
unchecked is ever written. Sparse files and a fake session: no sockets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from provision.agent import DiskTarget, VerifyFailed, WriteReport, write_image
from provision.agent.disk_io import AlignedBuffer, Kind
from provision.agent.errors import TargetError
from tests.support.agent import CHUNK, FAST, INDEX_PATH, SERVER, FakeImage, FakeSession, build_image, random_disk, sha
from tests.support.files import sha256_file, sparse_file


class TracingTarget(DiskTarget):
    """A real target that records its operations in order: ("write", offset), ("read", offset), ("fsync", 0);
    ``bad_read_at``: offsets whose reads come back with a byte flipped (a disk that reads back wrong);
    ``fail_write_at``: offsets whose write fails (EIO)."""

    def __init__(self, path: Path, kind: Kind, size: int, block_size: int, fd: int, direct_fd: int | None) -> None:
        super().__init__(path, kind, size, block_size, fd, direct_fd)
        self.ops: list[tuple[str, int]] = []
        self.written: dict[int, str] = {}  # offset -> sha256 of what was handed to the disk
        self.bad_read_at: set[int] = set()
        self.fail_write_at: set[int] = set()
        self.lock = threading.Lock()

    def write(self, data: bytes | memoryview, offset: int, buf: AlignedBuffer) -> None:
        if offset in self.fail_write_at:
            with self._io("writing", offset, len(data)):
                raise OSError(5, "Input/output error")
        with self.lock:
            self.ops.append(("write", offset))
            self.written[offset] = sha(data)
        super().write(data, offset, buf)

    def read_into(self, buf: AlignedBuffer, offset: int, length: int) -> memoryview:
        with self.lock:
            self.ops.append(("read", offset))
        view = super().read_into(buf, offset, length)
        if offset in self.bad_read_at and len(view):
            view[0] ^= 1
        return view

    def fsync(self) -> None:
        with self.lock:
            self.ops.append(("fsync", 0))
        super().fsync()


def write(image: FakeImage, target: DiskTarget, **kw: object) -> WriteReport:
    return write_image(SERVER, INDEX_PATH, target, session=FakeSession(image), retry=FAST, **kw)  # type: ignore[arg-type]


def test_each_chunk_is_read_back_right_after_its_write(tmp_path: Path) -> None:
    image = build_image(random_disk(24 * CHUNK, 0.6, seed=21))
    path = sparse_file(tmp_path / "disk.img", 24 * CHUNK)
    with TracingTarget.open(path) as target:
        report = write(image, target, workers=3)
    assert report.ok and report.readback == "page cache" and report.verified == len(image.data_indexes())
    fsync = target.ops.index(("fsync", 0))
    for i in image.data_indexes():
        offset = i * CHUNK
        wrote, read = target.ops.index(("write", offset)), target.ops.index(("read", offset), 0)
        assert wrote < read < fsync, f"chunk {i}: write at op {wrote}, read at op {read}, fsync at op {fsync}"
    after = [offset // CHUNK for op, offset in target.ops[fsync:] if op == "read"]
    assert set(after).isdisjoint(image.data_indexes())  # only holes left for the verifying stage
    assert sha256_file(path, len(image.raw)) == sha(image.raw)


def test_reread_from_media_reads_back_only_after_the_fsync(tmp_path: Path) -> None:
    image = build_image(random_disk(12 * CHUNK, [0, 2, 3, 7, 11], seed=22))
    path = sparse_file(tmp_path / "disk.img", 12 * CHUNK)
    with TracingTarget.open(path) as target:
        report = write(image, target, reread_from_media=True)
    assert report.ok and report.readback == "medium (cache dropped)" and report.verified == 5
    fsync = target.ops.index(("fsync", 0))
    assert not [op for op in target.ops[:fsync] if op[0] == "read" and op[1] // CHUNK in image.data_indexes()]


def test_a_chunk_that_reads_back_wrong_after_its_write_fails_the_run(tmp_path: Path) -> None:
    image = build_image(random_disk(10 * CHUNK, [1, 4, 6, 9], seed=23))
    path = sparse_file(tmp_path / "disk.img", 10 * CHUNK)
    with TracingTarget.open(path) as target:
        target.bad_read_at = {4 * CHUNK}
        with pytest.raises(VerifyFailed) as exc:
            write(image, target)
    [mismatch] = exc.value.mismatches
    assert (mismatch.chunk, mismatch.offset, mismatch.expected) == (4, 4 * CHUNK, image.chunks[4]["sha256"])
    assert mismatch.actual not in ("", image.chunks[4]["sha256"]) and len(mismatch.actual) == 64
    assert exc.value.checked == 10  # every chunk and hole was checked, the other three data chunks right


def test_an_error_in_one_worker_stops_them_all_and_nothing_unchecked_is_written(tmp_path: Path) -> None:
    chunks = 200
    image = build_image(random_disk(chunks * CHUNK, 1.0, seed=24))
    path = sparse_file(tmp_path / "disk.img", chunks * CHUNK)
    with TracingTarget.open(path) as target:
        target.fail_write_at = {5 * CHUNK}
        with pytest.raises(TargetError) as exc:
            write(image, target, workers=4)
    assert exc.value.facts["offset"] == 5 * CHUNK and "Input/output error" in str(exc.value)
    assert len(target.written) < chunks // 2, "the other workers went on after the failure"
    assert ("fsync", 0) not in target.ops  # no read-back stage, no report: the run failed
    for offset, digest in target.written.items():  # everything written had been checked against its sha256
        assert digest == image.chunks[offset // CHUNK]["sha256"]
