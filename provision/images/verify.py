"""Verify a stored version: the index against its digest, every chunk against its name, and the bmap.

Every chunk position is read (decompressed, sha256, compared), so each bad or missing chunk is reported
with its index and disk offset, even when one stored chunk serves several positions. When all chunks are
good the bmap is recomputed from them in the same pass and compared with the cached one; a stale cache is
reported and rewritten.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from provision.images.bmap import BmapBuilder
from provision.images.errors import CorruptImage, ImageError, ImageNotFound
from provision.images.files import atomic_write
from provision.images.importer import Progress
from provision.images.index import ImageIndex, ImageVersion, parse_ref
from provision.images.versions import Versions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkProblem:
    index: int  # position in the chunk list
    offset: int  # byte offset on the disk
    length: int
    expected: str  # the sha256 the index names
    found: str  # "missing", "sha256 <hex>", "undecodable: ...", ...

    def __str__(self) -> str:
        return (
            f"chunk {self.index} at offset {self.offset} ({self.length} bytes): expected {self.expected}, {self.found}"
        )

    @classmethod
    def of(cls, index: int, offset: int, length: int, expected: str, exc: ImageError) -> ChunkProblem:
        """The problem an ImageError of ``ChunkStore`` (missing, unreadable, bad frame, wrong sha256) names."""
        if isinstance(exc, ImageNotFound):
            return cls(index, offset, length, expected, "missing")
        text = str(exc)
        return cls(index, offset, length, expected, text.split(": ", 1)[1] if ": " in text else text)


@dataclass(frozen=True)
class VerifyReport:
    name: str
    digest: str
    label: str | None  # None when the index cannot be read
    index_problem: str | None
    chunks: int  # positions in the chunk list
    holes: int
    checked: int  # non-hole positions read
    bytes_checked: int  # plain bytes
    bad: tuple[ChunkProblem, ...]
    bmap_problem: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.index_problem is None and not self.bad and self.bmap_problem is None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.label or self.digest[:12]}"

    def problems(self) -> list[str]:
        """One line per problem, for the CLI."""
        lines = [f"index: {self.index_problem}"] if self.index_problem else []
        lines += [str(p) for p in self.bad]
        lines += [f"bmap: {self.bmap_problem}"] if self.bmap_problem else []
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "label": self.label,
            "ok": self.ok,
            "index_problem": self.index_problem,
            "chunks": self.chunks,
            "holes": self.holes,
            "checked": self.checked,
            "bytes_checked": self.bytes_checked,
            "bad": [p.__dict__ for p in self.bad],
            "bmap_problem": self.bmap_problem,
            "seconds": round(self.seconds, 3),
        }


def verify(store: Versions, ref: str, *, workers: int, progress: Progress | None) -> VerifyReport:
    started = time.monotonic()
    name, selector = parse_ref(ref)
    digest = store.find_digest(name, selector)
    path = store.index_path(name, digest)
    try:
        data = store.read_file(path)
    except FileNotFoundError:
        raise ImageNotFound(f"image {name} has no version {digest}", name=name, digest=digest) from None
    except CorruptImage as exc:
        log.error("image %s: verify %s: %s", name, digest[:12], exc)
        return VerifyReport(name, digest, None, str(exc), 0, 0, 0, 0, (), None, time.monotonic() - started)
    problems: list[str] = []
    found = hashlib.sha256(data).hexdigest()
    if found != digest:
        problems.append(f"{path} hashes to {found}, not {digest}: the index file is corrupted")
    try:
        index = ImageIndex.from_bytes(data, what=str(path))
    except CorruptImage as exc:
        problems.append(str(exc))
        log.error("image %s: verify %s: %s", name, digest[:12], "; ".join(problems))
        return VerifyReport(name, digest, None, "; ".join(problems), 0, 0, 0, 0, (), None, time.monotonic() - started)
    if not problems and index.canonical() != data:
        problems.append(f"{path} is not in canonical form")
    if index.name != name:
        problems.append(f"{path} names image {index.name!r}")
    version = ImageVersion(name, digest, index)
    bad, checked, checked_bytes, computed = _check_chunks(store, version, workers, progress)
    bmap_problem = _check_bmap(store, version, computed) if not bad and not problems else None
    report = VerifyReport(
        name, digest, version.label, "; ".join(problems) or None, len(index.chunks), index.holes, checked,
        checked_bytes, tuple(bad), bmap_problem, time.monotonic() - started,
    )  # fmt: skip
    if report.ok:
        log.info("image %s: verified %s: %d chunks, %d bytes, %.1f s", name, version.label, checked, checked_bytes,
                 report.seconds)  # fmt: skip
    else:
        for line in report.problems():
            log.error("image %s: verify %s: %s", name, version.label, line)
    return report


def _check_chunks(
    store: Versions, version: ImageVersion, workers: int, progress: Progress | None
) -> tuple[list[ChunkProblem], int, int, str]:
    """Read every chunk; returns the problems, counts, and the bmap recomputed on the way ("" if bad)."""
    ix = version.index
    builder = BmapBuilder(ix.disk_size)
    bad: list[ChunkProblem] = []
    checked = checked_bytes = done = 0
    items = [(c.sha256, c.length) for c in ix.chunks]
    for i, (ref, result) in enumerate(zip(ix.chunks, store.chunks.read_many(items, workers=workers), strict=True)):
        offset = ix.offset(i)
        if isinstance(result, ImageError):
            bad.append(ChunkProblem.of(i, offset, ref.length, str(ref.sha256), result))
        elif not bad:
            builder.add(offset, ref.length, result)
        if ref.sha256 is not None:
            checked += 1
            checked_bytes += ref.length
        done += ref.length
        if progress is not None:
            progress(done, ix.disk_size)
    return bad, checked, checked_bytes, "" if bad else builder.text()


def _check_bmap(store: Versions, version: ImageVersion, computed: str) -> str | None:
    path = store.bmap_path(version.name, version.digest)
    try:
        cached: bytes | None = store.read_file(path)
    except FileNotFoundError:
        atomic_write(path, computed.encode())
        return None
    except CorruptImage as exc:
        log.warning("image %s: verify %s: %s", version.name, version.label, exc)
        cached = None
    if cached == computed.encode():
        return None
    atomic_write(path, computed.encode())
    return f"cached {path} did not match the chunks; rewritten from them"
