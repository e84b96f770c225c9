"""A captured disk made a version (provision.images.capture): the chunks read back from a real chunk store in a
temporary folder, the disk's sha256 checked, the partition table read from the chunks (``ChunkDisk``), the
version published with its provenance; a missing chunk, a wrong sha256 or a disk with no partition table
publish nothing. The upload's frame check (provision.capturing.decode)."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from provision.capturing import UploadRefused, decode, upload_limit
from provision.images import ImageStore, read_partition_table
from provision.images.capture import CaptureFailed, ChunkDisk, assemble, chunk_lengths
from tests.support.capturing import disk_chunks
from tests.support.images import CHUNK, MiB, make_disk

SIZE = 4 * MiB + 1536  # the last chunk is 1536 bytes


def stored_disk(tmp_path: Path, seed: int = 3) -> tuple[ImageStore, bytes, list[str | None]]:
    """A GPT disk with data, its non-zero chunks put in a fresh store (what the uploads would have stored)."""
    data = make_disk(tmp_path / "golden.raw", SIZE, [(MiB, 3 * CHUNK + 100), (3 * MiB, 5000)], seed=seed).read_bytes()
    store = ImageStore(tmp_path / "store")
    shas = disk_chunks(data, CHUNK)
    for i, sha in enumerate(shas):
        if sha is not None:
            store.chunks.put(data[i * CHUNK : (i + 1) * CHUNK], sha256=sha)
    return store, data, shas


def test_the_chunks_make_the_disk_and_its_version_is_published(tmp_path: Path) -> None:
    store, data, shas = stored_disk(tmp_path)
    when = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    sha = hashlib.sha256(data).hexdigest()
    made = assemble(store, "golden", shas, chunk_size=CHUNK, disk_size=SIZE, sector_size=512, sha256=sha,
                    provenance={"captured": {"mac": "m"}}, created=when)  # fmt: skip
    version = store.current("golden")
    assert version is not None and version == made.version
    assert made.sha256 == hashlib.sha256(data).hexdigest() and made.holes == shas.count(None)
    assert version.index.provenance["captured"] == {"mac": "m"}
    assert version.index.provenance["source"]["size"] == SIZE
    assert version.index.layout == read_partition_table(io.BytesIO(data), SIZE)
    assert [c.length for c in version.index.chunks] == chunk_lengths(SIZE, CHUNK) and chunk_lengths(SIZE, CHUNK)[
        -1
    ] == 1536
    assert store.verify("golden").ok
    zst, _ = store.export("golden", tmp_path / "out")
    with zstandard.ZstdDecompressor().stream_reader(zst.open("rb"), read_across_frames=True) as reader:
        assert reader.read() == data


def test_a_chunk_of_zeros_offered_by_its_sha256_is_a_hole(tmp_path: Path) -> None:
    store, data, shas = stored_disk(tmp_path)
    zero = hashlib.sha256(bytes(CHUNK)).hexdigest()
    offered = [zero if sha is None and i < len(shas) - 1 else sha for i, sha in enumerate(shas)]
    made = assemble(store, "golden", offered, chunk_size=CHUNK, disk_size=SIZE, sector_size=512,
                    sha256=hashlib.sha256(data).hexdigest(), provenance={}, publish=False)  # fmt: skip
    assert [c.sha256 for c in made.version.index.chunks] == shas and store.current("golden") is None


@pytest.mark.parametrize("fault", ["missing chunk", "wrong sha256", "short list", "no partition table"])
def test_a_capture_that_does_not_make_a_disk_publishes_nothing(tmp_path: Path, fault: str) -> None:
    store, data, shas = stored_disk(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    if fault == "missing chunk":
        store.chunks.path(next(s for s in shas if s is not None)).unlink()
    elif fault == "wrong sha256":
        sha = "0" * 64
    elif fault == "short list":
        shas = shas[:-1]
    else:  # the partition table's chunks offered as holes: the disk they make has none
        data = bytes(CHUNK) + data[CHUNK:]
        shas = [None, *shas[1:]]
        sha = hashlib.sha256(data).hexdigest()
    words = {"missing chunk": "cannot be read back", "wrong sha256": "the agent read " + "0" * 64,
             "short list": "positions offered", "no partition table": "without a partition table"}[fault]  # fmt: skip
    with pytest.raises(CaptureFailed, match=words):
        assemble(store, "golden", shas, chunk_size=CHUNK, disk_size=SIZE, sector_size=512, sha256=sha, provenance={})
    assert store.digests("golden") == [] and store.current("golden") is None


def test_the_chunk_view_reads_across_chunks_and_holes(tmp_path: Path) -> None:
    store, data, shas = stored_disk(tmp_path)
    view = io.BufferedReader(ChunkDisk(store.chunks, shas, CHUNK, SIZE))
    for offset, length in ((0, 10), (CHUNK - 5, 10), (MiB - 100, 3 * CHUNK), (SIZE - 700, 5000)):
        view.seek(offset)
        assert view.read(length) == data[offset : offset + length]


def test_an_upload_is_one_frame_of_at_most_the_chunk_size() -> None:
    plain = bytes(range(256)) * 16
    assert decode(zstandard.ZstdCompressor().compress(plain), CHUNK, what="c") == plain
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(plain)
    assert decode(unsized, CHUNK, what="c") == plain
    for bad in (b"", b"junk", zstandard.ZstdCompressor().compress(bytes(CHUNK + 1))):
        with pytest.raises(UploadRefused):
            decode(bad, CHUNK, what="c")
    assert upload_limit(CHUNK) > len(zstandard.ZstdCompressor().compress(bytes(CHUNK)))
