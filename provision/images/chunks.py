"""The chunk store: each non-zero chunk of a disk stored once, as one zstd frame named by its plain sha256.

``ROOT/chunks/ab/abcdef....zst``. A frame is independent (decodable alone, so an agent can fetch chunks in
any order) and carries its content size (so a decoder knows the output size before decoding, and a bad
frame cannot balloon). All-zero chunks (holes) are never stored: a hole is sent as one cached zero frame.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from provision.images.errors import CorruptImage, ImageError, MissingChunk
from provision.images.files import TMP_PREFIX, atomic_write
from provision.wire.index import BLOCK, MAX_CHUNK_SIZE, is_sha256

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 4 << 20
DEFAULT_LEVEL = 3
# chunk sizes are multiples of BLOCK (the bmap block size, and every disk's page size), up to MAX_CHUNK_SIZE

_local = threading.local()


def check_chunk_size(chunk_size: int) -> None:
    if not (0 < chunk_size <= MAX_CHUNK_SIZE and chunk_size % BLOCK == 0):
        raise ValueError(f"chunk size {chunk_size} must be a multiple of {BLOCK} between {BLOCK} and {MAX_CHUNK_SIZE}")


@functools.lru_cache(maxsize=8)
def zeros(length: int) -> bytes:
    return bytes(length)


def is_zero(data: bytes) -> bool:
    """True for an all-zero buffer (a memcmp against a cached zero buffer of the same length)."""
    return data == zeros(len(data))


def compress(data: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """One independent zstd frame with the content size in its header. Thread-safe (one compressor per
    thread and level: zstandard compressors must not be shared between threads)."""
    compressors: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    cctx = compressors.get(level)
    if cctx is None:
        cctx = compressors[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cctx.compress(data)


def decompress(frame: bytes, length: int, *, what: str = "frame") -> bytes:
    """Decode one frame that must hold exactly ``length`` plain bytes. Raises CorruptImage otherwise."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise CorruptImage(f"{what}: not a zstd frame ({exc})") from None
    if size != length:
        raise CorruptImage(f"{what}: frame holds {size} bytes, expected {length}")
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    try:
        plain = dctx.decompress(frame, max_output_size=length)
    except zstandard.ZstdError as exc:
        raise CorruptImage(f"{what}: undecodable zstd frame ({exc})") from None
    if len(plain) != length:
        raise CorruptImage(f"{what}: decoded {len(plain)} bytes, expected {length}")
    return plain


@functools.lru_cache(maxsize=8)
def zero_frame(length: int) -> bytes:
    """The frame sent for a hole of ``length`` bytes (a few hundred bytes for 4 MiB)."""
    return zstandard.ZstdCompressor(level=DEFAULT_LEVEL, write_content_size=True).compress(zeros(length))


@dataclass(frozen=True)
class PutResult:
    sha256: str
    new: bool  # False: the chunk was already stored and was left as it was
    stored_bytes: int  # size of the frame file


class ChunkStore:
    """Chunks under ``root`` (``ROOT/chunks``). Writes are atomic and idempotent; reads verify."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / sha256[:2] / f"{sha256}.zst"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(
        self, data: bytes, *, level: int = DEFAULT_LEVEL, sha256: str | None = None, sync_dir: bool = True
    ) -> PutResult:
        """Store ``data`` (not all zero) unless a chunk of the same sha256 is already there. With
        ``sync_dir=False`` the caller fsyncs ``path.parent`` later (an import does it once per directory)."""
        sha = sha256 or hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        try:
            return PutResult(sha, False, path.stat().st_size)
        except FileNotFoundError:
            pass
        frame = compress(data, level)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, frame, sync_dir=sync_dir)
        return PutResult(sha, True, len(frame))

    def read(self, sha256: str, length: int) -> bytes:
        """The plain bytes of a chunk, checked against its name. ImageNotFound / CorruptImage otherwise."""
        path = self.path(sha256)
        try:
            frame = path.read_bytes()
        except FileNotFoundError:
            raise MissingChunk(f"chunk {sha256} is missing ({path})", chunk=sha256, path=str(path)) from None
        except OSError as exc:
            raise CorruptImage(f"chunk {sha256}: unreadable ({exc.strerror})", chunk=sha256, path=str(path)) from None
        plain = decompress(frame, length, what=f"chunk {sha256}")
        found = hashlib.sha256(plain).hexdigest()
        if found != sha256:
            raise CorruptImage(f"chunk {sha256}: content hashes to {found}", chunk=sha256, path=str(path))
        return plain

    def read_many(
        self, items: Iterable[tuple[str | None, int]], *, workers: int = 4
    ) -> Iterator[bytes | ImageError | None]:
        """Read chunks (sha256 or None for a hole, length) in parallel, yielding in the given order: the plain
        bytes, ``None`` for a hole, or the ImageError of a missing or corrupt chunk (not raised: a verify
        reports them all). At most ``2 * workers`` chunks are held in memory."""

        def job(sha256: str, length: int) -> bytes | ImageError:
            try:
                return self.read(sha256, length)
            except ImageError as exc:
                return exc

        window: deque[Future[bytes | ImageError | None]] = deque()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-read") as pool:
            for sha256, length in items:
                if sha256 is None:
                    hole: Future[bytes | ImageError | None] = Future()
                    hole.set_result(None)
                    window.append(hole)
                else:
                    window.append(pool.submit(job, sha256, length))
                if len(window) >= 2 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    def iter_stored(self) -> Iterator[tuple[str, Path]]:
        """Every stored chunk as (sha256, path); files that are not chunks are skipped."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for path in sub.iterdir():
                sha = path.name.removesuffix(".zst")
                if path.name.endswith(".zst") and is_sha256(sha) and sha.startswith(sub.name):
                    yield sha, path

    def iter_temps(self) -> Iterator[Path]:
        """Temp files left by an interrupted write."""
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            if sub.is_dir():
                yield from (p for p in sub.iterdir() if p.name.startswith(TMP_PREFIX))
