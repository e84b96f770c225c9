"""Export: disk.img.zst decompresses to exactly the raw disk; disk.bmap is bmap 2.0 with correct checksums."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.images import ImageNotFound, ImageStore, ImageVersion
from provision.images.bmap import BmapBuilder, human_size
from provision.images.chunks import zero_frame
from tests.support.images import CHUNK, MiB, check_bmap, make_disk, unzstd

# 4 MiB + 1536: neither the chunk size nor the 4 KiB bmap block divides it
SIZE = 4 * MiB + 3 * 512
EXTENTS = [(100_000, 5000), (1 * MiB + 4096, 2 * CHUNK), (3 * MiB, CHUNK + 1), (SIZE - 1536 - 40_000, 20_000)]


@pytest.fixture(params=["gpt", "dos"])
def imported(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ImageStore, ImageVersion, bytes]:
    raw = make_disk(tmp_path / "d.img", SIZE, EXTENTS, seed=11, label=request.param)
    store = ImageStore(tmp_path / "store")
    return store, store.import_raw(raw, "educ", chunk_size=CHUNK), raw.read_bytes()


def test_export_round_trip(imported: tuple[ImageStore, ImageVersion, bytes], tmp_path: Path) -> None:
    store, version, raw = imported
    zst, bmap = store.export("educ", tmp_path / "out")
    assert (zst.name, bmap.name) == ("disk.img.zst", "disk.bmap")
    assert unzstd(zst.read_bytes()) == raw
    root = check_bmap(bmap.read_text(), raw)
    # mapped = the non-hole chunks: every non-zero byte of the raw disk is inside a range
    ranges = root.findall("BlockMap/Range")
    assert len(ranges) < sum(1 for c in version.index.chunks if not c.hole)  # adjacent chunks were merged
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["disk.bmap", "disk.img.zst"]


def test_iter_zst_parts(imported: tuple[ImageStore, ImageVersion, bytes]) -> None:
    store, version, raw = imported
    parts = list(store.iter_zst(version))
    assert len(parts) == len(version.index.chunks)
    for ref, part in zip(version.index.chunks, parts, strict=True):
        if ref.sha256 is None:
            assert part == zero_frame(ref.length)
        else:
            assert part == store.chunks.path(ref.sha256)
    stream = b"".join(p if isinstance(p, bytes) else p.read_bytes() for p in parts)
    assert unzstd(stream) == raw
    listed, total = store.zst_parts(version)
    assert total == len(stream) and len(listed) == len(parts)


def test_bmap_is_rebuilt_from_chunks(imported: tuple[ImageStore, ImageVersion, bytes]) -> None:
    store, version, raw = imported
    cached = store.bmap_text(version)
    store.bmap_path("educ", version.digest).unlink()
    assert store.rebuild_bmap(version) == cached
    assert store.bmap_text(version) == cached and store.bmap_path("educ", version.digest).exists()
    check_bmap(cached, raw)


def test_export_with_a_missing_chunk(imported: tuple[ImageStore, ImageVersion, bytes], tmp_path: Path) -> None:
    store, version, _ = imported
    i, ref = next((i, c) for i, c in enumerate(version.index.chunks) if c.sha256 and i > 0)
    assert ref.sha256 is not None
    store.chunks.path(ref.sha256).unlink()
    with pytest.raises(ImageNotFound, match=f"chunk {i} at offset {i * CHUNK}"):
        store.export("educ", tmp_path / "out")
    assert not (tmp_path / "out" / "disk.img.zst").exists()


def test_bmap_builder_single_blocks_and_partial_last_block() -> None:
    raw = b"a" * 4096 + bytes(4096) + b"b" * 4096 + b"c" * 512
    builder = BmapBuilder(len(raw))
    builder.add(0, 4096, raw[:4096])
    builder.add(4096, 4096, None)
    builder.add(8192, 4608, raw[8192:])
    text = builder.text()
    assert "> 0 </Range>" in text and "> 2-3 </Range>" in text
    check_bmap(text, raw)


def test_bmap_builder_refuses_out_of_order() -> None:
    builder = BmapBuilder(8192)
    with pytest.raises(ValueError, match="out of order"):
        builder.add(4096, 4096, b"x" * 4096)


def test_human_size_like_bmaptool() -> None:
    assert [human_size(n) for n in (1, 100, 4096, 3 * MiB, 5 << 30)] == [
        "1 byte",
        "100 bytes",
        "4.0 KiB",
        "3.0 MiB",
        "5.0 GiB",
    ]
