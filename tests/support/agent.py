"""Fakes for the agent's writer and fetcher (unit and functional tests).

- ``KiB``, ``MiB``, ``CHUNK`` (64 KiB), ``SERVER`` (the fake server's URL), ``INDEX_PATH``, ``FAST`` (a quick
  RetryPolicy).
- ``sha(data)``: the sha256 hex digest of bytes; ``frame(plain)``: one zstd frame of them.
- ``FakeImage`` / ``build_image(raw)``: an index dict (format 1, as the store writes it) and the zstd frames of a
  raw disk, in memory.
- ``random_disk(size, data)``: a raw disk of random chunks (listed, or a fraction) and zeros.
- ``FakeSession``: serves a FakeImage like provision's HTTP routes, with faults scripted per chunk, and counts
  every GET. It is a plain object with ``get()``, as the agent's ``HttpSession`` protocol asks.
- ``RecordingTarget``: a real ``DiskTarget`` that records the sha256 of every write (and can lie).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
import zstandard

from provision.agent import DiskTarget, RetryPolicy
from provision.agent.disk_io import AlignedBuffer, Kind

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
SERVER = "http://agent.test:8080"
INDEX_PATH = "/images/educ/current/index.json"
FAST = RetryPolicy(deadline=0.5, initial_delay=0.001, max_delay=0.02, connect_timeout=2, read_timeout=5)


def sha(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def frame(plain: bytes, *, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_content_size=content_size).compress(plain)


@dataclass
class FakeImage:
    raw: bytes
    chunk_size: int
    index: dict[str, object]
    frames: dict[str, bytes]
    plain: dict[str, bytes]

    @property
    def chunks(self) -> list[dict[str, object]]:
        return self.index["chunks"]  # type: ignore[return-value]

    def data_indexes(self) -> list[int]:
        return [i for i, c in enumerate(self.chunks) if c["sha256"] is not None]


def build_image(raw: bytes, chunk_size: int = CHUNK, *, name: str = "educ") -> FakeImage:
    chunks: list[dict[str, object]] = []
    frames: dict[str, bytes] = {}
    plain: dict[str, bytes] = {}
    for offset in range(0, len(raw), chunk_size):
        piece = raw[offset : offset + chunk_size]
        if piece.count(0) == len(piece):
            chunks.append({"sha256": None, "length": len(piece)})
            continue
        digest = sha(piece)
        frames[digest], plain[digest] = frame(piece), piece
        chunks.append({"sha256": digest, "length": len(piece)})
    index: dict[str, object] = {
        "format_version": 1, "name": name, "created": "2026-11-27T00:00:00Z", "disk_size": len(raw),
        "sector_size": 512, "chunk_size": chunk_size, "layout": {"label": "gpt", "partitions": []},
        "chunks": chunks, "provenance": {},
    }  # fmt: skip
    return FakeImage(raw, chunk_size, index, frames, plain)


def random_disk(size: int, data: list[int] | float, *, chunk_size: int = CHUNK, seed: int = 0) -> bytes:
    """A raw disk of ``size`` bytes: random bytes in the chunks listed (or in that fraction of chunks, chosen
    at random), zeros elsewhere."""
    rng = random.Random(seed)
    count = -(-size // chunk_size)
    chosen = data if isinstance(data, list) else [i for i in range(count) if rng.random() < data]
    raw = bytearray(size)
    for i in chosen:
        start = i * chunk_size
        end = min(size, start + chunk_size)
        raw[start:end] = rng.randbytes(end - start)
    return bytes(raw)


class FakeResponse:
    def __init__(self, status: int, body: bytes, *, declared: int | None = None, cut: bool = False) -> None:
        self.status_code = status
        self.headers = {"Content-Length": str(len(body) if declared is None else declared)}
        self._body = body
        self._cut = cut
        self.closed = False

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        if self._cut:
            yield self._body[: len(self._body) // 2]
            raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
        for start in range(0, len(self._body), chunk_size):
            yield self._body[start : start + chunk_size]

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeSession:
    """Serves ``image``. ``faults[sha]`` lists what the next GETs of that chunk get, one per GET:

    ``corrupt`` (a valid frame of other bytes), ``garbage`` (the frame with a byte flipped), ``bomb`` (a frame
    claiming 1 GiB), ``500``, ``404``, ``refused`` (connection refused), ``truncated`` (body shorter than its
    Content-Length), ``cut`` (the connection drops mid-body). ``down`` refuses every GET while true.
    """

    image: FakeImage
    faults: dict[str, deque[str]] = field(default_factory=dict)
    down: bool = False
    down_after: int | None = None  # chunk GETs served before the server goes down for good
    on_get: Callable[[str], None] | None = None
    gets: list[str] = field(default_factory=list)
    chunk_gets: Counter[str] = field(default_factory=Counter)

    def fault(self, digest: str, *kinds: str) -> None:
        self.faults.setdefault(digest, deque()).extend(kinds)

    def get(self, url: str, *, timeout: tuple[float, float], stream: bool) -> FakeResponse:
        assert url.startswith(SERVER + "/"), url
        assert stream and timeout[0] > 0 and timeout[1] > 0
        self.gets.append(url)
        if self.on_get is not None:
            self.on_get(url)
        path = url.removeprefix(SERVER)
        if path == INDEX_PATH:
            return FakeResponse(200, _canonical(self.image.index))
        if not path.startswith("/chunks/"):
            return FakeResponse(404, b'{"error": "not found"}')
        digest = path.removeprefix("/chunks/")
        if self.down or (self.down_after is not None and sum(self.chunk_gets.values()) >= self.down_after):
            raise requests.ConnectionError(f"HTTPConnectionPool: Max retries exceeded with url: {path} (refused)")
        self.chunk_gets[digest] += 1
        if digest not in self.image.frames:
            return FakeResponse(404, b'{"error": "no chunk"}')
        body = self.image.frames[digest]
        queue = self.faults.get(digest)
        kind = queue.popleft() if queue else "ok"
        if kind == "corrupt":
            bad = bytearray(self.image.plain[digest])
            bad[len(bad) // 2] ^= 0xFF
            return FakeResponse(200, frame(bytes(bad)))
        if kind == "garbage":
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0x55
            return FakeResponse(200, bytes(flipped))
        if kind == "bomb":
            return FakeResponse(200, zstandard.ZstdCompressor().compress(bytes(1 << 30)))
        if kind in ("500", "404"):
            return FakeResponse(int(kind), b'{"error": "fault"}')
        if kind == "refused":
            raise requests.ConnectionError("[Errno 111] Connection refused")
        if kind == "truncated":
            return FakeResponse(200, body[: len(body) // 2], declared=len(body))
        if kind == "cut":
            return FakeResponse(200, body, cut=True)
        assert kind == "ok", kind
        return FakeResponse(200, body)


def _canonical(value: object) -> bytes:
    from provision.agent.index import canonical_json

    return canonical_json(value)


class RecordingTarget(DiskTarget):
    """A real target that records ``(offset, sha256)`` of every write; ``lie_at`` offsets get a byte flipped
    on the way to the disk (a disk that does not store what it is given)."""

    def __init__(self, path: Path, kind: Kind, size: int, block_size: int, fd: int, direct_fd: int | None) -> None:
        super().__init__(path, kind, size, block_size, fd, direct_fd)
        self.writes: list[tuple[int, str]] = []
        self.lie_at: set[int] = set()

    def write(self, data: bytes | memoryview, offset: int, buf: AlignedBuffer) -> None:
        self.writes.append((offset, sha(data)))
        if offset in self.lie_at:
            bad = bytearray(data)
            bad[0] ^= 1
            data = bytes(bad)
        super().write(data, offset, buf)
