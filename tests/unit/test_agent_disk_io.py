"""The target: regular files (buffered, or O_DIRECT when asked), holes, zeroing, discard, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.agent import DiskTarget, TargetError
from provision.agent.disk_io import AlignedBuffer, copy_into
from tests.support.agent import MiB
from tests.support.files import sparse_file


def _read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


def test_aligned_buffer_is_page_aligned_and_zeroed() -> None:
    buf = AlignedBuffer(5000)
    assert buf.size == 8192 and bytes(buf.view) == bytes(8192)
    buf.view[:3] = b"abc"
    buf.close()


def test_copy_into_and_starts_with_compare_every_byte() -> None:
    a, b = AlignedBuffer(3 * 4096), AlignedBuffer(3 * 4096)
    data = os.urandom(9000)
    copy_into(a.view, data)
    copy_into(b.view[:9500], data)
    assert bytes(a.view[:9000]) == data and a.starts_with(b.view[:9000]) and a.starts_with(data)
    for at in (0, 4095, 8999):  # a difference anywhere, in a writable view (memcmp) or bytes (find)
        b.view[at] ^= 1
        assert not a.starts_with(b.view[:9000]) and not a.starts_with(bytes(b.view[:9000]))
        b.view[at] ^= 1
    assert a.starts_with(b.view[:0]) and not a.starts_with(bytes(a.size + 1))
    with pytest.raises(ValueError, match="do not fit"):
        copy_into(a.view[:10], data)
    a.close()
    b.close()  # no buffer export left behind by the comparisons


def test_file_is_buffered_and_reads_and_writes(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "t.img", 3 * MiB + 512)
    buf = AlignedBuffer(MiB)
    with DiskTarget.open(path) as target:
        assert (target.kind, target.io_mode, target.size) == ("file", "buffered", 3 * MiB + 512)
        assert "regular file" in target.describe() and "buffered" in target.describe()
        target.write(b"x" * 1000, 4096 + 7, buf)
        with target.read_into(buf, 4096, 2000) as view:
            assert bytes(view) == bytes(7) + b"x" * 1000 + bytes(993)
        with target.read_into(buf, 3 * MiB, 4096) as view:  # past the end: short
            assert len(view) == 512
    buf.close()
    assert _read(path, 4096 + 7, 1000) == b"x" * 1000


def test_holes_of_a_sparse_file(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "t.img", 4 * MiB)
    with path.open("r+b") as f:
        f.seek(MiB)
        f.write(b"d" * 4096)
    with DiskTarget.open(path) as target:
        assert target.is_hole(0, MiB)
        assert not target.is_hole(0, MiB + 1)
        assert not target.is_hole(MiB, 4096)
        assert target.is_hole(2 * MiB, 2 * MiB)  # no data after: ENXIO


def test_zero_and_discard_on_a_file(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    path.write_bytes(os.urandom(4 * MiB))
    with DiskTarget.open(path) as target:
        assert target.zero(MiB, MiB) in ("fallocate-zero-range", "write-zeros")
        assert target.discard(2 * MiB, 4096) in ("fallocate-punch-hole", "unsupported")
        target._zero_fallback = True  # a filesystem without ZERO_RANGE
        assert target.zero(3 * MiB, 5 * MiB // 4) == "write-zeros"
        target.fsync()
        target.drop_cache(0, 4 * MiB)
    assert _read(path, MiB, MiB) == bytes(MiB)
    assert _read(path, 3 * MiB, MiB) == bytes(MiB)
    assert path.stat().st_size == 4 * MiB + MiB // 4  # zeros written past the end grow a file; KEEP_SIZE does not


def test_direct_io_on_a_file_when_asked(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "t.img", 2 * MiB + 512)
    try:
        target = DiskTarget.open(path, direct=True)
    except TargetError:
        pytest.skip("this filesystem has no O_DIRECT")
    buf = AlignedBuffer(MiB)
    with target:
        assert target.io_mode == "O_DIRECT" and "O_DIRECT" in target.describe()
        target.write(b"a" * MiB, MiB, buf)  # aligned: the direct path, through buf
        target.write(b"b" * 512, 2 * MiB, buf)  # 512 is a whole logical block of a file target
        target.write(b"c" * 100, 10, buf)  # unaligned: the buffered descriptor
        with target.read_into(buf, MiB, MiB) as view:
            assert bytes(view) == b"a" * MiB
        with target.read_into(buf, 0, 4096) as view:
            assert bytes(view[10:110]) == b"c" * 100
        target.zero(MiB, 4096)
    buf.close()
    assert _read(path, MiB, 4096) == bytes(4096) and _read(path, 2 * MiB, 512) == b"b" * 512
    assert target.io_mode == "O_DIRECT"  # still known after close, for the report


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="No such file"):
        DiskTarget.open(tmp_path / "missing")
    with pytest.raises(TargetError, match="not a block device or a regular file"):
        DiskTarget.open(tmp_path)
    with pytest.raises(TargetError, match="not a block device or a regular file"):
        DiskTarget.open("/dev/null")
    read_only = sparse_file(tmp_path / "ro.img", MiB)
    read_only.chmod(0o444)
    if os.geteuid() != 0:  # root writes anyway
        with pytest.raises(TargetError, match="cannot open"):
            DiskTarget.open(read_only)


def test_a_buffer_with_a_lingering_view_closes_quietly() -> None:
    buf = AlignedBuffer(4096)
    kept = buf.view[:10]  # e.g. held by a frame of an exception caught and retried
    buf.close()
    assert len(kept) == 10
    kept.release()


def test_close_twice(tmp_path: Path) -> None:
    target = DiskTarget.open(sparse_file(tmp_path / "t.img", MiB))
    target.close()
    target.close()


def test_block_device_logic_on_a_file_descriptor(tmp_path: Path) -> None:
    """The block-device branches on a file's descriptor: the ioctls fail with ENOTTY, as on a device
    without the feature, and the fallbacks take over; a range not in whole 4096-byte blocks never
    reaches BLKZEROOUT."""
    path = tmp_path / "t.img"
    path.write_bytes(os.urandom(3 * MiB))
    fd = os.open(path, os.O_RDWR)
    target = DiskTarget(path, "block", 3 * MiB, 4096, fd, None)
    with target:
        assert target.zero(MiB, 1536) == "write-zeros"  # unaligned: zeros written, fast path still on
        assert [target._zero_fallback] == [False]
        assert target.zero(2 * MiB, 8192) == "write-zeros"  # BLKZEROOUT: ENOTTY, then zeros
        assert target._zero_fallback
        assert target.discard(0, 4096) == "unsupported" and target.discard(0, 4096) == "unsupported"
        assert not target.is_hole(0, 4096)  # a block device is always read
    assert _read(path, MiB, 1536) == bytes(1536) and _read(path, 2 * MiB, 8192) == bytes(8192)
    assert _read(path, MiB + 1536, 10) != bytes(10)
