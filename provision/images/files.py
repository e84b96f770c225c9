"""Filesystem primitives of the store: atomic writes (temp file + fsync + rename), reads that never leave
the store (``open_inside``), the store lock, and the data segments of a sparse file (``data_segments``).

Temp files live beside their target (same directory, so the rename is atomic) and start with ``.tmp-``;
one left behind by a crash is removed by the next garbage collection, which runs under the exclusive lock
and so never races a writer.

``open_inside(root, "chunks", "ab", "ab...zst")`` walks down from the store root one directory at a time
with ``openat(O_NOFOLLOW)``: a symlink anywhere below the root (a chunk file, its ``ab`` folder, ``chunks``
itself) is refused instead of followed, and so is anything that is not a regular file (a FIFO is opened
with O_NONBLOCK, so it is refused, not waited on). The root itself is the operator's configured path and
is opened as given.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from provision.images.errors import StoreBusy

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (a directory) durable: needed after a rename into it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UnsafeFile(OSError):
    """A path below the store root that is a symlink, or not a directory / regular file where one is needed.
    ``filename`` is the whole path, ``strerror`` says what it is."""


def _describe(dir_fd: int, name: str) -> str:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError as exc:
        return exc.strerror or "unreadable"
    if stat.S_ISLNK(mode):
        return "a symlink (refused: only regular files inside the store are read)"
    if stat.S_ISDIR(mode):
        return "a directory, not a regular file"
    return "not a regular file" if not stat.S_ISREG(mode) else "not a directory"


def open_inside(root: Path, *parts: str) -> int:
    """A read-only descriptor of the regular file ``root/parts...``, opened without following any symlink
    below ``root``. FileNotFoundError if a part is missing, UnsafeFile if one is a symlink, a directory
    part is not a directory, or the file is not a regular file. The caller closes the descriptor."""
    if not parts or any(not p or p in (".", "..") or "/" in p for p in parts):
        raise ValueError(f"not a relative path of plain names: {parts!r}")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                where = root.joinpath(*parts[: i + 1])
                raise UnsafeFile(exc.errno, _describe(fd, part), str(where)) from None
            os.close(fd)
            fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFile(errno.EINVAL, "not a regular file", str(root.joinpath(*parts)))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_inside(root: Path, *parts: str, limit: int) -> bytes:
    """The bytes of the regular file ``root/parts...`` (see ``open_inside``); UnsafeFile past ``limit``."""
    fd = open_inside(root, *parts)
    data = bytearray()
    try:
        while len(data) <= limit and (block := os.read(fd, min(1 << 20, limit + 1 - len(data)))):
            data += block
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnsafeFile(errno.EFBIG, f"larger than the {limit} bytes allowed", str(root.joinpath(*parts)))
    return bytes(data)


def temp_path(target: Path) -> Path:
    return target.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}-{target.name}")


def atomic_write(target: Path, data: bytes | Iterable[bytes], *, sync_dir: bool = True) -> int:
    """Write ``data`` to ``target`` so that readers see the old file or the whole new one, never a part.
    Returns the byte count. With ``sync_dir=False`` the caller fsyncs the directory later (batched)."""
    tmp = temp_path(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    written = 0
    try:
        try:
            for part in [data] if isinstance(data, bytes) else data:
                view = memoryview(part)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    written += n
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(target.parent)
    return written


class StoreLock:
    """``fcntl.flock`` on one file of the store. Imports hold it shared while they write chunks and their
    index (several may run at once); publish, retention and garbage collection hold it exclusive, so a
    sweep never deletes the chunks of an import that has not written its index yet.

    Each acquisition opens its own file description, so threads of one process exclude each other too.
    """

    def __init__(self, path: Path, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout

    @contextlib.contextmanager
    def shared(self, what: str) -> Iterator[None]:
        with self._held(fcntl.LOCK_SH, what):
            yield

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        with self._held(fcntl.LOCK_EX, what):
            yield

    @contextlib.contextmanager
    def _held(self, mode: int, what: str) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._acquire(fd, mode, what)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _acquire(self, fd: int, mode: int, what: str) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                if waited:
                    log.info("image store lock acquired for %s", what)
                return
            except BlockingIOError:
                pass
            if not waited:
                log.info(
                    "%s: waiting for the image store lock %s (an import, publish or retention runs)", what, self.path
                )
                waited = True
            if deadline is not None and time.monotonic() >= deadline:
                raise StoreBusy(
                    f"{what}: the image store {self.path.parent} stayed locked for {self.timeout:.0f} s "
                    "(another import, publish or retention is running); try again later",
                    path=str(self.path),
                )
            time.sleep(0.05)


def data_segments(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """The parts of [start, end) of a sparse file that hold data (SEEK_DATA / SEEK_HOLE)."""
    segments = []
    at = start
    while at < end:
        try:
            data = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        segments.append((data, hole))
        at = hole
    return segments
