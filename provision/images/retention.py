"""Retention and garbage collection: old versions go, then chunks nothing references (mark and sweep).

Both run under the store's exclusive lock, so a nightly import (which holds it shared while it writes chunks
and its index) and a retention run never collide: a sweep never sees chunks whose index is not written yet.
The mark phase reads every index of every image; if one cannot be read the sweep is refused, because a
chunk it references would look unreferenced.

A capture in flight (docs/capture.md) has chunks no index references yet: those it uploaded and those it found
in the store when it offered them. The sweep spares them: ``pinned`` (the server's record, ``Store.capture_pins``)
is read under the exclusive lock, and a capture's offer holds the lock shared while it records its chunks and
looks up which the store has, so a chunk an offer found is either pinned before the sweep or swept before the
offer looks (and then asked for).

Delta re-imaging (docs/delta.md) predicts a run's download from the version the machine holds, which needs only
that version's *index*, never its chunks (a run fetches the new version's chunks). So a removed version that
machines still hold (``held``: the server's record, ``Store.held_digests``) keeps its index, moved to
``images/NAME/held/DIGEST.json``: out of ``versions/`` (not listed, not resolvable, not marked by gc, so its
chunks go), read back by ``held_index``. An index there that no machine holds any more is removed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.images.errors import CorruptImage, ImageError, ImageNotFound
from provision.images.files import TMP_PREFIX, fsync_dir
from provision.images.index import ImageIndex
from provision.images.versions import Versions
from provision.wire.index import is_sha256

log = logging.getLogger(__name__)

Pins = Callable[[], Collection[str]]  # the sha256s captures in flight rely on, read under the exclusive lock


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
    indexes_held: tuple[str, ...] = ()  # labels of removed versions whose index is kept: machines hold them

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kept": list(self.kept), "removed": list(self.removed), "gc": self.gc.to_dict(),
                "indexes_held": list(self.indexes_held)}  # fmt: skip


def held_dir(store: Versions, name: str) -> Path:
    """Where the indexes of removed versions that machines still hold are kept."""
    return store.versions_dir(name).parent / "held"


def held_index(store: Versions, name: str, digest: str) -> ImageIndex:
    """The index of version ``digest`` of ``name``: a stored version's, else the one kept for the machines that
    hold it. ImageNotFound when neither exists; CorruptImage when the file is not that version's index."""
    try:
        return store.load(name, digest).index
    except ImageNotFound:
        if not is_sha256(digest):
            raise
    path = held_dir(store, name) / f"{digest}.json"
    try:
        data = store.read_file(path)
    except FileNotFoundError:
        raise ImageNotFound(f"image {name} has no version {digest}, stored or held", name=name, digest=digest) from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise CorruptImage(f"held index {path} does not hash to {digest}: corrupted", path=str(path))
    index = ImageIndex.from_bytes(data, what=str(path))
    if index.name != name:
        raise CorruptImage(f"held index {path} is for image {index.name!r}, not {name!r}", path=str(path))
    return index


def retain(
    store: Versions,
    name: str,
    *,
    keep: int,
    in_use: Collection[str],
    held: Collection[str] | None = None,
    pinned: Pins | None = None,
) -> RetentionReport:
    """Keep the ``keep`` newest versions of ``name``, the current one and those in ``in_use`` (runs in flight);
    remove the others, keeping the index of those in ``held`` (versions machines hold, for delta re-imaging;
    None: no index is kept and the held folder is left as it is); then gc, sparing ``pinned``."""
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
        indexes = tuple(v for v in removed if held is not None and v.digest in held)
        if indexes:
            held_dir(store, name).mkdir(exist_ok=True)
        for v in removed:
            store.bmap_path(name, v.digest).unlink(missing_ok=True)
            if v in indexes:
                store.index_path(name, v.digest).replace(held_dir(store, name) / f"{v.digest}.json")
            else:
                store.index_path(name, v.digest).unlink(missing_ok=True)
            store.remove_cached(name, v.digest)
            log.info("image %s: removed version %s (retention keeps %d)%s", name, v.label, keep,
                     "; its index kept: machines hold it" if v in indexes else "")  # fmt: skip
        if removed:
            fsync_dir(store.versions_dir(name))
        if indexes:
            fsync_dir(held_dir(store, name))
        if held is not None:
            _prune_held(store, name, set(held))
        report = collect(store, pinned)
    return RetentionReport(name, tuple(v.label for v in kept), tuple(v.label for v in removed), report,
                           tuple(v.label for v in indexes))  # fmt: skip


def _prune_held(store: Versions, name: str, held: set[str]) -> None:
    """Remove the kept indexes no machine holds any more."""
    folder = held_dir(store, name)
    if not folder.is_dir():
        return
    gone = [p for p in folder.glob("*.json") if p.stem not in held]
    for path in gone:
        path.unlink(missing_ok=True)
        log.info("image %s: removed the held index of %s: no machine holds it any more", name, path.stem[:12])
    if gone:
        fsync_dir(folder)


def _index_files(store: Versions) -> list[Path]:
    return sorted(
        p
        for image in store.images_root.iterdir()
        if (image / "versions").is_dir()
        for p in (image / "versions").glob("*.json")
        if is_sha256(p.stem)
    )


def collect(store: Versions, pinned: Pins | None = None) -> GcReport:
    """Mark and sweep; the caller holds the exclusive lock. ``pinned``: chunks kept though no index names them."""
    started = time.monotonic()
    marked: set[str] = set()
    if pinned is not None:
        spared = set(pinned())
        marked.update(spared)
        if spared:
            log.info("gc: %d chunks spared for captures in flight", len(spared))
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
