"""What a writer worker does with a chunk that came (or partly came) by multicast: a ``Load`` for the writer's
chunk source seam (``provision.agent.writer.Load``), and the run's byte counts (``Tally``).

- ``ready_load``: the frame received whole is decoded into the worker's buffer and checked against the chunk's
  length and sha256; a frame that fails is dropped whole and the chunk fetched by HTTP (``Fetcher.fetch_chunk``).
- ``repair_load``: the frame's missing byte ranges are fetched with HTTP Range from ``GET /chunks/<sha256>``,
  up to ``MAX_RANGES`` in one request (``provision.wire.byteranges``: one range a 206 of exactly it, several a
  ``multipart/byteranges`` of exactly them; a server that ignores ranges sends the whole frame, which is used
  as it is; anything else gives the repair up), the frame put together, decoded and checked; anything wrong:
  the chunk fetched whole by HTTP. (Scattered loss, 5 % of a frame's datagrams, is ~45 ranges: one request of
  about 5 % of the frame, where one range from the first gap to the last was the whole frame.)
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
from provision.wire.byteranges import (
    MAX_RANGES,
    BadRanges,
    boundary_of,
    content_range,
    parse_content_range,
    parse_multipart,
    range_header,
)

log = logging.getLogger(__name__)

Load = Callable[[zstandard.ZstdDecompressor, memoryview], tuple[memoryview, int]]


PART_SLACK = 256  # bytes a multipart answer may add per range (delimiter, Content-Type, Content-Range)


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
    """The whole frame of ``event``: its pieces and the missing ranges by HTTP; (frame, bytes fetched). The
    ranges go ``MAX_RANGES`` to a request (several in one answer: ``multipart/byteranges``)."""
    session = cast(RangeSession, fetcher.session)  # requests.Session, or a test's fake that serves ranges
    url = fetcher.chunk_url(event.sha256)
    timeout = (fetcher.policy.connect_timeout, fetcher.policy.read_timeout)
    frame = bytearray(event.frame_length)
    for offset, payload in event.pieces.items():
        frame[offset : offset + len(payload)] = payload
    fetched = 0
    missing = event.missing
    for at in range(0, len(missing), MAX_RANGES):
        batch = missing[at : at + MAX_RANGES]
        response = session.get(url, headers={"Range": range_header(batch)}, timeout=timeout, stream=True)
        try:
            parts, size = _parts(response, batch, event.frame_length)
        finally:
            response.close()
        for first, last in batch:
            frame[first : last + 1] = _covering(parts, first, last)
        fetched += size
    return bytes(frame), fetched


def _parts(response: HttpResponse, batch: list[tuple[int, int]], length: int) -> tuple[dict[int, bytes], int]:
    """The answer's bytes by offset in the frame (one range, several as multipart, or the whole frame), and the
    bytes of its body. RepairFailed when it is none of those."""
    want = sum(last - first + 1 for first, last in batch)
    expected = ",".join(content_range(first, last, length) for first, last in batch)
    headers = response.headers
    boundary = boundary_of(headers.get("Content-Type")) if response.status_code == 206 else None
    limit = length + 1 if response.status_code == 200 else want + PART_SLACK * len(batch) + 2
    body = _body(response, limit)
    if response.status_code == 200 and len(body) == length:  # a server that ignores ranges: the whole frame
        return {0: body}, len(body)
    if boundary is not None:
        try:
            return parse_multipart(body, boundary, length), len(body)
        except BadRanges as exc:
            raise RepairFailed(f"{exc} (asked {expected})") from None
    found = parse_content_range(headers.get("Content-Range")) if response.status_code == 206 else None
    if found is None or found[2] != length or len(body) != found[1] - found[0] + 1:
        raise RepairFailed(f"HTTP {response.status_code}, Content-Range {headers.get('Content-Range')}, {len(body)} "
                           f"bytes for {expected}")  # fmt: skip
    return {found[0]: body}, len(body)


def _covering(parts: dict[int, bytes], first: int, last: int) -> bytes:
    """Bytes ``first``..``last`` of the frame, from the part that holds them all (RepairFailed if none does)."""
    for start, data in parts.items():
        if start <= first and last < start + len(data):
            return data[first - start : last - start + 1]
    raise RepairFailed(
        f"the answer lacks bytes {first}-{last}: parts {sorted((s, s + len(d) - 1) for s, d in parts.items())[:8]}"
    )


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
