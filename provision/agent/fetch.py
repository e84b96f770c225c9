"""Fetching over HTTP: the index and the chunks, with retries, and each chunk checked before it is used.

- A **transient** failure (connection refused or reset, a timeout, a body shorter than its Content-Length,
  HTTP 5xx, 408 or 429) is retried after an exponential backoff with jitter, until ``RetryPolicy.deadline``
  seconds after the first failure of that request: then ``FetchFailed`` (retryable).
- Any other **4xx** is final: ``HttpRefused`` with the URL (fatal).
- A chunk body is decoded (one zstd frame), and its plain bytes must have the chunk's length and sha256.
  A chunk that does not is fetched again, up to ``RetryPolicy.chunk_attempts`` times in all, then
  ``ChunkCorrupt`` (retryable) names the chunk. Bad bytes are never handed to the caller, so never written.

The session only needs ``get(url, timeout=..., stream=...)`` returning a response with ``status_code``,
``headers``, ``iter_content(n)`` and ``close()``: ``requests.Session`` does, and so do the tests' fakes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import requests
import zstandard

from provision.agent.disk_io import copy_into
from provision.agent.errors import ChunkCorrupt, FetchFailed, HttpRefused
from provision.agent.index import Chunk
from provision.agent.report import Incident
from provision.wire import paths

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20
REASON_BYTES = 2048  # of an error answer's body read for the server's reason
_TRANSIENT_STATUS = {408, 429}
_TRANSIENT_EXC = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, OSError)


class HttpResponse(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def iter_content(self, chunk_size: int) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class HttpSession(Protocol):
    def get(self, url: str, *, timeout: tuple[float, float], stream: bool) -> HttpResponse: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the agent tries. A workshop server restarting takes seconds; a cut cable may take minutes."""

    deadline: float = 300.0  # seconds of failures of one request before giving up
    initial_delay: float = 0.25  # first backoff; doubles on each retry ...
    max_delay: float = 10.0  # ... up to this; each wait is drawn from [delay/2, delay] (jitter)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_attempts: int = 3  # K: fetches of a chunk that arrives wrong before the run fails

    def delay(self, retry: int, rng: random.Random) -> float:
        cap = min(self.max_delay, self.initial_delay * 2 ** min(retry, 30))
        return rng.uniform(cap / 2, cap)


class Cancelled(Exception):
    """The run is stopping (another worker failed): give up quietly."""


class _Transient(Exception):
    pass


