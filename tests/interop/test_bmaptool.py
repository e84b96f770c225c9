"""bmaptool (Debian bmap-tools 3.x) writes our export, from files and from the HTTP routes, bit for bit.

The test disk has a real GPT (protective MBR, both headers), two partitions, random data and holes; one size
is not a multiple of 4 KiB, so the bmap's last block is partial. bmaptool checks the bmap's own checksum and
every range's sha256 while copying, so a wrong checksum anywhere fails the copy.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provision.images import CorruptImage, ImageStore, ImageVersion
from provision.images.chunks import compress
from provision.web.images import image_app
from tests.support.files import sha256_file
from tests.support.images import MiB, make_disk, serve

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("bmaptool") is None, reason="bmaptool missing (Debian package bmap-tools)"),
    pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd missing (bmaptool decompresses .zst with it)"),
]
TIMEOUT = 120


def bmaptool_copy(bmap: str, image: str, target: Path) -> subprocess.CompletedProcess[str]:
    argv = ["bmaptool", "copy", "--bmap", bmap, image, str(target)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def build(tmp_path: Path, size: int, chunk_size: int) -> tuple[ImageStore, ImageVersion, Path]:
    extents = [(1 * MiB, 300_000), (5 * MiB + 4096, 2 * MiB), (20 * MiB, 9 * MiB), (size - 2 * MiB, 1 * MiB)]
    raw = make_disk(tmp_path / "master.img", size, extents, seed=size)
    store = ImageStore(tmp_path / "store")
    return store, store.import_raw(raw, "educ", chunk_size=chunk_size), raw


@pytest.mark.parametrize(("size", "chunk_size"), [(64 * MiB, 4 * MiB), (48 * MiB + 1536, 1 * MiB)])
def test_copy_from_files(tmp_path: Path, size: int, chunk_size: int) -> None:
    store, version, raw = build(tmp_path, size, chunk_size)
    zst, bmap = store.export(version.ref, tmp_path / "out")
    target = tmp_path / "target.img"
    result = bmaptool_copy(str(bmap), str(zst), target)
    assert result.returncode == 0, result.stderr
    assert target.stat().st_size == size
    assert sha256_file(target) == sha256_file(raw)


def test_copy_from_http(tmp_path: Path) -> None:
    store, version, raw = build(tmp_path, 48 * MiB + 1536, 4 * MiB)
    app = image_app(store)
    target = tmp_path / "target.img"
    with serve(app) as url:
        base = f"{url}/images/educ/{version.label}"
        result = bmaptool_copy(f"{base}/disk.bmap", f"{base}/disk.img.zst", target)
    assert result.returncode == 0, result.stderr
    assert sha256_file(target) == sha256_file(raw)


def test_bmaptool_catches_a_swapped_chunk(tmp_path: Path) -> None:
    """A frame of disk.img.zst replaced by a valid frame of other bytes: only the range checksum can tell.
    The store refuses to export such a chunk (issue 12, defect 4), so the swap is made in the exported file."""
    store, version, _ = build(tmp_path, 64 * MiB, 4 * MiB)
    index, ref = next((i, c) for i, c in enumerate(version.index.chunks) if c.sha256 and i > 0)
    assert ref.sha256 is not None
    parts, _ = store.zst_parts(version)
    swapped = tmp_path / "swapped" / "disk.img.zst"
    swapped.parent.mkdir()
    with swapped.open("wb") as out:
        for part in parts:
            if isinstance(part, bytes):
                out.write(part)
            elif part.index == index:
                out.write(compress(b"\x5a" * ref.length))
            else:
                out.write(store.chunks.path(part.sha256).read_bytes())
    _, bmap = store.export(version.ref, tmp_path / "out")
    result = bmaptool_copy(str(bmap), str(swapped), tmp_path / "target.img")
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr
    store.chunks.path(ref.sha256).write_bytes(compress(b"\x5a" * ref.length))  # the same swap in the store
    with pytest.raises(CorruptImage, match=f"chunk {index} at offset {index * 4 * MiB}"):
        store.export(version.ref, tmp_path / "again")
    assert not (tmp_path / "again").exists()
