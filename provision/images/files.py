"""Filesystem primitives of the store: atomic writes (temp file + fsync + rename) and the store lock.

Temp files live beside their target (same directory, so the rename is atomic) and start with ``.tmp-``;
one left behind by a crash is removed by the next garbage collection, which runs under the exclusive lock
and so never races a writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
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
