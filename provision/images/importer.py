"""Cut a raw disk into chunks and store them: the import pipeline.

The calling thread reads the disk in order (holes of a sparse file are found with SEEK_DATA and not read)
and spots all-zero chunks; a pool of threads hashes, compresses and writes the non-zero chunks (hashlib and
zstandard release the GIL, so this uses every core); two threads hash the whole source and the bmap ranges,
each in disk order. At most ``2 * (workers + 4)`` chunks are in flight, so memory stays under ~100 MiB with
4 MiB chunks whatever the disk size.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from provision.images.bmap import BmapBuilder
from provision.images.chunks import DEFAULT_LEVEL, ChunkStore, PutResult, check_chunk_size, is_zero, zeros
from provision.images.errors import ImageError
from provision.images.files import fsync_dir
from provision.images.index import ChunkRef

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

# Threads beyond ``workers`` in the chunk pool: a thread waiting in fsync uses no CPU, so with only one thread per
# core a slow disk (fsync of 10-80 ms on a busy machine) would leave cores idle.
WRITE_WAIT_THREADS = 4


@dataclass(frozen=True)
class ChunkingResult:
    chunks: tuple[ChunkRef, ...]
    source_sha256: str  # sha256 of the whole raw file, holes included (what sha256sum prints)
    bmap: str  # the bmap text of this disk
    new_chunks: int  # chunks written by this import (the others were already stored)
    new_bytes: int  # compressed bytes written by this import
    stored_bytes: int  # compressed bytes of all distinct chunks of this disk
    seconds: float


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def disk_size(fd: int) -> int:
    """Size of a regular file or a block device."""
    return os.lseek(fd, 0, os.SEEK_END)


def _is_hole(fd: int, offset: int, length: int) -> bool:
    """True if the file has no data in [offset, offset+length) (a hole of a sparse file). False when the
    filesystem cannot tell (the chunk is then read and checked for zeros)."""
    try:
        data = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        return exc.errno == errno.ENXIO  # ENXIO: no data from offset to the end of the file
    return data >= offset + length


class _InOrder:
    """A thread that applies ``fn`` to items in the order they are put (a sequential hash over the whole disk
    must see the chunks in order). The queue is bounded, so a slow consumer slows the reader down."""

    def __init__(self, name: str, fn: Callable[[int, int, bytes | None], None], maxsize: int) -> None:
        self._fn = fn
        self._queue: queue.Queue[tuple[int, int, bytes | None] | None] = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fn(*item)
                except BaseException as exc:  # handed to the caller by put() or close()
                    self._error = exc

    def put(self, offset: int, length: int, data: bytes | None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((offset, length, data))

    def close(self, *, check: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        if check and self._error is not None:
            raise self._error


def chunk_file(
    fd: int,
    size: int,
    store: ChunkStore,
    *,
    chunk_size: int,
    level: int = DEFAULT_LEVEL,
    workers: int | None = None,
    progress: Progress | None = None,
    what: str = "disk",
) -> ChunkingResult:
    """Store every non-zero chunk of the first ``size`` bytes of ``fd``; return the chunk list in order.

    Threads: this one reads and spots zero chunks; ``workers`` hash, compress and write chunks; one thread
    hashes the whole source and one computes the bmap ranges, each in disk order."""
    check_chunk_size(chunk_size)
    started = time.monotonic()
    workers = workers or default_workers()
    source = hashlib.sha256()
    bmap = BmapBuilder(size)
    refs: list[ChunkRef] = []
    stored: dict[str, int] = {}
    dirs: set[Path] = set()
    new_chunks = new_bytes = done = 0
    pending: deque[tuple[int, Future[PutResult] | None]] = deque()

    seen: set[str] = set()
    seen_lock = threading.Lock()

    def put(data: bytes) -> PutResult:
        sha = hashlib.sha256(data).hexdigest()
        with seen_lock:  # a chunk repeated within this disk is compressed and written once
            if sha in seen:
                return PutResult(sha, False, 0)
            seen.add(sha)
        return store.put(data, level=level, sha256=sha, sync_dir=False)

    def finish_one() -> None:
        nonlocal new_chunks, new_bytes, done
        length, future = pending.popleft()
        if future is None:
            refs.append(ChunkRef(None, length))
        else:
            result = future.result()
            refs.append(ChunkRef(result.sha256, length))
            stored[result.sha256] = max(stored.get(result.sha256, 0), result.stored_bytes)
            if result.new:
                new_chunks += 1
                new_bytes += result.stored_bytes
                dirs.add(store.path(result.sha256).parent)
        done += length
        if progress is not None:
            progress(done, size)

    threads = workers + WRITE_WAIT_THREADS
    in_flight = 2 * threads
    hash_source = _InOrder("image-sha256", lambda _o, n, data: source.update(zeros(n) if data is None else data),
                           in_flight)  # fmt: skip
    hash_ranges = _InOrder("image-bmap", bmap.add, in_flight)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="image-chunk") as pool:
        try:
            for offset in range(0, size, chunk_size):
                length = min(chunk_size, size - offset)
                data: bytes | None = None
                if not _is_hole(fd, offset, length):
                    data = os.pread(fd, length, offset)
                    if len(data) != length:
                        raise ImageError(f"{what}: short read at byte {offset}: the file shrank while importing")
                hash_source.put(offset, length, data)
                if data is not None and is_zero(data):
                    data = None
                hash_ranges.put(offset, length, data)
                pending.append((length, None if data is None else pool.submit(put, data)))
                while len(pending) > in_flight:
                    finish_one()
            while pending:
                finish_one()
        except BaseException:
            for _, future in pending:
                if future is not None:
                    future.cancel()
            hash_source.close(check=False)
            hash_ranges.close(check=False)
            raise
    hash_source.close()
    hash_ranges.close()
    for directory in sorted(dirs):
        fsync_dir(directory)
    if dirs:
        fsync_dir(store.root)
    return ChunkingResult(
        chunks=tuple(refs),
        source_sha256=source.hexdigest(),
        bmap=bmap.text(),
        new_chunks=new_chunks,
        new_bytes=new_bytes,
        stored_bytes=sum(stored.values()),
        seconds=time.monotonic() - started,
    )
