"""Issue 12, defect 4, in the store: chunk, index and bmap files are read without following a symlink below
the store root, a chunk is sent or exported only once checked (and the per-process record of checked files
is invalidated by any change), and a damaged bmap cache is rebuilt."""

from __future__ import annotations

import errno
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from provision.images import CorruptImage, ImageNotFound, ImageStore, ImageVersion
from provision.images.chunks import compress
from provision.images.errors import MissingChunk
from provision.images.export import StoredPart
from provision.images.files import UnsafeFile, open_inside, read_inside
from tests.support.images import CHUNK, DAMAGES, MiB, check_bmap, damage, make_disk


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ImageStore, ImageVersion, bytes]:
    raw = make_disk(tmp_path / "d.img", 4 * MiB, [(20 * CHUNK, 4 * CHUNK)], seed=4)
    store = ImageStore(tmp_path / "store")
    version = store.import_raw(raw, "educ", chunk_size=CHUNK)
    store.frames.racy_ns = 0  # the files were written just now: record them anyway
    return store, version, raw.read_bytes()


def position(version: ImageVersion, i: int = 21) -> tuple[int, str]:
    sha = version.index.chunks[i].sha256
    assert sha is not None
    return i, sha


def test_defect4_open_inside_refuses_symlinks_and_odd_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "file").write_bytes(b"data")
    (root / "link").symlink_to(root / "real")
    (root / "real" / "passwd").symlink_to("/etc/passwd")
    (root / "real" / "dir").mkdir()
    os.mkfifo(root / "real" / "fifo")
    fd = open_inside(root, "real", "file")
    os.close(fd)
    assert read_inside(root, "real", "file", limit=4) == b"data"
    for parts in [("link", "file"), ("real", "passwd"), ("real", "dir"), ("real", "fifo"), ("real", "file", "x")]:
        with pytest.raises(UnsafeFile) as exc:
            open_inside(root, *parts)
        assert exc.value.filename is not None and exc.value.filename.startswith(str(root)), parts
    with pytest.raises(UnsafeFile, match="symlink"):
        open_inside(root, "real", "passwd")
    with pytest.raises(FileNotFoundError):
        open_inside(root, "real", "nothing")
    with pytest.raises(UnsafeFile) as big:
        read_inside(root, "real", "file", limit=3)
    assert big.value.errno == errno.EFBIG
    with pytest.raises(ValueError):
        open_inside(root, "..", "etc", "passwd")


@pytest.mark.parametrize("kind", DAMAGES)
def test_defect4_export_and_zst_parts_refuse_a_damaged_chunk(
    setup: tuple[ImageStore, ImageVersion, bytes], tmp_path: Path, kind: str
) -> None:
    store, version, _ = setup
    i, sha = position(version)
    store.zst_parts(version)  # the clean chunk gets recorded as good first: damage must invalidate it
    damage(store, sha, kind, tmp_path / "outside")
    with pytest.raises(CorruptImage) as exc:
        store.zst_parts(version)
    with pytest.raises(CorruptImage) as exported:
        store.export(version.ref, tmp_path / "out")
    for error in (exc.value, exported.value):
        assert f"chunk {i} at offset {i * CHUNK}" in str(error) and sha in str(error)
        assert (error.facts["index"], error.facts["offset"], error.facts["chunk"]) == (i, i * CHUNK, sha)
        assert error.facts["path"]
    assert not (tmp_path / "out").exists()


def test_defect4_a_file_changed_after_zst_parts_is_checked_again(
    setup: tuple[ImageStore, ImageVersion, bytes], tmp_path: Path
) -> None:
    store, version, _ = setup
    parts, _ = store.zst_parts(version)
    part = next(p for p in parts if isinstance(p, StoredPart) and p.index == 21)
    assert isinstance(part, StoredPart)
    checks = store.frames.checks
    with store.open_part(version, part) as frame:
        assert frame.checked and store.frames.checks == checks  # the record answered: no decoding
    damage(store, part.sha256, "swapped", tmp_path)
    with pytest.raises(CorruptImage, match=f"chunk 21 at offset {21 * CHUNK}"):
        store.open_part(version, part)
    assert store.frames.checks == checks + 1


def test_defect4_the_record_checks_once_and_forgets_on_any_change(
    setup: tuple[ImageStore, ImageVersion, bytes],
) -> None:
    store, version, _ = setup
    _, sha = position(version)
    plain = store.chunks.read(sha, CHUNK)
    frames = store.frames
    with store.open_chunk(sha) as frame:
        assert not frame.checked
        frames.check(frame)
    before = frames.checks
    with store.open_chunk(sha) as frame:
        assert frame.checked and frames.checks == before
    path = store.chunks.path(sha)
    os.utime(path, (1, 1))  # mtime (and ctime) moved: checked again, still good
    with frames.open_checked(sha):
        assert frames.checks == before + 1
    path.write_bytes(compress(b"\x07" * CHUNK))  # a valid frame of other bytes
    with pytest.raises(CorruptImage, match="content hashes to"):
        frames.open_checked(sha)
    checks = frames.checks
    with pytest.raises(CorruptImage, match="content hashes to"):  # recorded bad: refused without decoding
        store.open_chunk(sha)
    assert frames.checks == checks
    fixed = path.with_name(".tmp-fixed")
    fixed.write_bytes(compress(plain))
    fixed.replace(path)  # an atomic replace: a new inode
    with frames.open_checked(sha):
        assert frames.checks == checks + 1


