"""Reading and writing a whole drive for the erasure: its size, its I/O errors, and a reader that asks the
drive itself, not the page cache (standard library only).

- ``drive_size(path)``: a block device's size from the kernel (``BLKGETSIZE64``), a regular file's from its
  length (tests and demos use files standing in for disks, as ``agent.disks.disks_in_folder`` does).
- ``DriveIoError``: an I/O failure with the drive, what was done, the offset, the length and the errno.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from provision.agent.disk_io import AlignedBuffer
from provision.errors import FatalError

log = logging.getLogger(__name__)

BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t): the device's size in bytes (u64)
BLKSSZGET = 0x1268  # _IO(0x12, 104): the logical block size (int)
BLKFLSBUF = 0x1261  # _IO(0x12, 97): drop the device's cached pages
BLKRRPART = 0x125F  # _IO(0x12, 95): read the partition table again
PIECE = 1 << 20  # bytes one verification piece holds (and one hash covers)


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


def open_direct(path: Path, flags: int, block_size: int, probe: bool = True) -> int | None:
    """An ``O_DIRECT`` descriptor if opening it and an aligned read of the first block both work."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_DIRECT)
    except OSError as exc:
        log.info("%s: no O_DIRECT (%s): buffered I/O", path, exc.strerror)
        return None
    if not probe:
        return fd
    buf = AlignedBuffer(block_size)
    try:
        os.preadv(fd, [buf.view[:block_size]], 0)
        return fd
    except OSError as exc:
        log.info("%s: O_DIRECT read fails (%s): buffered I/O", path, exc.strerror)
        os.close(fd)
        return None
    finally:
        buf.close()


class DriveReader:
    """A drive opened for reading back: ``read(offset, length)`` returns a view of its own aligned buffer
    (valid until the next read). ``direct``: None = O_DIRECT where it works, False = buffered only."""

    def __init__(self, path: Path, *, direct: bool | None = None, buffer: int = PIECE) -> None:
        self.path = path
        self.block = is_block(path)
        with io_errors(path, "opening for reading"):
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.size = drive_size(path)
            with io_errors(path, "asking the logical block size of"):
                self.block_size = logical_block(self._fd, self.block)
            usable = direct is not False and self.size >= self.block_size
            self._direct = open_direct(path, os.O_RDONLY, self.block_size) if usable else None
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