class Fetcher:
    """Thread-safe: one per run, shared by the workers (each brings its own zstd decompressor)."""

    def __init__(
        self,
        server: str,
        session: HttpSession,
        policy: RetryPolicy,
        *,
        cancel: threading.Event | None = None,
        on_incident: Callable[[Incident], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self.server = server.rstrip("/")
        self.session = session
        self.policy = policy
        self.cancel = cancel or threading.Event()
        self._on_incident = on_incident or (lambda incident: None)
        self._clock = clock
        self._rng = rng or random.Random()  # nosec B311  # noqa: S311 (backoff jitter, not cryptography)
        self._rng_lock = threading.Lock()
        self._log = log

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.server}/{path_or_url.lstrip('/')}"

    def chunk_url(self, sha256: str) -> str:
        return f"{self.server}{paths.chunk(sha256)}"

    def get(self, url: str, *, chunk: Chunk | None = None) -> bytes:
        """The body of a 200 answer; transient failures retried until the deadline."""
        first_failure: float | None = None
        attempt = 0
        while True:
            attempt += 1
            if self.cancel.is_set():
                raise Cancelled
            try:
                return self._get_once(url, chunk)
            except _Transient as exc:
                now = self._clock()
                first_failure = now if first_failure is None else first_failure
                waited = now - first_failure
                detail = str(exc)
                if waited >= self.policy.deadline:
                    raise FetchFailed(url, attempt, waited, detail, chunk=chunk.index if chunk else None) from None
                with self._rng_lock:
                    delay = min(self.policy.delay(attempt - 1, self._rng), self.policy.deadline - waited)
                self._incident(Incident("transient", url, detail, attempt, chunk.index if chunk else None))
                if attempt == 1 or attempt % 10 == 0:
                    self._log.warning("GET %s: %s (attempt %d, retrying in %.2f s)", url, detail, attempt, delay)
                if self.cancel.wait(max(delay, 0.0)):
                    raise Cancelled from None

    def _get_once(self, url: str, chunk: Chunk | None) -> bytes:
        try:
            response = self.session.get(
                url, timeout=(self.policy.connect_timeout, self.policy.read_timeout), stream=True
            )
        except _TRANSIENT_EXC as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        try:
            status = response.status_code
            if status >= 500 or status in _TRANSIENT_STATUS:
                raise _Transient(f"HTTP {status}{_stated_reason(response)}")
            if status != 200:
                raise HttpRefused(url, status, chunk=chunk.index if chunk else None,
                                  offset=chunk.offset if chunk else None)  # fmt: skip
            try:
                body = b"".join(response.iter_content(READ_SIZE))
            except _TRANSIENT_EXC as exc:
                raise _Transient(f"body cut: {type(exc).__name__}: {exc}") from None
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) != len(body):
                raise _Transient(f"body of {len(body)} bytes, Content-Length {declared}")
            return body
        finally:
            response.close()

    def fetch_chunk(
        self, chunk: Chunk, dctx: zstandard.ZstdDecompressor, into: memoryview | None = None
    ) -> tuple[memoryview, int]:
        """(plain bytes, compressed size) of a chunk, checked: right length and sha256.

        The plain bytes are decoded straight into ``into`` (a worker's reused buffer: no fresh memory per
        chunk) and the returned view is ``into[:length]``."""
        if chunk.sha256 is None:
            raise ValueError(f"chunk {chunk.index} is a hole: nothing to fetch")
        into = memoryview(bytearray(chunk.length)) if into is None else into
        if len(into) < chunk.length:
            raise ValueError(f"a buffer of {len(into)} bytes cannot hold chunk {chunk.index} ({chunk.length})")
        url = self.chunk_url(chunk.sha256)
        actual = ""
        for attempt in range(1, self.policy.chunk_attempts + 1):
            body = self.get(url, chunk=chunk)
            try:
                got = _decode_into(dctx, body, into, chunk.length)
            except zstandard.ZstdError as exc:
                actual = f"undecodable ({exc})"
            else:
                if got != chunk.length:
                    actual = f"{got} bytes instead of {chunk.length}"
                else:
                    actual = hashlib.sha256(into[: chunk.length]).hexdigest()
                    if actual == chunk.sha256:
                        return into[: chunk.length], len(body)
            self._incident(Incident("corrupt", url, f"expected sha256 {chunk.sha256}, got {actual}", attempt,
                                    chunk.index))  # fmt: skip
            self._log.warning("chunk %d at %d from %s: %s, attempt %d of %d: fetching again", chunk.index,
                              chunk.offset, url, actual, attempt, self.policy.chunk_attempts)  # fmt: skip
        raise ChunkCorrupt(chunk.index, chunk.offset, url, chunk.sha256, actual, self.policy.chunk_attempts)

    def _incident(self, incident: Incident) -> None:
        self._on_incident(incident)


def _stated_reason(response: HttpResponse) -> str:
    """``": <the server's reason>"`` from a JSON error body (``{"error": ...}``, the first 2 KiB read), so a
    failure says why the server could not answer (e.g. "image store problem: ..."); empty otherwise."""
    try:
        head = b""
        for piece in response.iter_content(REASON_BYTES):
            head += piece
            if len(head) >= REASON_BYTES:
                break
        reason = json.loads(head[:REASON_BYTES]).get("error")
    except (ValueError, AttributeError, RecursionError, *_TRANSIENT_EXC):
        return ""
    if not isinstance(reason, str) or not reason:
        return ""
    return ": " + "".join(c if c.isprintable() else "?" for c in reason)[:300]


def decode_checked(dctx: zstandard.ZstdDecompressor, frame: bytes, into: memoryview, chunk: Chunk) -> str:
    """Decode ``frame`` into ``into`` and check it is ``chunk``: "" when its plain bytes have the chunk's length
    and sha256, else what is wrong (the bytes in ``into`` are then not to be used). For frames that did not
    come by ``fetch_chunk`` (the multicast carousel's)."""
    try:
        got = _decode_into(dctx, frame, into, chunk.length)
    except zstandard.ZstdError as exc:
        return f"undecodable ({exc})"
    if got != chunk.length:
        return f"{got} bytes instead of {chunk.length}"
    actual = hashlib.sha256(into[: chunk.length]).hexdigest()
    return "" if actual == chunk.sha256 else f"sha256 {actual}, expected {chunk.sha256}"


def _decode_into(dctx: zstandard.ZstdDecompressor, frame: bytes, into: memoryview, length: int) -> int:
    """Decode one zstd frame into ``into``; the plain size, or ``length + 1`` if the frame holds more.

    A frame header that claims more than ``length`` is refused before decoding anything. ``decompress``
    releases the GIL while it decodes (``stream_reader().readinto`` does not: the workers would decode one at
    a time); its output is then copied into ``into`` (one memcpy, without the GIL too)."""
    declared = zstandard.frame_content_size(frame)
    if declared > length:
        raise zstandard.ZstdError(f"frame declares {declared} bytes, the chunk has {length}")
    plain = dctx.decompress(frame, max_output_size=length + 1)  # a frame without a size: at most one byte more
    got = len(plain)
    if got > length:
        return length + 1
    copy_into(into, plain)
    return got
