"""The target disk: a block device (O_DIRECT when it allows it) or a regular file (buffered I/O + fsync).

- A **block device** is opened ``O_EXCL`` (the kernel refuses it while a filesystem on it is mounted or it
  is otherwise claimed), and a second time with ``O_DIRECT``; a probe read of its first block tells whether
  direct I/O works. Direct I/O needs page-aligned buffers (``AlignedBuffer``: an anonymous mmap) and offsets
  and lengths in whole logical blocks (``BLKSSZGET``); anything else (a short last chunk of an odd size) goes
  through the buffered descriptor. Holes: ``BLKZEROOUT`` (zero) and ``BLKDISCARD`` (discard).
- A **regular file** (tests, benchmarks, a VM disk image) uses buffered I/O and fsync. Holes:
  ``fallocate(FALLOC_FL_ZERO_RANGE)`` (zero; else writing zeros) and ``fallocate(FALLOC_FL_PUNCH_HOLE)``
  (discard). ``SEEK_DATA`` tells which ranges are holes of the file (they read as zeros), so checking and
  verifying do not read them.
- ``direct=True`` forces O_DIRECT on a regular file too (tests of the aligned path without a loop device).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import gc
import logging
import mmap
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Self

from provision.agent.errors import TargetError

log = logging.getLogger(__name__)

BLKSSZGET = 0x1268  # _IO(0x12, 104): logical block size (int)
BLKDISCARD = 0x1277  # _IO(0x12, 119): uint64[2] {start, length}
BLKZEROOUT = 0x127F  # _IO(0x12, 127): uint64[2] {start, length}
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
SYNC_FILE_RANGE_WRITE = 0x02
PAGE = mmap.PAGESIZE
ZERO_PIECE = 4 << 20  # bytes written per pwrite when zeros have to be written
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS}

Kind = Literal["block", "file"]


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


class AlignedBuffer:
    """A page-aligned, zero-filled buffer (anonymous mmap) for O_DIRECT reads and writes."""

    def __init__(self, size: int) -> None:
        self.size = round_up(max(size, 1), PAGE)
        self._map = mmap.mmap(-1, self.size)
        self.view = memoryview(self._map)

    def close(self) -> None:
        self.view.release()
        try:
            self._map.close()
        except BufferError:  # a view still held by a reference cycle (a frame of a retried exception)
            gc.collect()
            with contextlib.suppress(BufferError):
                self._map.close()  # else it is unmapped when the last view goes

    def starts_with(self, data: bytes | memoryview) -> bool:
        """True if the buffer's first ``len(data)`` bytes are ``data``: one memcmp, without the GIL for a
        writable view (another worker's buffer); else ``mmap.find`` anchored at 0 (``memoryview ==
        memoryview`` compares item by item, 40 times slower)."""
        n = len(data)
        if n > self.size:
            return False
        if isinstance(data, memoryview) and not data.readonly and data.c_contiguous and data.itemsize == 1 and n:
            ours, theirs = (ctypes.c_char * n).from_buffer(self._map), (ctypes.c_char * n).from_buffer(data)
            try:
                return bool(_memcmp(ours, theirs, n) == 0)
            finally:
                del ours, theirs  # the buffer exports, so that the mmap can close
        return self._map.find(data, 0, n) == 0

    def holds(self, data: bytes | memoryview) -> bool:
        """True if ``data`` is a view of this buffer (then nothing needs copying into it)."""
        return isinstance(data, memoryview) and data.obj is self._map


def copy_into(into: memoryview, data: bytes) -> None:
    """``into[:len(data)] = data`` without holding the GIL (``ctypes.memmove``: the other workers run)."""
    n = len(data)
    if n > len(into):
        raise ValueError(f"{n} bytes do not fit in a buffer of {len(into)}")
    if n == 0:
        return
    target = (ctypes.c_char * n).from_buffer(into)
    try:
        ctypes.memmove(target, data, n)
    finally:
        del target  # the buffer export, so that the mmap can close


_memcmp = ctypes.CDLL(None).memcmp  # a foreign call: the GIL is released while it runs
_memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_memcmp.restype = ctypes.c_int


@functools.cache
def _libc_function(name: str) -> Any:
    """The C library's ``name`` with its argument types (looked up once: sync_file_range runs per chunk)."""
    func = getattr(ctypes.CDLL(None, use_errno=True), name)
    if name == "fallocate":  # int fallocate(int fd, int mode, off_t offset, off_t len)
        func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    else:  # int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags)
        func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _libc_call(name: str, fd: int, a: int, b: int, c: int) -> None:
    """``name(fd, a, b, c)`` of the C library (fallocate, sync_file_range: not in the os module)."""
    if _libc_function(name)(fd, a, b, c) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _libc_call("fallocate", fd, mode, offset, length)


