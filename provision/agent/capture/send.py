"""Sending a disk for a capture (provision.wire.capture): the chunks in disk order, offered ``plan.offer`` at a
time; the ones the server lacks uploaded, each one zstd frame, from a small thread pool, so reading, compressing
and sending overlap.

- ``send_disk`` reads every chunk once (``ChunkReader``: free space zeroed, all zeros is a hole), hashes it and
  the whole disk as sent (zeros in free space and holes, in order), and offers the positions in batches. The
  chunks are read and hashed a few ahead by two threads (``scan``) while the whole disk's sha256 is computed in
  order: a CPU-bound capture (a fast disk) goes about twice as fast.
- ``Uploads`` takes the sha256s an offer's answer names: each chunk is read again (its free space zeroed again),
  its sha256 must still be the one offered (else the disk changed under the capture: ``DiskChanged``), then it is
  compressed at ``plan.level`` and PUT (``ServerApi.upload``, retried like every call). At most ``workers + 2``
  chunks are in flight: the reader waits for a free slot, so memory stays a few chunks.

A failed upload stops the capture: the reader stops at its next chunk, the chunks not started are dropped, and
the first failure is raised (the caller reports the run failed).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import zstandard

from provision.agent.capture.reader import ChunkRead, ChunkReader
from provision.agent.client import ServerApi
from provision.agent.errors import AgentError
from provision.wire.capture import CaptureOffer, CapturePlan

log = logging.getLogger(__name__)

Progressed = Callable[[int, int], None]  # (bytes of the disk gone through, disk size)
SCANNERS = 2  # threads reading and hashing chunks ahead of the whole disk's sha256
AHEAD = 3  # chunks read ahead (each its buffer)


class DiskChanged(AgentError):
    """A chunk read again for its upload is not what was offered: the disk is written on during the capture."""

    def __init__(self, chunk: ChunkRead, now: str | None) -> None:
        super().__init__(
            f"chunk {chunk.index} at offset {chunk.offset} changed since it was offered (sha256 {chunk.sha256}, "
            f"now {now or 'all zeros'}): the disk is being written on; capture a disk nothing uses",
            chunk=chunk.index, offset=chunk.offset, offered=chunk.sha256, now=now,
        )  # fmt: skip


@dataclass
class Figures:
    """What a capture sent: positions, holes, bytes read, chunks and compressed bytes uploaded, the disk's sha256."""

    chunks: int = 0
    holes: int = 0
    read_bytes: int = 0
    uploaded_chunks: int = 0
    uploaded_bytes: int = 0
    new_chunks: int = 0  # uploads the store did not hold yet
    reread_bytes: int = 0  # bytes read again for the uploads
    offers: int = 0
    whole: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> str:
        return self.whole.hexdigest()


class Uploads:
    """The uploads of one capture (a pool of ``workers`` threads); ``close`` always."""

    def __init__(
        self, api: ServerApi, run: str, reader: ChunkReader, plan: CapturePlan, workers: int, figures: Figures
    ) -> None:
        self.api, self.run, self.reader, self.plan, self.figures = api, run, reader, plan, figures
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=f"capture-{run[:8]}")
        self.slots = threading.Semaphore(max(1, workers) + 2)  # chunks in flight (read, compressed or sending)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.futures: list[Future[None]] = []
        self._local = threading.local()

    def check(self) -> None:
        """Raise the first upload's failure, if any."""
        with self.lock:
            if self.error is not None:
                raise self.error

    def submit(self, chunk: ChunkRead) -> None:
        """Upload ``chunk`` (waits for a free slot; raises an earlier upload's failure)."""
        while not self.slots.acquire(timeout=0.5):
            self.check()
        self.check()
        future = self.pool.submit(self._upload, chunk)
        future.add_done_callback(self._done)
        self.futures.append(future)
        self._reap()

    def _done(self, future: Future[None]) -> None:
        self.slots.release()
        self._record(future)

    def _record(self, future: Future[None]) -> None:
        """Keep an ended upload's failure (the first one raises); the others stop."""
        error = None if future.cancelled() else future.exception()
        if error is not None:
            with self.lock:
                if self.error is None:
                    self.error = error
            self.stop.set()

    def _reap(self) -> None:
        """Forget the uploads that ended, their failures kept (a future is done before its callback runs)."""
        running = []
        for future in self.futures:
            if future.done():
                self._record(future)
            else:
                running.append(future)
        self.futures = running

    def _upload(self, chunk: ChunkRead) -> None:
        if self.stop.is_set():
            return
        buf = bytearray(self.reader.chunk_size)
        again, plain = self.reader.chunk(chunk.index, buf)
        if again.sha256 != chunk.sha256:
            raise DiskChanged(chunk, again.sha256)
        assert chunk.sha256 is not None  # holes are never asked for (the offer says None)
        compressor = getattr(self._local, "zstd", None)
        if compressor is None:
            compressor = self._local.zstd = zstandard.ZstdCompressor(level=self.plan.level, write_content_size=True)
        frame = compressor.compress(plain)
        del buf, plain
        answer = self.api.upload(self.run, chunk.sha256, frame)
        if answer.sha256 != chunk.sha256:
            raise AgentError(f"the server stored {answer.sha256} for chunk {chunk.index}, sent {chunk.sha256}",
                             chunk=chunk.index, sent=chunk.sha256, stored=answer.sha256)  # fmt: skip
        with self.lock:
            self.figures.uploaded_chunks += 1
            self.figures.uploaded_bytes += len(frame)
            self.figures.new_chunks += int(answer.new)
            self.figures.reread_bytes += again.read

    def finish(self) -> None:
        """Wait for every upload; raise the first failure."""
        for future in list(self.futures):
            future.exception()  # waits
        self._reap()
        self.check()

    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


