"""The chunk store: each non-zero chunk of a disk stored once, as one zstd frame named by its plain sha256.

``ROOT/chunks/ab/abcdef....zst``. A frame is independent (decodable alone, so an agent can fetch chunks in
any order) and carries its content size (so a decoder knows the output size before decoding, and a bad
frame cannot balloon). All-zero chunks (holes) are never stored: a hole is sent as one cached zero frame.

A chunk file is only ever opened through ``ChunkStore.open`` (no symlink followed, a regular file inside the
store) and only trusted after ``ChunkStore.check`` (decoded, sha256 equal to its name): ``image verify``,
serving and export all make that one check (serving and export through ``provision.images.verified``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import stat
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from provision.images.errors import CorruptImage, ImageError, MissingChunk
from provision.images.files import TMP_PREFIX, atomic_write, open_inside
from provision.wire.index import BLOCK, MAX_CHUNK_SIZE, is_sha256

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 4 << 20
DEFAULT_LEVEL = 3
# no zstd frame of at most MAX_CHUNK_SIZE plain bytes is larger (zstd's compress bound, with room to spare)
MAX_FRAME = MAX_CHUNK_SIZE + (MAX_CHUNK_SIZE >> 7) + (1 << 17)
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


def declared_size(frame: bytes, *, what: str = "frame") -> int:
    """The plain size a frame of ours declares in its header (1 to MAX_CHUNK_SIZE); CorruptImage otherwise."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise CorruptImage(f"{what}: not a zstd frame ({exc})") from None
    if not 0 < size <= MAX_CHUNK_SIZE:
        raise CorruptImage(f"{what}: frame declares {size} plain bytes, not 1 to {MAX_CHUNK_SIZE}")
    return size


def unreadable(sha256: str, path: Path, exc: OSError) -> ImageError:
    """The error of a chunk file that cannot be opened: missing (MissingChunk) or unsafe or unreadable."""
    if isinstance(exc, FileNotFoundError):
        return MissingChunk(f"chunk {sha256} is missing ({path})", chunk=sha256, path=str(path))
    where = exc.filename or path
    return CorruptImage(f"chunk {sha256}: unreadable: {where}: {exc.strerror}", chunk=sha256, path=str(where))


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
        """True if the chunk is stored as a regular file (a symlink does not count)."""
        try:
            return stat.S_ISREG(self.path(sha256).lstat().st_mode)
        except OSError:
            return False

    def put(
        self, data: bytes, *, level: int = DEFAULT_LEVEL, sha256: str | None = None, sync_dir: bool = True
    ) -> PutResult:
        """Store ``data`` (not all zero) unless a chunk of the same sha256 is already there. With
        ``sync_dir=False`` the caller fsyncs ``path.parent`` later (an import does it once per directory)."""
        sha = sha256 or hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        try:
            found = path.lstat()
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(found.st_mode):
                return PutResult(sha, False, found.st_size)
            log.warning("chunk %s: %s is not a regular file (a symlink?): replacing it", sha, path)
        frame = compress(data, level)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, frame, sync_dir=sync_dir)
        return PutResult(sha, True, len(frame))

    def open(self, sha256: str) -> int:
        """A read-only descriptor of the stored frame, opened without following a symlink: ``chunks``, its
        ``ab`` folder and the file itself must be real, and the file regular (``files.open_inside``).
        MissingChunk if it is not there, CorruptImage if it is unsafe or unreadable."""
        path = self.path(sha256)
        try:
            return open_inside(self.root.parent, self.root.name, sha256[:2], path.name)
        except OSError as exc:
            raise unreadable(sha256, path, exc) from None

    def check(self, sha256: str, frame: bytes, length: int | None = None) -> bytes:
        """The plain bytes of ``frame`` if it is one zstd frame of ``length`` plain bytes (with None: the size
        its header declares, at most MAX_CHUNK_SIZE) that hash to ``sha256``; CorruptImage otherwise."""
        what = f"chunk {sha256}"
        facts = {"chunk": sha256, "path": str(self.path(sha256))}
        if not frame:
            raise CorruptImage(f"{what}: the frame file is empty", **facts)
        try:
            plain = decompress(frame, declared_size(frame, what=what) if length is None else length, what=what)
        except CorruptImage as exc:
            raise CorruptImage(exc.message, **facts) from None
        found = hashlib.sha256(plain).hexdigest()
        if found != sha256:
            raise CorruptImage(f"{what}: content hashes to {found}", **facts)
        return plain

    def read_frame(self, sha256: str, fd: int) -> bytes:
        """The whole frame file ``fd`` (opened by ``open``), read from offset 0 without moving the file
        position; CorruptImage if it is larger than any frame of ours can be, or unreadable."""
        path = self.path(sha256)
        data = bytearray()
        try:
            size = os.fstat(fd).st_size
            while size <= MAX_FRAME and len(data) <= MAX_FRAME:
                block = os.pread(fd, MAX_FRAME + 1 - len(data), len(data))
                if not block:
                    break
                data += block
        except OSError as exc:
            raise unreadable(sha256, path, exc) from None
        if max(size, len(data)) > MAX_FRAME:
            raise CorruptImage(f"chunk {sha256}: {max(size, len(data))} bytes, larger than any frame can be",
                               chunk=sha256, path=str(path))  # fmt: skip
        return bytes(data)

    def read(self, sha256: str, length: int) -> bytes:
        """The plain bytes of a chunk, checked against its name. ImageNotFound / CorruptImage otherwise."""
        fd = self.open(sha256)
        try:
            frame = self.read_frame(sha256, fd)
        finally:
            os.close(fd)
        return self.check(sha256, frame, length)

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
        """Every stored chunk as (sha256, path); files that are not chunks are skipped, and so are folders
        that are symlinks (gc never sweeps out of the store)."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if len(sub.name) != 2 or sub.is_symlink() or not sub.is_dir():
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
            if sub.is_dir() and not sub.is_symlink():
                yield from (p for p in sub.iterdir() if p.name.startswith(TMP_PREFIX))