def open_direct(path: Path, flags: int, block_size: int, *, probe: bool = True, log_id: str = "") -> int | None:
    """An ``O_DIRECT`` descriptor of ``path`` (opened with ``flags``) if opening it and, with ``probe``, an
    aligned read of the first logical block both work; None: buffered I/O (the reason logged). The one
    open-and-probe of the image writer (``DiskTarget``) and the erasure (``erasure.drive_io``)."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_DIRECT)
    except OSError as exc:
        log.info("%s: %s: no O_DIRECT (%s): buffered I/O", log_id, path, exc.strerror)
        return None
    if not probe:
        return fd
    buf = AlignedBuffer(block_size)
    try:
        os.preadv(fd, [buf.view[:block_size]], 0)
        return fd
    except OSError as exc:
        log.info("%s: %s: O_DIRECT read fails (%s): buffered I/O", log_id, path, exc.strerror)
        os.close(fd)
        return None
    finally:
        buf.close()


class DiskTarget:
    """An open target. Thread-safe for positional I/O (pread/pwrite at distinct offsets)."""

    def __init__(self, path: Path, kind: Kind, size: int, block_size: int, fd: int, direct_fd: int | None) -> None:
        self.path = path
        self.kind: Kind = kind
        self.size = size
        self.block_size = block_size
        self._fd = fd
        self._direct_fd = direct_fd
        self.direct = direct_fd is not None  # fixed at open (still right after close, for the report)
        self._zero_fallback = False  # the fast zeroing call is not supported: write zeros
        self._discard_unsupported = False
        self._early_writeback = True

    @classmethod
    def open(cls, path: Path | str, *, direct: bool | None = None) -> Self:
        """Open ``path`` for writing. ``direct``: None = O_DIRECT on block devices when they allow it,
        True = O_DIRECT or fail, False = buffered only."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise TargetError(f"{path}: {exc.strerror}", target=str(path)) from None
        if stat.S_ISBLK(mode):
            kind: Kind = "block"
        elif stat.S_ISREG(mode):
            kind = "file"
        else:
            raise TargetError(f"{path}: not a block device or a regular file", target=str(path))
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if kind == "block" else 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            hint = " (mounted or in use?)" if exc.errno == errno.EBUSY else ""
            raise TargetError(f"{path}: cannot open for writing: {exc.strerror}{hint}", target=str(path)) from None
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            block_size = 512
            if kind == "block":
                block_size = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
            want_direct = direct or (direct is None and kind == "block")
            direct_fd = open_direct(path, os.O_RDWR, block_size, probe=size >= block_size) if want_direct else None
        except BaseException:
            os.close(fd)
            raise
        if direct and direct_fd is None:
            os.close(fd)
            raise TargetError(f"{path}: O_DIRECT was asked for and does not work here", target=str(path))
        return cls(path, kind, size, block_size, fd, direct_fd)

    @property
    def io_mode(self) -> str:
        return "O_DIRECT" if self.direct else "buffered"

    def describe(self) -> str:
        what = "block device" if self.kind == "block" else "regular file"
        io = f"O_DIRECT, logical block {self.block_size}" if self.direct else "buffered I/O + fsync"
        return f"{self.path}: {what} of {self.size} bytes, {io}"

    def _direct_for(self, offset: int, length: int) -> int | None:
        """The O_DIRECT descriptor if there is one and the range is in whole logical blocks."""
        if offset % self.block_size == 0 and length % self.block_size == 0:
            return self._direct_fd
        return None

    @contextlib.contextmanager
    def _io(self, what: str, offset: int | None = None, length: int | None = None) -> Iterator[None]:
        """An OSError of the target's I/O (a full, failing or read-only disk) as a TargetError that names the
        disk, what failed and where (facts ``target``, ``offset``, ``length``, ``errno``)."""
        try:
            yield
        except OSError as exc:
            where = "" if offset is None else f" {length} bytes at offset {offset}"
            raise TargetError(
                f"{self.path}: {what}{where} failed: {exc.strerror or exc}",
                target=str(self.path), offset=offset, length=length, errno=exc.errno,
            ) from None  # fmt: skip

    def read_into(self, buf: AlignedBuffer, offset: int, length: int) -> memoryview:
        """Read ``length`` bytes at ``offset`` into ``buf``; the view is shorter only at the end of the target."""
        direct_fd = self._direct_for(offset, length)
        fd = self._fd if direct_fd is None else direct_fd
        got = 0
        with self._io("reading", offset, length):
            while got < length:
                n = os.preadv(fd, [buf.view[got:length]], offset + got)
                if n == 0:
                    break
                got += n
        return buf.view[:got]

    def write(self, data: bytes | memoryview, offset: int, buf: AlignedBuffer) -> None:
        """Write ``data`` at ``offset``. The direct path writes from ``buf`` (``data`` is copied there unless it
        is already a view of it). A buffered write starts its writeback at once (``sync_file_range``), so the
        disk works while the next chunks arrive and the final fsync has little left to do."""
        length = len(data)
        direct_fd = self._direct_for(offset, length)
        if direct_fd is not None:
            if not buf.holds(data):
                buf.view[:length] = data
            with self._io("writing", offset, length):
                self._write_all(direct_fd, buf.view[:length], offset)
            return
        with self._io("writing", offset, length):
            self._write_all(self._fd, memoryview(data), offset)
        if self._early_writeback:
            try:
                _libc_call("sync_file_range", self._fd, offset, length, SYNC_FILE_RANGE_WRITE)
            except OSError:
                self._early_writeback = False  # only an optimisation: fsync does it all at the end

    @staticmethod
    def _write_all(fd: int, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)

    def zero(self, offset: int, length: int) -> str:
        """Make every byte of the range zero on the medium; returns the method used.

        A block-device range not in whole logical blocks (an image whose size is not a multiple of a 4Kn
        disk's block) is written with zeros: BLKZEROOUT would refuse it."""
        with self._io("zeroing", offset, length):
            return self._zero(offset, length)

    def _zero(self, offset: int, length: int) -> str:
        aligned = offset % self.block_size == 0 and length % self.block_size == 0
        if not self._zero_fallback and (aligned or self.kind != "block"):
            try:
                if self.kind == "block":
                    fcntl.ioctl(self._fd, BLKZEROOUT, struct.pack("QQ", offset, length))
                    return "BLKZEROOUT"
                _fallocate(self._fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)
                return "fallocate-zero-range"
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                log.info("%s: fast zeroing not supported (%s): writing zeros", self.path, exc.strerror)
                self._zero_fallback = True
        self._write_zeros(offset, length)
        return "write-zeros"

    def _write_zeros(self, offset: int, length: int) -> None:
        buf = AlignedBuffer(min(length, ZERO_PIECE))
        try:
            for start in range(offset, offset + length, buf.size):
                n = min(buf.size, offset + length - start)
                direct_fd = self._direct_for(start, n)
                fd = self._fd if direct_fd is None else direct_fd
                self._write_all(fd, buf.view[:n], start)
        finally:
            buf.close()

    def discard(self, offset: int, length: int) -> str:
        """Tell the medium the range is unused (BLKDISCARD; a punched hole in a file); returns the method.

        A device without discard is left as it is ("unsupported"): discard promises nothing about content.
        """
        if self._discard_unsupported:
            return "unsupported"
        with self._io("discarding", offset, length):
            return self._discard(offset, length)

    def _discard(self, offset: int, length: int) -> str:
        try:
            if self.kind == "block":  # only whole logical blocks: the partial ones at the ends are left
                start, end = round_up(offset, self.block_size), (offset + length) // self.block_size * self.block_size
                if end > start:
                    fcntl.ioctl(self._fd, BLKDISCARD, struct.pack("QQ", start, end - start))
                return "BLKDISCARD"
            _fallocate(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
            return "fallocate-punch-hole"
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            log.info("%s: discard not supported (%s): holes left as they are", self.path, exc.strerror)
            self._discard_unsupported = True
            return "unsupported"

    def is_hole(self, offset: int, length: int) -> bool:
        """True if the filesystem says the range of a regular file is a hole (it reads as zeros).

        Always False for a block device, whose bytes have to be read."""
        if self.kind != "file":
            return False
        try:
            data = os.lseek(self._fd, offset, os.SEEK_DATA)
        except OSError as exc:
            return exc.errno == errno.ENXIO  # no data at or after offset
        return data >= offset + length

    def fsync(self) -> None:
        with self._io("fsync"):
            os.fsync(self._fd)
            if self._direct_fd is not None:
                os.fsync(self._direct_fd)

    def drop_cache(self, offset: int, length: int) -> None:
        """Drop clean cached pages of the range (after fsync), so the read-back comes from the medium."""
        with contextlib.suppress(OSError):
            os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self._fd < 0:
            return
        for fd in (self._direct_fd, self._fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._direct_fd, self._fd = None, -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
