"""Write an image version onto a target disk, and prove it: ``write_image``.

Stages (each reported through ``progress`` about every 2 s):

1. **checking**: every data chunk of the target is read and hashed. A chunk whose bytes already hash right
   is skipped: a run cut short resumes where it stopped, and a PC that holds an older version of the
   image gets only the chunks that changed. (Ranges a regular file reports as holes are not read.)
2. **writing**: the chunks that differ are fetched by ``workers`` threads (a bounded queue feeds them, so
   at most about three chunks per worker are in memory), each decoded and checked against its sha256
   *before* it is written with ``pwrite`` at its offset (O_DIRECT on a block device that allows it). A
   chunk repeated in the image is fetched once and written at each of its offsets.
3. **wiping**: the holes, per the wipe policy: ``zero`` (every byte becomes zero: BLKZEROOUT, or
   fallocate ZERO_RANGE / written zeros on a file), ``discard`` (BLKDISCARD, or a punched hole in a file)
   or ``none`` (left as they are).
4. fsync, and **verifying**: every data chunk is read back and hashed, and with ``zero`` every hole is read
   back and must be zeros. On a block device the read-back comes from the medium (O_DIRECT, or buffered
   after the cached pages are dropped); a regular file is read back through the page cache unless
   ``reread_from_media``. When the read-back does not need the cache dropped first (O_DIRECT, or a file read
   through the page cache), each written chunk is read back by its worker right after its write, into a
   second buffer, and compared byte for byte (one memcmp) with the bytes that hashed right: the read-back
   overlaps the other workers' fetching and decoding, and costs no second sha256. The verifying stage then
   reads back only the rest (chunks found already right, holes).

Each worker fetches, decodes, hashes, writes and reads back one chunk at a time: python-zstandard, hashlib
(on large buffers), pread and pwrite release the GIL, so ``workers`` threads use every core.

A ``WriteReport`` is returned only when every data chunk (and, with ``zero``, every hole) read back right;
anything else raises (``provision.agent.errors``). Nothing unchecked is ever written.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import requests
import zstandard

from provision.agent.disk_io import AlignedBuffer, DiskTarget
from provision.agent.errors import IndexInvalid, Mismatch, TargetTooSmall, VerifyFailed
from provision.agent.fetch import Fetcher, HttpSession, RetryPolicy
from provision.agent.index import Chunk, Index, read_index
from provision.agent.pool import run_pool
from provision.agent.progress import Progress, ProgressMeter
from provision.agent.ranges import Range, compact, hole_ranges, is_zero, split, total
from provision.agent.report import Incident, PassTally, WriteReport

log = logging.getLogger("provision.agent")

Wipe = Literal["zero", "discard", "none"]
WIPES: tuple[Wipe, ...] = ("zero", "discard", "none")
WIPE_PIECE = 256 << 20  # one BLKZEROOUT / fallocate call (and one progress step) per piece
MAX_INCIDENTS = 100  # kept in the report; all are counted
IndexSource = str | bytes | Mapping[str, Any] | Index
T = TypeVar("T")
# A chunk source (the seam between where chunks come from and the write path): given the chunks to fetch
# grouped by sha256 (after the checking stage) and the run's Fetcher, it yields each group with a ``Load``: a
# call that puts the group's plain bytes, decoded and checked against its sha256, into a worker's buffer and
# returns (that view, bytes received). ``http_source`` is unicast; ``provision.agent.multicast`` the carousel.
Load = Callable[[zstandard.ZstdDecompressor, memoryview], tuple[memoryview, int]]
ChunkSource = Callable[[dict[str, list[Chunk]], Fetcher], Iterable[tuple[list[Chunk], Load]]]


def http_source(needed: dict[str, list[Chunk]], fetcher: Fetcher) -> Iterable[tuple[list[Chunk], Load]]:
    """Every group fetched by HTTP (``Fetcher.fetch_chunk``: decoded and checked)."""
    for group in needed.values():
        yield group, functools.partial(fetcher.fetch_chunk, group[0])


class RunLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with the run id or MAC, when one is given."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        run = (self.extra or {}).get("run")
        return (f"[{run}] {msg}" if run else msg), kwargs


class _Scratch:
    """Per worker thread: an aligned buffer of one chunk and a zstd decompressor (they are not shareable)."""

    def __init__(self, chunk_size: int) -> None:
        self.buf = AlignedBuffer(chunk_size)
        self.back = AlignedBuffer(chunk_size)  # the read-back of a chunk just written (pages touched on use)
        self.dctx = zstandard.ZstdDecompressor()

    def close(self) -> None:
        self.buf.close()
        self.back.close()


@functools.lru_cache(maxsize=4)
def zero_sha256(length: int) -> str:
    return hashlib.sha256(bytes(length)).hexdigest()


def on_disk_sha256(target: DiskTarget, chunk: Chunk, buf: AlignedBuffer) -> str:
    """The sha256 of what the target holds at ``chunk`` (or ``short read of N bytes``)."""
    if target.is_hole(chunk.offset, chunk.length):
        return zero_sha256(chunk.length)
    with target.read_into(buf, chunk.offset, chunk.length) as view:
        if len(view) < chunk.length:
            return f"short read of {len(view)} bytes"
        if is_zero(view):  # a memcmp instead of a hash: blank disks and sparse files are mostly zeros
            return zero_sha256(chunk.length)
        return hashlib.sha256(view).hexdigest()


class _Run:
    def __init__(
        self, index: Index, target: DiskTarget, fetcher: Fetcher, meter: ProgressMeter, *, wipe: Wipe,
        workers: int, log: RunLog, source: ChunkSource = http_source, read_back_inline: bool = False,
        tally: PassTally | None = None,
    ) -> None:  # fmt: skip
        self.index, self.target, self.fetcher, self.meter = index, target, fetcher, meter
        self.tally = tally
        self.source = source
        self.wipe_policy, self.workers, self.log = wipe, workers, log
        self.lock = threading.Lock()
        self.fetched = self.skipped = self.downloads = self.bytes_fetched = self.bytes_written = 0
        self.verified = self.holes_verified = 0
        self.read_back_inline = read_back_inline  # each chunk read back right after its write (module doc)
        self.read_back = [False] * len(index.chunks)  # chunks already read back (right or not)
        self.mismatches: list[Mismatch] = []

    def _pool(self, items: Iterable[T], work: Callable[[T, _Scratch], None], name: str) -> None:
        run_pool(items, work, workers=self.workers, setup=lambda: _Scratch(self.index.chunk_size),
                 teardown=_Scratch.close, cancel=self.fetcher.cancel, name=f"agent-{name}")  # fmt: skip

    def check(self) -> dict[str, list[Chunk]]:
        """Chunks to fetch, grouped by sha256 (in disk order of their first offset)."""
        data = self.index.data_chunks
        right = [False] * len(self.index.chunks)
        self.meter.start("checking", total((c.offset, c.length) for c in data))

        def work(chunk: Chunk, scratch: _Scratch) -> None:
            right[chunk.index] = on_disk_sha256(self.target, chunk, scratch.buf) == chunk.sha256
            self.meter.add(chunk.length, skipped=int(right[chunk.index]))

        self._pool(data, work, "check")
        self.meter.end()
        needed: dict[str, list[Chunk]] = {}
        for c in data:
            if not right[c.index] and c.sha256 is not None:
                needed.setdefault(c.sha256, []).append(c)
        self.skipped = sum(1 for c in data if right[c.index])
        return needed

    def write(self, needed: dict[str, list[Chunk]]) -> None:
        self.meter.start("writing", sum(c.length for group in needed.values() for c in group))

        def work(item: tuple[list[Chunk], Load], scratch: _Scratch) -> None:
            group, load = item
            plain, size = load(scratch.dctx, scratch.buf.view)  # decoded and checked, in buf
            with plain:
                for chunk in group:
                    self.target.write(plain, chunk.offset, scratch.buf)
                    if self.read_back_inline:
                        self._read_back(chunk, plain, scratch)
                    self.meter.add(chunk.length, fetched=1)
            with self.lock:
                self.downloads += 1
                self.bytes_fetched += size
                self.fetched += len(group)
                self.bytes_written += sum(c.length for c in group)
            if self.tally is not None:
                self.tally.add(1, size, sum(c.length for c in group))

        self._pool(self.source(needed, self.fetcher), work, "write")
        self.meter.end()

    def _read_back(self, chunk: Chunk, plain: memoryview, scratch: _Scratch) -> None:
        """Read ``chunk`` back into the worker's second buffer; it must be ``plain`` (checked), byte for byte."""
        with self.target.read_into(scratch.back, chunk.offset, chunk.length) as view:
            if len(view) < chunk.length:
                actual = f"short read of {len(view)} bytes"
            elif scratch.back.starts_with(plain):
                actual = ""
            else:
                actual = "zeros" if is_zero(view) else hashlib.sha256(view).hexdigest()
        with self.lock:
            self.read_back[chunk.index] = True
            if not actual:
                self.verified += 1
            else:
                self.mismatches.append(Mismatch(chunk.index, chunk.offset, chunk.length, chunk.sha256 or "zeros",
                                                actual))  # fmt: skip

    def wipe(self) -> tuple[str, list[Range]]:
        """(method, merged hole runs) after applying the wipe policy to every hole."""
        ranges = hole_ranges(self.index)
        if self.wipe_policy == "none" or not ranges:
            return "none", ranges
        self.meter.start("wiping", total(ranges))
        methods: list[str] = []
        for offset, length in split(ranges, WIPE_PIECE):
            if self.wipe_policy == "zero":
                method = self.target.zero(offset, length)
            else:
                method = self.target.discard(offset, length)
            if method not in methods:
                methods.append(method)
            self.meter.add(length)
        self.meter.end()
        self.log.info("holes %s by %s: %s", self.wipe_policy, "+".join(methods), compact(ranges)[:500])
        return "+".join(methods), ranges

    def verify(self) -> None:
        """Read back every data chunk (and with ``zero`` every hole) not read back yet; raise VerifyFailed on
        any difference, those found by the writing workers' read-back included."""
        check_holes = self.wipe_policy == "zero"
        items = [c for c in self.index.chunks if c.sha256 is not None or check_holes]
        checked = len(items)
        items = [c for c in items if not self.read_back[c.index]]
        self.meter.start("verifying", sum(c.length for c in items))
        mismatches = self.mismatches

        def work(chunk: Chunk, scratch: _Scratch) -> None:
            actual = on_disk_sha256(self.target, chunk, scratch.buf)
            expected = chunk.sha256 or zero_sha256(chunk.length)
            with self.lock:
                if actual != expected:
                    mismatches.append(Mismatch(chunk.index, chunk.offset, chunk.length, chunk.sha256 or "zeros",
                                               "zeros" if actual == zero_sha256(chunk.length) else actual))  # fmt: skip
                elif chunk.sha256 is None:
                    self.holes_verified += 1
                else:
                    self.verified += 1
            self.meter.add(chunk.length)

        self._pool(items, work, "verify")
        self.meter.end()
        if mismatches:
            mismatches.sort(key=lambda m: m.chunk)
            raise VerifyFailed(str(self.target.path), mismatches, checked=checked)