def test_defect4_a_file_written_just_now_is_not_recorded(setup: tuple[ImageStore, ImageVersion, bytes]) -> None:
    store, version, _ = setup
    _, sha = position(version)
    store.frames.racy_ns = 3600 * 10**9  # as if the file had changed within the clock's resolution
    for _ in range(2):
        with store.frames.open_checked(sha) as frame:
            assert frame.checked
    assert store.frames.checks == 2


def test_defect4_missing_and_unknown_chunks(setup: tuple[ImageStore, ImageVersion, bytes]) -> None:
    store, version, _ = setup
    with pytest.raises(ImageNotFound):
        store.open_chunk("0" * 64)
    _, sha = position(version)
    store.chunks.path(sha).unlink()
    with pytest.raises(MissingChunk):
        store.frames.open_checked(sha)
    with pytest.raises(MissingChunk, match="missing"):
        store.zst_parts(version)


@pytest.mark.parametrize("junk", ["random", "truncated", "symlink"])
def test_defect4_a_damaged_bmap_cache_is_rebuilt(
    setup: tuple[ImageStore, ImageVersion, bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture, junk: str
) -> None:
    store, version, raw = setup
    path = store.bmap_path("educ", version.digest)
    good = path.read_text()
    if junk == "random":
        path.write_bytes(os.urandom(5000))
    elif junk == "truncated":
        path.write_text(good[: len(good) // 2])
    else:
        (tmp_path / "elsewhere.bmap").write_text(good)
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere.bmap")
    with caplog.at_level(logging.WARNING, logger="provision.images.versions"):
        assert store.bmap_text(version) == good
    assert "damaged" in caplog.text and "rebuilding" in caplog.text
    assert path.read_text() == good and not path.is_symlink()
    check_bmap(good, raw)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        store.bmap_text(version)
    assert caplog.text == ""


def test_defect4_a_bmap_that_cannot_be_rebuilt_is_corrupt_image(
    setup: tuple[ImageStore, ImageVersion, bytes], tmp_path: Path
) -> None:
    store, version, _ = setup
    store.bmap_path("educ", version.digest).write_bytes(os.urandom(300))
    i, sha = position(version)
    damage(store, sha, "flip", tmp_path)
    with pytest.raises(CorruptImage, match=f"bmap cannot be rebuilt: chunk {i} at offset {i * CHUNK}") as exc:
        store.bmap_text(version)
    assert exc.value.facts["chunk"] == sha and exc.value.status_code == 500


def test_defect4_verify_reports_random_bytes_in_the_bmap(setup: tuple[ImageStore, ImageVersion, bytes]) -> None:
    store, version, _ = setup
    path = store.bmap_path("educ", version.digest)
    good = path.read_text()
    path.write_bytes(os.urandom(5000))
    report = store.verify("educ")
    assert not report.ok and report.bmap_problem is not None and "rewritten" in report.bmap_problem
    assert path.read_text() == good and store.verify("educ").ok


def test_defect4_an_index_symlinked_out_of_the_store_is_refused(
    setup: tuple[ImageStore, ImageVersion, bytes], tmp_path: Path
) -> None:
    store, version, _ = setup
    path = store.index_path("educ", version.digest)
    copy = tmp_path / "copy.json"
    copy.write_bytes(path.read_bytes())  # the same, right bytes: only the symlink is wrong
    path.unlink()
    path.symlink_to(copy)
    fresh = ImageStore(store.root)  # no index cached
    with pytest.raises(CorruptImage, match="symlink"):
        fresh.resolve("educ")
    with pytest.raises(CorruptImage, match="symlink"):
        fresh.index_bytes("educ", version.digest)
    report = fresh.verify(f"educ@{version.digest[:12]}")
    assert not report.ok and report.index_problem is not None and "symlink" in report.index_problem


def test_defect4_concurrent_checks_of_one_chunk_decode_it_once(setup: tuple[ImageStore, ImageVersion, bytes]) -> None:
    store, version, _ = setup
    _, sha = position(version)
    frames = [store.open_chunk(sha) for _ in range(8)]  # all opened before any check: none is checked
    assert not any(f.checked for f in frames)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(store.frames.check, frames))
    assert all(f.checked for f in frames) and store.frames.checks == 1
    for f in frames:
        f.close()


def test_defect4_gc_does_not_sweep_through_a_symlinked_folder(
    setup: tuple[ImageStore, ImageVersion, bytes], tmp_path: Path
) -> None:
    store, _, _ = setup
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    victim = outside / f"{'ff' * 32}.zst"  # named like a chunk nothing references
    victim.write_bytes(b"not ours")
    (store.chunks.root / "ff").symlink_to(outside)
    store.gc()
    assert victim.read_bytes() == b"not ours"
