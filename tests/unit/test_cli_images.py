"""`provision image ...` end to end in-process: import, list, verify (and a corrupted chunk), export (and a
damaged chunk, which it refuses)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import zstandard

from provision.images import ImageStore
from tests.support.cli import run
from tests.support.files import sha256_file
from tests.support.images import CHUNK, DAMAGES, MiB, damage, make_disk


def test_import_list_verify_export(tmp_path: Path) -> None:
    store = tmp_path / "store"
    raw = make_disk(tmp_path / "disk.raw", 12 * MiB, [(2 * MiB, 3 * MiB), (9 * MiB + 5, 100_000)])
    code, out, err = run("image", "import", str(raw), "--name", "educ", "--store", str(store), "--chunk-size", "1")
    assert code == 0, err
    assert out.startswith("educ@") and "12 chunks of 1.0 MiB" in out and "current" in out

    code, out, _ = run("image", "list", "--store", str(store), "--json")
    listed = json.loads(out)
    assert [i["name"] for i in listed] == ["educ"] and listed[0]["current"]["disk_size"] == 12 * MiB
    code, out, _ = run("image", "list", "--store", str(store))
    assert code == 0 and out.startswith("educ\n  * ")

    code, out, _ = run("image", "verify", "educ", "--store", str(store))
    assert code == 0 and ": OK:" in out

    code, out, _ = run("image", "export", "educ@current", str(tmp_path / "out"), "--store", str(store))
    assert code == 0 and "bmaptool copy --bmap" in out
    with (tmp_path / "out" / "disk.img.zst").open("rb") as f, (tmp_path / "back.raw").open("wb") as back:
        zstandard.ZstdDecompressor().copy_stream(f, back)
    assert sha256_file(tmp_path / "back.raw") == sha256_file(raw)

    chunk = next((store / "chunks").rglob("*.zst"))
    chunk.write_bytes(zstandard.ZstdCompressor().compress(b"\1" * (1 * MiB)))
    code, out, _ = run("image", "verify", "educ", "--store", str(store))
    assert code == 1
    assert chunk.stem[:12] in out or chunk.stem in out
    assert "problem(s)" in out


def test_import_of_a_non_disk_fails_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"hello\n" * 1000)
    code, out, err = run("image", "import", str(junk), "--name", "educ", "--store", str(tmp_path / "s"))
    assert code == 1 and out == ""
    assert err.startswith("provision: error: ") and "notes.txt" in err
    code, out, _ = run("image", "list", "--store", str(tmp_path / "s"))
    assert out == "no images\n"


@pytest.mark.parametrize("kind", DAMAGES)
def test_defect4_export_of_a_damaged_chunk_fails_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    """Issue 12, defect 4: `image export` exited 0 writing a corrupted disk.img.zst."""
    root = tmp_path / "store"
    raw = make_disk(tmp_path / "disk.raw", 4 * MiB, [(20 * CHUNK, 4 * CHUNK)], seed=5)
    version = ImageStore(root).import_raw(raw, "educ", chunk_size=CHUNK)
    ref = version.index.chunks[22]
    assert ref.sha256 is not None
    damage(ImageStore(root), ref.sha256, kind, tmp_path / "outside")
    code, out, err = run("image", "export", "educ", str(tmp_path / "out"), "--store", str(root))
    assert code == 1 and out == "", kind
    assert err.startswith("provision: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"chunk 22 at offset {22 * CHUNK}" in err and ref.sha256 in err
    assert not (tmp_path / "out").exists()


def test_defect4_verify_with_random_bytes_in_the_bmap(tmp_path: Path) -> None:
    root = tmp_path / "store"
    raw = make_disk(tmp_path / "disk.raw", 4 * MiB, [(20 * CHUNK, 4 * CHUNK)], seed=5)
    version = ImageStore(root).import_raw(raw, "educ", chunk_size=CHUNK)
    ImageStore(root).bmap_path("educ", version.digest).write_bytes(os.urandom(3000))
    code, out, err = run("image", "verify", "educ", "--store", str(root))
    assert code == 1 and "bmap: cached" in out and "rewritten" in out and "Traceback" not in err
    code, out, _ = run("image", "verify", "educ", "--store", str(root))
    assert code == 0 and ": OK:" in out
