"""One pass of zeros over every LBA of a drive: NIST SP 800-88 Clear, done by the agent itself.

Real zero buffers are written: never ``BLKZEROOUT`` or a discard, which a drive may answer by unmapping the
blocks (or a thin device by dropping them) without writing anything. Writes are 4 MiB, from a page-aligned
buffer, with ``O_DIRECT`` where the drive takes it (a block device opened ``O_EXCL``: the kernel refuses it
while something holds it); elsewhere buffered writes with an ``fsync`` every 256 MiB and at the end. The
drive's size comes from the kernel (``BLKGETSIZE64``), a regular file's from its length: tests and demos use
files standing in for disks, which the pass makes whole (a sparse file's holes become written zeros).

Every failure is a ``DriveIoError`` naming the drive, the offset, the length and the errno.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provision.agent.disk_io import AlignedBuffer
from provision.agent.erasure.drive_io import io_errors, open_writable

log = logging.getLogger(__name__)

WRITE = 4 << 20  # bytes per write
SYNC_EVERY = 256 << 20  # buffered writes: fsync after this many bytes (bounded dirty memory in the live RAM)
PROGRESS_INTERVAL = 1.0  # seconds between progress calls (and one at the end)

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass(frozen=True)
class Overwritten:
    """What one pass did: bytes written (the whole drive), seconds, the I/O mode and the mean rate."""

    path: str
    bytes_written: int
    seconds: float
    io_mode: str  # "O_DIRECT" or "buffered"

    @property
    def rate(self) -> float:
        return self.bytes_written / self.seconds if self.seconds > 0 else 0.0


def overwrite(
    path: Path,
    *,
    progress: Progress | None = None,
    direct: bool | None = None,
    log_id: str = "",
    clock: Callable[[], float] = time.monotonic,
) -> Overwritten:
    """Write zeros over every byte of ``path`` (a block device or a regular file), then fsync.

    ``direct``: None = O_DIRECT where it works, True = only if it works (else buffered all the same, logged),
    False = buffered. Raises ``DriveIoError`` at the first failure (nothing is retried: a drive that cannot
    be written is not erased, and the caller says so)."""
    started = clock()
    with open_writable(path, WRITE, direct=direct, log_id=log_id) as drive:
        size, mode = drive.size, drive.io_mode
        log.info("%s: overwriting %s with zeros: %d bytes, %s", log_id, path, size, mode)
        _zeros(path, drive.fd, drive.direct_fd, drive.block_size, size, drive.buf, progress, clock)
    seconds = max(clock() - started, 0.0)
    if progress is not None:
        progress(size, size)
    log.info("%s: %s overwritten: %d bytes in %.1f s", log_id, path, size, seconds)
    return Overwritten(str(path), size, seconds, mode)


def _zeros(
    path: Path,
    fd: int,
    direct_fd: int | None,
    block_size: int,
    size: int,
    buf: AlignedBuffer,
    progress: Progress | None,
    clock: Callable[[], float],
) -> None:
    offset, unsynced, told = 0, 0, clock()
    while offset < size:
        length = min(WRITE, size - offset)
        aligned = offset % block_size == 0 and length % block_size == 0
        target = direct_fd if aligned and direct_fd is not None else fd
        with io_errors(path, "writing zeros", offset, length):
            done = 0
            while done < length:
                written = os.pwrite(target, buf.view[done:length], offset + done)
                if written <= 0:
                    raise OSError(28, "no space left on the device: the write stopped short")  # ENOSPC
                done += written
        offset += length
        if target == fd:
            unsynced += length
            if unsynced >= SYNC_EVERY:
                with io_errors(path, "fsync of", offset - unsynced, unsynced):
                    os.fsync(fd)
                unsynced = 0
        if progress is not None and clock() - told >= PROGRESS_INTERVAL:
            told = clock()
            progress(offset, size)