def _load_index(source: IndexSource, fetcher: Fetcher, expected_digest: str | None) -> Index:
    if isinstance(source, Index):
        index = source
    elif isinstance(source, str):
        url = fetcher.url(source)
        index = read_index(fetcher.get(url), source=url)
    else:
        index = read_index(source)
    if expected_digest is not None and index.digest != expected_digest.lower():
        raise IndexInvalid(f"index of {index.name} has digest {index.digest}, the plan says {expected_digest}",
                           digest=index.digest, expected=expected_digest)  # fmt: skip
    return index


def new_session(workers: int) -> requests.Session:
    """A session whose connection pool keeps one connection per worker alive."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=max(workers, 1))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def write_image(
    server: str,
    index: IndexSource,
    target: Path | str | DiskTarget,
    *,
    wipe: Wipe = "zero",
    workers: int = 4,
    progress: Callable[[Progress], None] | None = None,
    session: HttpSession | None = None,
    expected_digest: str | None = None,
    retry: RetryPolicy | None = None,
    progress_interval: float = 2.0,
    direct: bool | None = None,
    reread_from_media: bool | None = None,
    log_id: str | None = None,
    source: ChunkSource = http_source,
    tally: PassTally | None = None,
) -> WriteReport:
    """Write the image version described by ``index`` from ``server`` onto ``target`` and verify it.

    - ``index``: the index URL (absolute, or a path on ``server`` like ``/images/NAME/VERSION/index.json``),
      its bytes, its parsed dict or an ``Index``; ``expected_digest``: refuse any other version.
    - ``target``: a block device or regular file path (at least the disk size), or an open ``DiskTarget``.
    - ``direct``: O_DIRECT (None: on block devices that allow it). ``reread_from_media``: drop the cached
      pages after fsync, so the read-back comes from the medium (None: on block devices; O_DIRECT reads come
      from the medium anyway; a regular file is read back through the page cache).
    - ``progress``: called about every ``progress_interval`` s; ``log_id``: run id or MAC for the log lines.
    - ``source``: where the chunks to write come from (``http_source``; the multicast receiver's source).
    - ``tally``: counts each chunk fetched and written as it goes, so a pass that raises still says what it got.

    Raises a ``WriteError`` (fatal), or ``FetchFailed``/``ChunkCorrupt`` (retryable: run again, the chunks
    already right are skipped).
    """
    if wipe not in WIPES:
        raise ValueError(f"wipe must be one of {', '.join(WIPES)}, not {wipe!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    started = time.monotonic()
    runlog = RunLog(log, {"run": log_id})
    own_session = None
    if session is None:
        own_session = session = new_session(workers)
    incidents: list[Incident] = []
    incident_count = 0
    incident_lock = threading.Lock()

    def on_incident(incident: Incident) -> None:
        nonlocal incident_count
        with incident_lock:
            incident_count += 1
            if len(incidents) < MAX_INCIDENTS:
                incidents.append(incident)

    fetcher = Fetcher(server, session, retry or RetryPolicy(), on_incident=on_incident, log=runlog)
    try:
        ix = _load_index(index, fetcher, expected_digest)
        disk = target if isinstance(target, DiskTarget) else DiskTarget.open(target, direct=direct)
        try:
            if disk.size < ix.disk_size:
                raise TargetTooSmall(str(disk.path), disk.size, ix.disk_size)
            runlog.info("writing %s %s (%d bytes, %d chunks of %d, %d holes) to %s; wipe %s, %d workers",
                        ix.name, ix.digest[:12], ix.disk_size, len(ix.chunks), ix.chunk_size, ix.holes,
                        disk.describe(), wipe, workers)  # fmt: skip
            meter = ProgressMeter(progress, interval=progress_interval, log=runlog)
            from_media = disk.kind == "block" if reread_from_media is None else reread_from_media
            run = _Run(ix, disk, fetcher, meter, wipe=wipe, workers=workers, log=runlog, source=source,
                       read_back_inline=disk.direct or not from_media, tally=tally)  # fmt: skip
            needed = run.check()
            runlog.info("%d chunks already right, %d to fetch", run.skipped, sum(len(g) for g in needed.values()))
            run.write(needed)
            method, ranges = run.wipe()
            synced = time.monotonic()
            disk.fsync()
            if from_media:
                disk.drop_cache(0, ix.disk_size)
            readback = "O_DIRECT" if disk.direct else "medium (cache dropped)" if from_media else "page cache"
            meter.stage_seconds["fsync"] = time.monotonic() - synced
            run.verify()
        finally:
            if not isinstance(target, DiskTarget):
                disk.close()
    finally:
        if own_session is not None:
            own_session.close()
    seconds = time.monotonic() - started
    report = WriteReport(
        image=ix.name, digest=ix.digest, target=str(disk.path), target_kind=disk.kind, io_mode=disk.io_mode,
        readback=readback,
        disk_size=ix.disk_size, chunk_size=ix.chunk_size, chunks=len(ix.chunks), holes=ix.holes,
        fetched=run.fetched, skipped=run.skipped, downloads=run.downloads, bytes_fetched=run.bytes_fetched,
        bytes_written=run.bytes_written, wipe=wipe, wipe_method=method, wipe_ranges=tuple(ranges),
        wiped_bytes=total(ranges) if wipe != "none" else 0, verified=run.verified,
        holes_verified=run.holes_verified, failures=tuple(incidents), failure_count=incident_count,
        seconds=seconds, stage_seconds=tuple(meter.stage_seconds.items()),
    )  # fmt: skip
    if not report.ok:  # cannot happen after verify(); a guard against a future bug recording a bad disk
        raise VerifyFailed(report.target, [], checked=report.verified + report.holes_verified)
    runlog.info("verified %s on %s: %d chunks (%d fetched, %d already right), %d holes %s, %.1f s, %.0f MB/s",
                ix.digest[:12], report.target, report.verified, report.fetched, report.skipped, report.holes,
                method, seconds, report.mean_rate / 1e6)  # fmt: skip
    return report