def send_disk(
    api: ServerApi,
    run: str,
    plan: CapturePlan,
    reader: ChunkReader,
    *,
    workers: int,
    progressed: Progressed = lambda done, total: None,
) -> Figures:
    """Offer every chunk of the disk in order and upload those the server asks for; the figures."""
    figures = Figures()
    uploads = Uploads(api, run, reader, plan, workers, figures)
    batch: list[ChunkRead] = []
    try:
        with contextlib.closing(scan(reader)) as chunks:
            for chunk, plain in chunks:
                uploads.check()
                figures.whole.update(plain)
                figures.chunks += 1
                figures.holes += chunk.sha256 is None
                figures.read_bytes += chunk.read
                batch.append(chunk)
                if len(batch) == plan.offer or chunk.index == reader.count - 1:
                    _offer(api, run, plan, reader.size, batch, uploads)
                    figures.offers += 1
                    batch = []
                progressed(chunk.offset + chunk.length, reader.size)
        uploads.finish()
    finally:
        uploads.close()
    return figures


def scan(reader: ChunkReader, ahead: int = AHEAD) -> Generator[tuple[ChunkRead, memoryview], None, None]:
    """Every chunk in disk order, read and hashed ``ahead`` chunks in advance by ``SCANNERS`` threads (pread and
    sha256 release the GIL), while the caller hashes the whole disk in order. A chunk's bytes are valid until
    the next one is asked for (its buffer is then reused)."""
    buffers = [bytearray(reader.chunk_size) for _ in range(ahead)]
    with ThreadPoolExecutor(max_workers=SCANNERS, thread_name_prefix="capture-scan") as pool:
        pending: deque[Future[tuple[ChunkRead, memoryview]]] = deque()
        try:
            for index in range(reader.count):
                if len(pending) == ahead:
                    yield pending.popleft().result()  # the caller is done with it when it asks for the next
                pending.append(pool.submit(reader.chunk, index, buffers[index % ahead]))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _offer(api: ServerApi, run: str, plan: CapturePlan, size: int, batch: list[ChunkRead], uploads: Uploads) -> None:
    """Offer ``batch``; submit the uploads its answer asks for."""
    first = batch[0].index
    answer = api.offer(run, CaptureOffer(api.token, size, first, [c.sha256 for c in batch]))
    if answer.offered != first + len(batch):
        last = first + len(batch) - 1
        raise AgentError(f"the server recorded {answer.offered} positions after an offer of {first}..{last}",
                         first=first, count=len(batch), offered=answer.offered)  # fmt: skip
    by_sha: dict[str, ChunkRead] = {}
    for chunk in batch:
        if chunk.sha256 is not None:
            by_sha.setdefault(chunk.sha256, chunk)
    unknown = [sha for sha in answer.missing if sha not in by_sha]
    if unknown:
        raise AgentError(f"the server asked for {len(unknown)} chunks this offer does not hold ({unknown[0]} ...)",
                         first=first, unknown=unknown[:5])  # fmt: skip
    for sha in dict.fromkeys(answer.missing):
        uploads.submit(by_sha[sha])
    log.debug("%s: offer %d..%d: %d missing", run, first, first + len(batch) - 1, len(answer.missing))
