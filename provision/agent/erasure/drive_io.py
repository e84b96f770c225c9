"""Reading and writing a whole drive for the erasure: its size, its I/O errors, and a reader that asks the
drive itself, not the page cache (standard library only).

- ``drive_size(path)``: a block device's size from the kernel (``BLKGETSIZE64``), a regular file's from its
  length (tests and demos use files standing in for disks, as ``agent.disks.disks_in_folder`` does).
- ``DriveIoError``: an I/O failure with the drive, what was done, the offset, the length and the errno.
- ``write_markers``: a random marker at the start of every piece the read-back will judge, written before the
  erase (see ``verify``).
- ``DriveReader``: reads with ``O_DIRECT`` where the drive (or the file system of a file) takes it, so no
  cached page answers instead of the medium; elsewhere buffered reads after ``POSIX_FADV_DONTNEED`` (the
  cached pages of the range dropped first). Offsets and lengths not in whole logical blocks go through the
  buffered descriptor.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from provision.agent.disk_io import AlignedBuffer, open_direct
from provision.errors import FatalError

log = logging.getLogger(__name__)

BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t): the device's size in bytes (u64)
BLKSSZGET = 0x1268  # _IO(0x12, 104): the logical block size (int)
BLKFLSBUF = 0x1261  # _IO(0x12, 97): drop the device's cached pages
BLKRRPART = 0x125F  # _IO(0x12, 95): read the partition table again
PIECE = 1 << 20  # bytes one verification piece holds (and one hash covers)
MARK = 4096  # bytes of the marker written at the start of every piece before an erase
MARKER = b"provision erasure marker, offset "  # its readable start (a technician reading the drive sees what it is)


class DriveIoError(FatalError):
    """Reading or writing a drive failed: ``facts`` name the drive, what was done, where and the errno."""

    def __init__(self, path: Path, what: str, offset: int | None, length: int | None, exc: OSError) -> None:
        where = "" if offset is None else f" {length} bytes at byte {offset}"
        code = f" (errno {exc.errno})" if exc.errno is not None else ""
        super().__init__(
            f"{path}: {what}{where} failed: {exc.strerror or exc}{code}",
            path=str(path), what=what, offset=offset, length=length, errno=exc.errno,
        )  # fmt: skip
        self.path, self.what, self.offset, self.length, self.errno = path, what, offset, length, exc.errno
        self.strerror = exc.strerror or str(exc)


@contextlib.contextmanager
def io_errors(path: Path, what: str, offset: int | None = None, length: int | None = None) -> Iterator[None]:
    """An OSError of the block as a ``DriveIoError`` naming ``path``, ``what``, ``offset`` and ``length``."""
    try:
        yield
    except OSError as exc:
        raise DriveIoError(path, what, offset, length, exc) from None


def is_block(path: Path) -> bool:
    with io_errors(path, "looking at"):
        return stat.S_ISBLK(path.stat().st_mode)


def drive_size(path: Path) -> int:
    """Bytes of the drive: ``BLKGETSIZE64`` for a block device, the length of a regular file."""
    if not is_block(path):
        with io_errors(path, "looking at"):
            return path.stat().st_size
    with io_errors(path, "asking the size of"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return int(struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0])
        finally:
            os.close(fd)


def forget_cached(path: Path) -> list[str]:
    """After an erase: drop what the kernel cached of the drive (pages read before, e.g. by udev or lsblk, that
    would answer a later buffered read with the old data) and read its partition table again (the old
    partitions disappear). Best effort: returns what failed, in words, for the log."""
    problems: list[str] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return [f"{path}: not opened to drop its cache: {exc.strerror or exc}"]
    try:
        if not is_block(path):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return problems
        for name, request in (("BLKFLSBUF", BLKFLSBUF), ("BLKRRPART", BLKRRPART)):
            try:
                fcntl.ioctl(fd, request)
            except OSError as exc:  # EBUSY: a partition in use; EINVAL: no partition table support
                problems.append(f"{path}: {name}: {exc.strerror or exc}")
    except (OSError, DriveIoError) as exc:
        problems.append(f"{path}: dropping its cache: {exc}")
    finally:
        os.close(fd)
    return problems


def logical_block(fd: int, block: bool) -> int:
    """The logical block size of a block device (``BLKSSZGET``); 512 for a file (O_DIRECT's usual unit)."""
    if not block:
        return 512
    return int(struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0])


@dataclass
class Writable:
    """A drive open for writing (``open_writable``): the buffered descriptor, the O_DIRECT one where the drive
    takes it (None: buffered only), its size and logical block size, and an aligned buffer of the asked size."""

    fd: int
    direct_fd: int | None
    size: int
    block_size: int
    buf: AlignedBuffer

    @property
    def io_mode(self) -> str:
        return "O_DIRECT" if self.direct_fd is not None else "buffered"


