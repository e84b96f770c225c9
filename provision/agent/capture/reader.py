"""Reading a disk for a capture (issue 17, provision.wire.capture): the disk opened read-only, its partitions and
the free space of their file systems (``partitions``, ``freespace``), and each chunk as it is sent: the bytes the
file systems mark free are zeros, a chunk that is all zeros then is a hole.

- ``DiskReader`` opens the disk read-only (a block device ``O_EXCL``: a mounted file system on it refuses the
  capture; a regular file stands in for a disk in tests), knows its size and sector size (``rootpart.RawDisk``)
  and reads with ``pread`` (short reads continued).
- ``read_layout`` lists the partitions and reads each one's free space; a reader that fails on a partition
  leaves it whole (sent as it is, the reason in its ``CapturedFs.note``). Free ranges are clamped to their
  partition and the disk, so a wrong bitmap can never zero bytes outside its own file system.
- ``ChunkReader.chunk`` gives one chunk's plain bytes (free space zeroed) and its sha256, or None for a hole:
  a chunk wholly inside free space is not read at all; otherwise only the spans holding used bytes are read.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from provision.agent.capture.freespace import FreeSpace, Read, free_space
from provision.agent.capture.partitions import partitions
from provision.agent.errors import AgentError, TargetError
from provision.agent.ranges import is_zero, merge
from provision.agent.rootpart import RawDisk
from provision.wire.capture import CapturedFs

log = logging.getLogger(__name__)

GAP = 64 << 10  # free bytes between two used spans of a chunk read through rather than read apart
Partitions = Callable[[Read, int, int], Sequence[tuple[int, int, int]]]
FreeSpaceOf = Callable[[Read, int, int], FreeSpace]


class DiskReader:
    """One disk open read-only: ``size``, ``sector_size``, ``read`` and ``read_into`` (thread-safe: pread)."""

    def __init__(self, path: Path) -> None:
        raw = RawDisk(path, None, writable=False)
        self.path, self.fd, self.size, self.sector_size = path, raw.fd, raw.size, raw.ss

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of the disk)."""
        buf = bytearray(max(0, min(length, self.size - offset)))
        self.read_into(memoryview(buf), offset)
        return bytes(buf)

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the disk's bytes at ``offset``; a short read at the end is an error."""
        done = 0
        while done < len(view):
            try:
                got = os.preadv(self.fd, [view[done:]], offset + done)
            except InterruptedError:
                continue
            except OSError as exc:
                raise TargetError(f"{self.path}: read of {len(view) - done} bytes at {offset + done} failed: "
                                  f"{exc.strerror or exc}", target=str(self.path), offset=offset + done,
                                  errno=exc.errno or errno.EIO) from None  # fmt: skip
            if got == 0:
                raise TargetError(f"{self.path}: ends at {offset + done}, {len(view) - done} bytes short",
                                  target=str(self.path), offset=offset + done)  # fmt: skip
            done += got

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Layout:
    """The disk's partitions ``(number, offset, size)``, each one's free space, and every free range of the disk
    (absolute ``(start, length)``, sorted, merged)."""

    partitions: tuple[tuple[int, int, int], ...]
    filesystems: tuple[tuple[int, FreeSpace], ...]
    free: tuple[tuple[int, int], ...]

    @property
    def free_bytes(self) -> int:
        return sum(length for _, length in self.free)

    def captured(self) -> list[CapturedFs]:
        return [fs.captured(number) for number, fs in self.filesystems]


def clamp(ranges: Sequence[tuple[int, int]], low: int, high: int) -> list[tuple[int, int]]:
    """The parts of ``ranges`` inside ``[low, high)``."""
    out = []
    for start, length in ranges:
        a, b = max(start, low), min(start + length, high)
        if a < b:
            out.append((a, b - a))
    return out


def read_layout(
    read: Read,
    disk_size: int,
    sector_size: int,
    *,
    find_partitions: Partitions = partitions,
    find_free: FreeSpaceOf = free_space,
    log_id: str = "",
) -> Layout:
    """The partitions of the disk and the free space of their file systems."""
    found = tuple(find_partitions(read, disk_size, sector_size))
    filesystems: list[tuple[int, FreeSpace]] = []
    free: list[tuple[int, int]] = []
    for number, offset, size in found:
        end = min(offset + size, disk_size)
        try:
            fs = find_free(read, offset, end - offset)
        except (AgentError, OSError, ValueError, IndexError) as exc:  # sent whole: a capture never guesses
            note = f"free space not read: {type(exc).__name__}: {exc}"[:500]
            log.warning("%s: partition %d at %d: %s", log_id, number, offset, note)
            fs = FreeSpace("unknown", offset, end - offset, 0, (), note=note)
        filesystems.append((number, fs))
        free.extend(clamp(fs.free, offset, end))
        log.info("%s: partition %d at %d (%d bytes): %s, %d bytes free%s", log_id, number, offset, size, fs.fs,
                 fs.free_bytes, f" ({fs.note})" if fs.note else "")  # fmt: skip
    return Layout(found, tuple(filesystems), tuple(merge(free)))


@dataclass(frozen=True)
class ChunkRead:
    """One chunk as sent: its position, place and length, its sha256 (None: a hole), the bytes read for it."""

    index: int
    offset: int
    length: int
    sha256: str | None
    read: int


class ChunkReader:
    """Chunks of ``chunk_size`` of a disk with its free ranges zeroed. Thread-safe (each call brings its buffer)."""

    def __init__(self, disk: DiskReader, free: Sequence[tuple[int, int]], chunk_size: int) -> None:
        self.disk = disk
        self.size = disk.size
        self.chunk_size = chunk_size
        self.free = tuple(free)
        self._starts = [start for start, _ in self.free]
        self._zeros = memoryview(bytes(chunk_size))

    @property
    def count(self) -> int:
        return -(-self.size // self.chunk_size)

    def place(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk ``index``."""
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.size - offset)

    def free_in(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The free ranges of ``[offset, offset + length)``, relative to ``offset``."""
        end = offset + length
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        out = []
        while i < len(self.free) and self.free[i][0] < end:
            start, size = self.free[i]
            a, b = max(start, offset), min(start + size, end)
            if a < b:
                out.append((a - offset, b - a))
            i += 1
        return out

    def chunk(self, index: int, into: bytearray) -> tuple[ChunkRead, memoryview]:
        """Chunk ``index`` read into ``into`` (``chunk_size`` bytes): what it is, and its plain bytes."""
        if len(into) != self.chunk_size:
            raise ValueError(f"a buffer of {len(into)} bytes for chunks of {self.chunk_size}")
        offset, length = self.place(index)
        view = memoryview(into)[:length]
        free = self.free_in(offset, length)
        if sum(size for _, size in free) == length:
            view[:] = self._zeros[:length]
            return ChunkRead(index, offset, length, None, 0), view
        read = 0
        for start, end in self._spans(free, length):
            self.disk.read_into(view[start:end], offset + start)
            read += end - start
        for start, size in free:
            view[start : start + size] = self._zeros[:size]
        if is_zero(view):
            return ChunkRead(index, offset, length, None, read), view
        return ChunkRead(index, offset, length, hashlib.sha256(view).hexdigest(), read), view

    @staticmethod
    def _spans(free: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
        """The ``(start, end)`` spans to read: the used parts, joined across free gaps shorter than ``GAP``."""
        spans: list[tuple[int, int]] = []
        at = 0
        for start, size in [*free, (length, 0)]:
            if start > at:
                if spans and at - spans[-1][1] < GAP:
                    spans[-1] = (spans[-1][0], start)
                else:
                    spans.append((at, start))
            at = start + size
        return spans
