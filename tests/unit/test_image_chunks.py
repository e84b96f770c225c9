"""Chunking of sparse disks: holes, short last chunk, identical chunks stored once, atomic idempotent writes."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest
import zstandard

from provision.images import ImageError, ImageStore
from provision.images.chunks import ChunkStore, compress, decompress, is_zero, zero_frame
from provision.images.errors import CorruptImage
from provision.images.files import atomic_write
from provision.images.importer import chunk_file
from tests.support.files import sha256_file
from tests.support.images import CHUNK, MiB, make_disk


def chunk(path: Path, store: ChunkStore, chunk_size: int = CHUNK, workers: int = 2):
    with path.open("rb") as f:
        return chunk_file(f.fileno(), path.stat().st_size, store, chunk_size=chunk_size, workers=workers)


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_all_holes(tmp_path: Path) -> None:
    disk = tmp_path / "zero.img"
    disk.touch()
    os.truncate(disk, 5 * MiB + 4096)
    store = ChunkStore(tmp_path / "chunks")
    result = chunk(disk, store)
    assert len(result.chunks) == 81
    assert all(c.hole for c in result.chunks)
    assert result.chunks[-1].length == 4096
    assert result.new_chunks == 0 and stored_files(tmp_path / "chunks") == []
    assert result.source_sha256 == sha256_file(disk)
    assert "<MappedBlocksCount> 0 </MappedBlocksCount>" in result.bmap


def test_written_zeros_are_holes_too(tmp_path: Path) -> None:
    disk = tmp_path / "dense.img"
    disk.write_bytes(bytes(3 * CHUNK) + b"x" + bytes(CHUNK - 1))  # allocated zeros, not a sparse hole
    result = chunk(disk, ChunkStore(tmp_path / "chunks"))
    assert [c.hole for c in result.chunks] == [True, True, True, False]


def test_unaligned_size_short_last_chunk(tmp_path: Path) -> None:
    size = 40 * CHUNK + 3 * 512
    disk = make_disk(tmp_path / "d.img", size, [(size - 700, 700)])
    store = ChunkStore(tmp_path / "chunks")
    result = chunk(disk, store)
    assert len(result.chunks) == 41
    last = result.chunks[-1]
    assert last.length == 1536 and last.sha256 is not None
    data = disk.read_bytes()[40 * CHUNK :]
    assert last.sha256 == hashlib.sha256(data).hexdigest()
    assert store.read(last.sha256, 1536) == data


def test_random_holes(tmp_path: Path) -> None:
    rng = random.Random(42)
    count = 64
    data_chunks = sorted(rng.sample(range(1, count), 20))
    extents = [(i * CHUNK + rng.randrange(0, CHUNK - 100), rng.randrange(1, 100)) for i in data_chunks]
    disk = make_disk(tmp_path / "d.img", count * CHUNK, extents, seed=3)
    store = ChunkStore(tmp_path / "chunks")
    result = chunk(disk, store)
    raw = disk.read_bytes()
    for i, ref in enumerate(result.chunks):
        plain = raw[i * CHUNK : (i + 1) * CHUNK]
        assert ref.length == CHUNK
        if is_zero(plain):
            assert ref.hole, i
        else:
            assert ref.sha256 == hashlib.sha256(plain).hexdigest(), i
    # chunk 0 holds the GPT, the last one its backup; the rest are the data chunks
    assert [i for i, c in enumerate(result.chunks) if not c.hole] == sorted({0, *data_chunks, count - 1})
    assert result.source_sha256 == hashlib.sha256(raw).hexdigest()


def test_identical_chunks_are_stored_once(tmp_path: Path) -> None:
    disk = tmp_path / "rep.img"
    block = random.Random(1).randbytes(CHUNK)
    disk.write_bytes(block * 12 + bytes(CHUNK) + block)
    store = ChunkStore(tmp_path / "chunks")
    result = chunk(disk, store, workers=4)
    assert {c.sha256 for c in result.chunks if c.sha256} == {hashlib.sha256(block).hexdigest()}
    assert len(stored_files(tmp_path / "chunks")) == 1
    assert result.new_chunks == 1
    assert result.stored_bytes == stored_files(tmp_path / "chunks")[0].stat().st_size


def test_reimport_writes_nothing(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "d.img", 48 * CHUNK, [(20 * CHUNK, 3 * CHUNK)], seed=5)
    store = ChunkStore(tmp_path / "chunks")
    first = chunk(disk, store)
    before = {p: p.stat().st_mtime_ns for p in stored_files(tmp_path / "chunks")}
    second = chunk(disk, store)
    assert second.chunks == first.chunks and second.new_chunks == 0 and second.new_bytes == 0
    assert {p: p.stat().st_mtime_ns for p in stored_files(tmp_path / "chunks")} == before
    assert not [p for p in before if p.name.startswith(".tmp-")]


def test_layout_of_a_chunk_file(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    data = b"provision" * 1000
    put = store.put(data)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "chunks" / sha[:2] / f"{sha}.zst"
    assert put.sha256 == sha and put.new and path.is_file()
    frame = path.read_bytes()
    assert zstandard.frame_content_size(frame) == len(data)  # the frame carries its content size
    assert zstandard.ZstdDecompressor().decompress(frame) == data  # an independent frame
    assert store.put(data) == type(put)(sha, False, len(frame))


def test_zero_frame() -> None:
    frame = zero_frame(4 * MiB)
    assert len(frame) < 1024
    assert zstandard.frame_content_size(frame) == 4 * MiB
    assert decompress(frame, 4 * MiB) == bytes(4 * MiB)


def test_decompress_refuses_a_wrong_size() -> None:
    with pytest.raises(CorruptImage, match="holds 3 bytes, expected 4"):
        decompress(compress(b"abc"), 4)
    with pytest.raises(CorruptImage, match="not a zstd frame"):
        decompress(b"garbage!", 8)


@pytest.mark.parametrize("size", [0, 1000, 4096 * 3 + 1, 512 << 20])
def test_bad_chunk_size(tmp_path: Path, size: int) -> None:
    disk = make_disk(tmp_path / "d.img", 4 * MiB)
    with pytest.raises(ImageError, match="chunk size"):
        ImageStore(tmp_path / "store").import_raw(disk, "x", chunk_size=size)


def test_a_failing_write_stops_the_import_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = make_disk(tmp_path / "d.img", 48 * CHUNK, [(17 * CHUNK, 20 * CHUNK)], seed=8)
    store = ImageStore(tmp_path / "store")
    calls = []
    real_put = ChunkStore.put

    def failing_put(self: ChunkStore, data: bytes, **kw: object):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real_put(self, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ChunkStore, "put", failing_put)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(OSError, match="No space left"):
        store.import_raw(disk, "educ", chunk_size=CHUNK, workers=2)
    assert {t.name for t in threading.enumerate()} == before  # no worker or hasher thread left behind
    assert store.list_images() == ()


def test_progress_error_stops_the_import(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "d.img", 48 * CHUNK, [(17 * CHUNK, 20 * CHUNK)], seed=8)
    store = ImageStore(tmp_path / "store")

    def progress(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.import_raw(disk, "educ", chunk_size=CHUNK, progress=progress)
    assert store.list_images() == ()


def test_atomic_write_leaves_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "current"
    atomic_write(target, b"old\n")

    def parts():
        yield b"new"
        raise OSError(5, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        atomic_write(target, parts())
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["current"]