@contextlib.contextmanager
def open_writable(path: Path, buffer: int, *, direct: bool | None = None, log_id: str = "") -> Iterator[Writable]:
    """``path`` (a block device, held exclusively, or a file) open for writing; on a normal exit both descriptors
    are fsynced; they are closed and the buffer freed in every case. ``direct``: None = O_DIRECT where it
    works, True = only if it works (else buffered all the same, logged), False = buffered. Raises
    ``DriveIoError``."""
    block = is_block(path)
    size = drive_size(path)
    with io_errors(path, "opening for writing"):
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if block else 0))
    direct_fd: int | None = None
    buf = AlignedBuffer(buffer)
    try:
        with io_errors(path, "asking the logical block size of"):
            block_size = logical_block(fd, block)
        if direct is not False and size >= block_size:
            direct_fd = open_direct(path, os.O_RDWR, block_size, log_id=log_id)
        yield Writable(fd, direct_fd, size, block_size, buf)
        with io_errors(path, "fsync of"):
            os.fsync(fd)
            if direct_fd is not None:
                os.fsync(direct_fd)
    finally:
        buf.close()
        for each in (direct_fd, fd):
            if each is not None:
                with contextlib.suppress(OSError):
                    os.close(each)


def write_markers(path: Path, pieces: Iterable[tuple[int, int]], *, direct: bool | None = None,
                  log_id: str = "") -> int:  # fmt: skip
    """Write a marker (``MARK`` bytes: ``MARKER``, the piece's offset in 8 bytes, then ``os.urandom``) at the start of
    every piece ``(offset, length)``, through ``O_DIRECT`` where the drive takes it, then fsync: before an
    erase, so every piece the read-back judges holds data the erase must remove (a drive that ignores the
    command keeps it). Returns the number of pieces marked; raises ``DriveIoError``."""
    base = os.urandom(MARK)
    count = 0
    with open_writable(path, MARK, direct=direct, log_id=log_id) as drive:
        for offset, length in pieces:
            n = min(MARK, length, max(drive.size - offset, 0))
            if n <= 0:
                continue
            drive.buf.view[:MARK] = (MARKER + offset.to_bytes(8, "little") + base)[:MARK]
            aligned = offset % drive.block_size == 0 and n % drive.block_size == 0
            target = drive.direct_fd if aligned and drive.direct_fd is not None else drive.fd
            with io_errors(path, "writing the verification marker", offset, n):
                if os.pwrite(target, drive.buf.view[:n], offset) != n:
                    raise OSError(28, "the write stopped short")  # ENOSPC
            count += 1
    log.info("%s: %s: verification marker written in %d pieces", log_id, path, count)
    return count


class DriveReader:
    """A drive opened for reading back: ``read(offset, length)`` returns a view of its own aligned buffer
    (valid until the next read). ``direct``: None = O_DIRECT where it works, False = buffered only."""

    def __init__(self, path: Path, *, direct: bool | None = None, buffer: int = PIECE, log_id: str = "") -> None:
        self.path = path
        self.block = is_block(path)
        with io_errors(path, "opening for reading"):
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.size = drive_size(path)
            with io_errors(path, "asking the logical block size of"):
                self.block_size = logical_block(self._fd, self.block)
            usable = direct is not False and self.size >= self.block_size
            self._direct = open_direct(path, os.O_RDONLY, self.block_size, log_id=log_id) if usable else None
        except BaseException:
            os.close(self._fd)
            raise
        self._buf = AlignedBuffer(buffer)

    @property
    def io_mode(self) -> str:
        return "O_DIRECT" if self._direct is not None else "buffered"

    def read(self, offset: int, length: int) -> memoryview:
        """``length`` bytes at ``offset`` (at most the buffer's size); shorter only at the end of the drive."""
        length = min(length, self._buf.size, max(self.size - offset, 0))
        aligned = offset % self.block_size == 0 and length % self.block_size == 0
        fd = self._direct if aligned and self._direct is not None else self._fd
        if fd == self._fd:
            with contextlib.suppress(OSError):  # the medium answers, not the page cache
                os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_DONTNEED)
        got = 0
        with io_errors(self.path, "reading", offset, length):
            while got < length:
                n = os.preadv(fd, [self._buf.view[got:length]], offset + got)
                if n == 0:
                    break
                got += n
        return self._buf.view[:got]

    def close(self) -> None:
        for fd in (self._direct, self._fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._direct, self._fd = None, -1
        self._buf.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
