"""Retention and garbage collection: old versions go, then chunks nothing references (mark and sweep).

Both run under the store's exclusive lock, so a nightly import (which holds it shared while it writes chunks
and its index) and a retention run never collide: a sweep never sees chunks whose index is not written yet.
The mark phase reads every index of every image; if one cannot be read the sweep is refused, because a
chunk it references would look unreferenced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.images.errors import CorruptImage, ImageError, ImageNotFound
from provision.images.files import TMP_PREFIX, fsync_dir
from provision.images.index import ImageIndex
from provision.images.versions import Versions
from provision.wire.index import is_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcReport:
    referenced: int  # distinct chunks referenced by the remaining indexes
    removed_chunks: int
    freed_bytes: int
    removed_temps: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RetentionReport:
    name: str
    kept: tuple[str, ...]  # labels, newest first
    removed: tuple[str, ...]  # labels of the removed versions
    gc: GcReport

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kept": list(self.kept), "removed": list(self.removed), "gc": self.gc.to_dict()}


def retain(store: Versions, name: str, *, keep: int, in_use: Collection[str]) -> RetentionReport:
    if keep < 1:
        raise ImageError(f"retention of {name}: keep must be at least 1, not {keep}", name=name)
    bad = [d for d in in_use if not is_sha256(d)]
    if bad:
        raise ImageError(f"retention of {name}: in_use must hold full sha256 digests, not {bad[0][:80]!r}", name=name)
    with store.lock.exclusive(f"retain {name}"):
        versions = store.versions(name)
        if not versions:
            raise ImageNotFound(f"retention: no image named {name}", name=name)
        current = store.current_digest(name)
        protected = {v.digest for v in versions[:keep]} | set(in_use) | ({current} if current else set())
        kept = tuple(v for v in versions if v.digest in protected)
        removed = tuple(v for v in versions if v.digest not in protected)
        for v in removed:
            store.bmap_path(name, v.digest).unlink(missing_ok=True)
            store.index_path(name, v.digest).unlink(missing_ok=True)
            store.remove_cached(name, v.digest)
            log.info("image %s: removed version %s (retention keeps %d)", name, v.label, keep)
        if removed:
            fsync_dir(store.versions_dir(name))
        report = collect(store)
    return RetentionReport(name, tuple(v.label for v in kept), tuple(v.label for v in removed), report)


def _index_files(store: Versions) -> list[Path]:
    return sorted(
        p
        for image in store.images_root.iterdir()
        if (image / "versions").is_dir()
        for p in (image / "versions").glob("*.json")
        if is_sha256(p.stem)
    )


def collect(store: Versions) -> GcReport:
    """Mark and sweep; the caller holds the exclusive lock."""
    started = time.monotonic()
    marked: set[str] = set()
    for path in _index_files(store):
        try:
            index = ImageIndex.from_bytes(store.read_file(path), what=str(path))
        except CorruptImage as exc:
            raise CorruptImage(f"garbage collection refused: {exc}; fix or remove that file", path=str(path)) from None
        marked.update(index.unique_chunks())
    removed = freed = 0
    for sha, path in store.chunks.iter_stored():
        if sha in marked:
            continue
        size = path.stat().st_size
        path.unlink()
        removed += 1
        freed += size
        log.debug("gc: removed chunk %s (%d bytes)", sha, size)
    temps = list(store.chunks.iter_temps())
    for image in store.images_root.iterdir():
        for folder in (image, image / "versions"):
            if folder.is_dir():
                temps += [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]
        versions = image / "versions"
        if versions.is_dir():  # a bmap whose index is gone
            temps += [p for p in versions.glob("*.bmap") if not p.with_suffix(".json").exists()]
    for path in temps:
        path.unlink(missing_ok=True)
    report = GcReport(len(marked), removed, freed, len(temps), time.monotonic() - started)
    log.info(
        "gc: %d chunks referenced, %d removed (%d bytes freed), %d temp files removed",
        report.referenced, removed, freed, len(temps),
    )  # fmt: skip
    return report
