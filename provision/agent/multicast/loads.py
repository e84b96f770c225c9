"""What a writer worker does with a chunk that came (or partly came) by multicast: a ``Load`` for the writer's
chunk source seam (``provision.agent.writer.Load``), and the run's byte counts (``Tally``).

- ``ready_load``: the frame received whole is decoded into the worker's buffer and checked against the chunk's
  length and sha256; a frame that fails is dropped whole and the chunk fetched by HTTP (``Fetcher.fetch_chunk``).
- ``repair_load``: the frame's missing byte ranges are fetched with HTTP Range from ``GET /chunks/<sha256>``
  (each a 206 with the very range asked, else the repair is given up; more than ``MAX_RANGES`` gaps: one range
  from the first to the last), the frame put together, decoded and checked; anything wrong: the chunk fetched
  whole by HTTP.
- ``http_load``: the chunk fetched whole by HTTP, as unicast does.

Nothing reaches the writer's buffer as usable unless it decoded to the chunk's sha256.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

import zstandard

from provision.agent.fetch import Fetcher, HttpResponse, decode_checked
from provision.agent.index import Chunk
from provision.agent.multicast.reassembly import Ready, Repair

log = logging.getLogger(__name__)

Load = Callable[[zstandard.ZstdDecompressor, memoryview], tuple[memoryview, int]]


MAX_RANGES = 16  # a frame missing more pieces apart is repaired by one range from the first to the last


class RangeSession(Protocol):
    def get(
        self, url: str, *, headers: Mapping[str, str], timeout: tuple[float, float], stream: bool
    ) -> HttpResponse: ...


@dataclass
class Tally:
    """Bytes and chunks by way of arrival (thread-safe through ``lock``)."""

    bytes_multicast: int = 0
    bytes_http: int = 0
    repair_bytes: int = 0
    chunks_multicast: int = 0
    chunks_http: int = 0
    bad_frames: int = 0  # received whole or repaired, and wrong: fetched again by HTTP

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class RepairFailed(Exception):
    """A range answer that is not exactly the range asked."""


def http_load(chunk: Chunk, fetcher: Fetcher, tally: Tally) -> Load:
    def load(dctx: zstandard.ZstdDecompressor, into: memoryview) -> tuple[memoryview, int]:
        plain, size = fetcher.fetch_chunk(chunk, dctx, into)
        tally.add(bytes_http=size, chunks_http=1)
        return plain, size

    return load


def ready_load(event: Ready, chunk: Chunk, fetcher: Fetcher, tally: Tally, release: Callable[[int], None]) -> Load:
    def load(dctx: zstandard.ZstdDecompressor, into: memoryview) -> tuple[memoryview, int]:
        try:
            problem = decode_checked(dctx, event.frame, into, chunk)
        finally:
            release(event.held)
        if not problem:
            tally.add(bytes_multicast=len(event.frame), chunks_multicast=1)
            return into[: chunk.length], len(event.frame)
        log.warning("chunk %d (%s) received by multicast is wrong: %s; fetching it by HTTP", chunk.index,
                    chunk.sha256, problem)  # fmt: skip
        tally.add(bad_frames=1)
        return http_load(chunk, fetcher, tally)(dctx, into)

    return load


def fetch_ranges(fetcher: Fetcher, event: Repair) -> tuple[bytes, int]:
    """The whole frame of ``event``: its pieces and the missing ranges by HTTP; (frame, bytes fetched)."""
    session = cast(RangeSession, fetcher.session)  # requests.Session, or a test's fake that serves ranges
    url = fetcher.chunk_url(event.sha256)
    timeout = (fetcher.policy.connect_timeout, fetcher.policy.read_timeout)
    frame = bytearray(event.frame_length)
    for offset, payload in event.pieces.items():
        frame[offset : offset + len(payload)] = payload
    fetched = 0
    missing = event.missing
    if len(missing) > MAX_RANGES:  # scattered loss (or forged pieces): one range over them all, not a GET each
        missing = [(missing[0][0], missing[-1][1])]
    for first, last in missing:
        response = session.get(url, headers={"Range": f"bytes={first}-{last}"}, timeout=timeout, stream=True)
        try:
            body = _body(response, last - first + 2)
            expected = f"bytes {first}-{last}/{event.frame_length}"
            got = response.headers.get("Content-Range")
            if response.status_code != 206 or got != expected or len(body) != last - first + 1:
                raise RepairFailed(f"HTTP {response.status_code}, Content-Range {got}, {len(body)} bytes "
                                   f"for {expected}")  # fmt: skip
        finally:
            response.close()
        frame[first : last + 1] = body
        fetched += len(body)
    return bytes(frame), fetched


def _body(response: HttpResponse, limit: int) -> bytes:
    """The body, read up to ``limit`` bytes (a longer one is wrong anyway: it is not read to its end)."""
    body = bytearray()
    for part in response.iter_content(1 << 20):
        body += part
        if len(body) >= limit:
            break
    return bytes(body)


def repair_load(event: Repair, chunk: Chunk, fetcher: Fetcher, tally: Tally, release: Callable[[int], None]) -> Load:
    def load(dctx: zstandard.ZstdDecompressor, into: memoryview) -> tuple[memoryview, int]:
        try:
            frame, fetched = fetch_ranges(fetcher, event)
            problem = decode_checked(dctx, frame, into, chunk)
        except Exception as exc:
            problem, fetched = f"range repair failed: {type(exc).__name__}: {exc}", 0
        finally:
            release(event.held)
        if not problem:
            tally.add(bytes_multicast=event.held, bytes_http=fetched, repair_bytes=fetched, chunks_multicast=1)
            return into[: chunk.length], event.frame_length
        log.warning("chunk %d (%s) repaired by range is wrong: %s; fetching it whole by HTTP", chunk.index,
                    chunk.sha256, problem)  # fmt: skip
        tally.add(bad_frames=1, bytes_http=fetched, repair_bytes=fetched)
        return http_load(chunk, fetcher, tally)(dctx, into)

    return load
