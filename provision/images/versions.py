"""The versions of the image store: where every file lives, reading and resolving versions, importing a raw
disk as a new version, publishing one, and the bmap of a version. ``provision.images.store.ImageStore`` adds
verify, export and retention (their own modules, which read the store through this class).

Layout under ROOT::

    lock                             flock: shared by imports, exclusive for publish / retention / gc
    chunks/ab/<sha256>.zst           one zstd frame per distinct non-zero chunk
    images/NAME/versions/<digest>.json   immutable index (canonical JSON; its sha256 is <digest>)
    images/NAME/versions/<digest>.bmap   derived: the bmap of that version (regenerated if missing)
    images/NAME/current              "<digest>\\n", replaced atomically by publish

Readers (HTTP, verify, export) take no lock: every file they read is immutable or replaced atomically.
They read index, bmap and chunk files without following a symlink below ROOT (``files.open_inside``), and
send a chunk only once checked (``provision.images.verified``). A damaged bmap cache is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provision import __version__
from provision.images.bmap import BmapBuilder, bmap_problem
from provision.images.chunks import DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL, ChunkStore, check_chunk_size
from provision.images.errors import CorruptImage, ImageError, ImageNotFound, MissingChunk
from provision.images.files import StoreLock, atomic_write, fsync_dir, read_inside
from provision.images.importer import Progress, chunk_file, default_workers, disk_size
from provision.images.index import (
    CURRENT,
    LABEL_RE,
    ImageIndex,
    ImageVersion,
    canonical_json,
    check_name,
    format_created,
    parse_ref,
)
from provision.images.partitions import read_partition_table
from provision.images.verified import Frame, VerifiedFrames
from provision.wire.index import is_sha256

log = logging.getLogger(__name__)

INDEX_CACHE = 64
MAX_FILE = 256 << 20  # an index or bmap file larger than this is damaged (a 2 TiB disk's index is ~50 MB)


@dataclass(frozen=True)
class ImageInfo:
    """One image name: its current version (if published) and all stored versions, newest first."""

    name: str
    current: ImageVersion | None
    versions: tuple[ImageVersion, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "current": None if self.current is None else self.current.summary(),
            "versions": [v.summary() for v in self.versions],
        }


class Versions:
    """All image versions of one server under ``root``. Safe to share between threads and processes."""

    def __init__(self, root: Path, *, lock_timeout: float | None = 600.0) -> None:
        self.root = root
        self.images_root = root / "images"
        self.chunks = ChunkStore(root / "chunks")
        self.frames = VerifiedFrames(self.chunks)
        self.images_root.mkdir(parents=True, exist_ok=True)
        self.chunks.root.mkdir(exist_ok=True)
        self.lock = StoreLock(root / "lock", lock_timeout)
        self._cache: OrderedDict[tuple[str, str], ImageIndex] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------------------------

    def versions_dir(self, name: str) -> Path:
        return self.images_root / check_name(name) / "versions"

    def index_path(self, name: str, digest: str) -> Path:
        if not is_sha256(digest):
            raise ImageError(f"not a version digest: {digest[:80]!r}")
        return self.versions_dir(name) / f"{digest}.json"

    def bmap_path(self, name: str, digest: str) -> Path:
        return self.index_path(name, digest).with_suffix(".bmap")

    def current_path(self, name: str) -> Path:
        return self.images_root / check_name(name) / "current"

    def read_file(self, path: Path) -> bytes:
        """An index or bmap file, read without following a symlink below ROOT. FileNotFoundError if it is
        absent; CorruptImage if it is a symlink, not a regular file, too large or unreadable."""
        try:
            return read_inside(self.root, *path.relative_to(self.root).parts, limit=MAX_FILE)
        except FileNotFoundError:
            raise
        except OSError as exc:
            where = exc.filename or path
            raise CorruptImage(f"{where}: unreadable: {exc.strerror}", path=str(where)) from None

    def index_bytes(self, name: str, digest: str) -> bytes:
        """The index file of a version as stored, checked against its digest. ImageNotFound if absent."""
        path = self.index_path(name, digest)
        try:
            data = self.read_file(path)
        except FileNotFoundError:
            raise ImageNotFound(f"image {name} has no version {digest}", name=name, digest=digest) from None
        found = hashlib.sha256(data).hexdigest()
        if found != digest:
            raise CorruptImage(f"index {path} hashes to {found}, not {digest}: corrupted", path=str(path))
        return data

    # -- reading -------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(p.name for p in self.images_root.iterdir() if (p / "versions").is_dir())

    def digests(self, name: str) -> list[str]:
        """Digests of the stored versions of ``name`` (from the file names only)."""
        folder = self.versions_dir(name)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if is_sha256(p.stem))

    def current_digest(self, name: str) -> str | None:
        try:
            text = self.current_path(name).read_text().strip()
        except FileNotFoundError:
            return None
        if not is_sha256(text):
            raise CorruptImage(f"image {name}: {self.current_path(name)} does not hold a digest", name=name)
        return text

    def load(self, name: str, digest: str) -> ImageVersion:
        """The version ``digest`` of ``name``, its index checked against the digest (cached once read)."""
        key = (name, digest)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return ImageVersion(name, digest, cached)
        path = self.index_path(name, digest)
        data = self.index_bytes(name, digest)
        index = ImageIndex.from_bytes(data, what=str(path))
        if index.name != name:
            raise CorruptImage(f"index {path} is for image {index.name!r}, not {name!r}", path=str(path))
        with self._cache_lock:
            self._cache[key] = index
            while len(self._cache) > INDEX_CACHE:
                self._cache.popitem(last=False)
        return ImageVersion(name, digest, index)

    def versions(self, name: str) -> tuple[ImageVersion, ...]:
        """Stored versions of ``name``, newest first."""
        found = [self.load(name, d) for d in self.digests(name)]
        return tuple(sorted(found, key=lambda v: (v.index.created, v.digest), reverse=True))

    def current(self, name: str) -> ImageVersion | None:
        digest = self.current_digest(name)
        return None if digest is None else self.load(name, digest)

    def list_images(self) -> tuple[ImageInfo, ...]:
        return tuple(ImageInfo(n, self.current(n), self.versions(n)) for n in self.names())

    def find_digest(self, name: str, selector: str) -> str:
        """The digest a selector names, from file names (plus the index for a label). ImageNotFound if none,
        ImageError if a prefix names several versions."""
        if selector == CURRENT:
            digest = self.current_digest(name)
            if digest is None:
                if not self.digests(name):
                    known = ", ".join(self.names()) or "none"
                    raise ImageNotFound(f"no image named {name} (images: {known})", name=name)
                raise ImageNotFound(f"image {name} has no current version: publish one", name=name)
            return digest
        label = LABEL_RE.fullmatch(selector)
        prefix = label.group(3) if label else selector
        candidates = [d for d in self.digests(name) if d.startswith(prefix)]
        if label:
            candidates = [d for d in candidates if self.load(name, d).label == selector]
        if not candidates:
            raise ImageNotFound(f"image {name} has no version {selector}", name=name, ref=f"{name}@{selector}")
        if len(candidates) > 1:
            shown = ", ".join(d[:16] for d in candidates[:5])
            raise ImageError(f"{name}@{selector} is ambiguous: {len(candidates)} versions ({shown} ...)", name=name)
        return candidates[0]

    def resolve(self, ref: str) -> ImageVersion:
        """``NAME``, ``NAME@current``, ``NAME@<label>`` or ``NAME@<digest prefix, 8+ hex>`` -> the version."""
        name, selector = parse_ref(ref)
        return self.load(name, self.find_digest(name, selector))

    def open_chunk(self, sha256: str) -> Frame:
        """The stored frame of chunk ``sha256``, open (what ``/chunks/<sha256>`` sends): ImageError for an id
        that is not 64 lower-case hex digits, ImageNotFound when the store does not hold it, CorruptImage if
        it is a symlink or not a regular file, or recorded bad. ``frames.check`` it before sending unless
        ``checked``; close it after."""
        if not is_sha256(sha256):
            raise ImageError("a chunk id is 64 lower-case hex digits (its sha256)")
        try:
            return self.frames.open(sha256)
        except MissingChunk:
            raise ImageNotFound(f"no chunk {sha256}", chunk=sha256) from None

    def stored_bytes(self, version: ImageVersion) -> int:
        """Compressed bytes of the distinct chunks of a version (what it costs alone in the store)."""
        return sum(self.chunks.path(sha).stat().st_size for sha in version.index.unique_chunks())

    # -- writing -------------------------------------------------------------------------------------------

    def import_raw(
        self,
        raw: Path,
        name: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        level: int = DEFAULT_LEVEL,
        sector_size: int = 512,
        provenance: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        publish: bool = True,
        created: datetime | None = None,
        workers: int | None = None,
    ) -> ImageVersion:
        """Chunk the raw disk ``raw`` into the store as a new version of ``name`` (published unless
        ``publish=False``). ``provenance`` (JSON-able; the key ``source`` is reserved) is recorded with
        ``source``: the file name, size and sha256 of ``raw``. ``progress(done_bytes, total_bytes)`` is
        called after each chunk. A file that is not a whole disk raises ImageError and publishes nothing."""
        check_name(name)
        try:
            check_chunk_size(chunk_size)
        except ValueError as exc:
            raise ImageError(str(exc)) from None
        if not 1 <= level <= 22:
            raise ImageError(f"zstd level {level} is not between 1 and 22")
        extra = dict(provenance or {})
        if "source" in extra:
            raise ImageError("provenance key 'source' is reserved: the import records the raw file there")
        try:
            canonical_json(extra)
        except (TypeError, ValueError) as exc:
            raise ImageError(f"provenance is not JSON: {exc}") from None
        when = format_created(created or datetime.now(UTC))
        try:
            f = raw.open("rb")
        except OSError as exc:
            raise ImageError(f"{raw}: cannot open: {exc.strerror}", path=str(raw)) from None
        with f:
            size = disk_size(f.fileno())
            layout = read_partition_table(f, size, sector_size=sector_size, path=str(raw))
            log.info("image %s: importing %s (%d bytes, %s, %d partitions)", name, raw, size, layout.label,
                     len(layout.partitions))  # fmt: skip
            with self.lock.shared(f"import {name}"):
                result = chunk_file(
                    f.fileno(), size, self.chunks, chunk_size=chunk_size, level=level,
                    workers=workers or default_workers(), progress=progress, what=str(raw),
                )  # fmt: skip
                source = {
                    "file": raw.name,
                    "size": size,
                    "sha256": result.source_sha256,
                    "by": f"provision {__version__}",
                }
                index = ImageIndex(
                    name=name, created=when, disk_size=size, sector_size=sector_size, chunk_size=chunk_size,
                    layout=layout, chunks=result.chunks, provenance={**extra, "source": source},
                )  # fmt: skip
                version = self._write_version(index, result.bmap)
        rate = size / max(result.seconds, 1e-9) / 1e6
        log.info(
            "image %s: imported %s as %s: %d chunks (%d holes, %d new), %d bytes stored, %.1f s, %.0f MB/s",
            name, raw.name, version.label, len(index.chunks), index.holes, result.new_chunks, result.stored_bytes,
            result.seconds, rate,
        )  # fmt: skip
        if publish:
            self.publish(version)
        return version

    def add_version(self, index: ImageIndex, bmap: str, *, publish: bool = True) -> ImageVersion:
        """Store ``index`` (and its ``bmap`` text) as a new version of its image, published unless ``publish=False``:
        every chunk it names must be in the store already (a capture's uploads: provision.images.capture), checked
        with the store lock held shared, as an import holds it while it writes. ImageError naming the first missing
        chunk otherwise, and nothing is written."""
        with self.lock.shared(f"add {index.name}"):
            missing = [sha for sha in index.unique_chunks() if not self.chunks.has(sha)]
            if missing:
                raise ImageError(f"image {index.name}: {len(missing)} chunks of the new version are not in the store "
                                 f"(first {missing[0]}): nothing written", name=index.name)  # fmt: skip
            version = self._write_version(index, bmap)
        if publish:
            self.publish(version)
        return version

    def _write_version(self, index: ImageIndex, bmap: str) -> ImageVersion:
        data = index.canonical()
        digest = hashlib.sha256(data).hexdigest()
        folder = self.versions_dir(index.name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digest}.json"
        if not path.exists():
            atomic_write(folder / f"{digest}.bmap", bmap.encode(), sync_dir=False)
            atomic_write(path, data)
            fsync_dir(folder.parent)
        return self.load(index.name, digest)

    def publish(self, version: ImageVersion) -> None:
        """Make ``version`` the current version of its image (atomic: readers see the old or the new one).
        Refused if its index or any of its chunks is missing."""
        with self.lock.exclusive(f"publish {version.ref}"):
            stored = self.load(version.name, version.digest)
            missing = [sha for sha in stored.index.unique_chunks() if not self.chunks.has(sha)]
            if missing:
                raise ImageError(
                    f"{version.ref}: not published: {len(missing)} chunks are missing from the store "
                    f"(first {missing[0]}); import the disk again",
                    name=version.name,
                    digest=version.digest,
                )
            previous = self.current_digest(version.name)
            atomic_write(self.current_path(version.name), f"{version.digest}\n".encode())
        log.info("image %s: current is now %s (was %s)", version.name, version.label, (previous or "none")[:12])

    # -- serving -------------------------------------------------------------------------------------------

    def bmap_text(self, version: ImageVersion) -> str:
        """The bmap of a version: from its cache file, else rebuilt from the chunks and cached. A cache that
        is damaged (not UTF-8, truncated, its own checksum wrong, a symlink) is rebuilt too, with a warning;
        CorruptImage if the chunks cannot give it."""
        path = self.bmap_path(version.name, version.digest)
        try:
            text = self.read_file(path).decode()
            problem = bmap_problem(text, version.index.disk_size)
        except FileNotFoundError:
            problem = None
        except (CorruptImage, UnicodeDecodeError) as exc:
            problem = str(exc)
        else:
            if problem is None:
                return text
        if problem is not None:
            log.warning("image %s: cached bmap %s is damaged (%s): rebuilding it from the chunks", version.ref,
                        path, problem)  # fmt: skip
        text = self.rebuild_bmap(version)
        atomic_write(path, text.encode())
        return text

    def rebuild_bmap(self, version: ImageVersion, *, workers: int | None = None) -> str:
        """Compute the bmap of a version from its stored chunks (reads and checks every chunk). CorruptImage
        naming the first bad chunk (index, offset, sha256) if one is missing or bad."""
        ix = version.index
        builder = BmapBuilder(ix.disk_size)
        items = [(c.sha256, c.length) for c in ix.chunks]
        for i, (ref, data) in enumerate(
            zip(ix.chunks, self.chunks.read_many(items, workers=workers or 4), strict=True)
        ):
            if isinstance(data, ImageError):
                raise CorruptImage(
                    f"{version.ref}: the bmap cannot be rebuilt: chunk {i} at offset {ix.offset(i)}: {data}",
                    name=version.name, digest=version.digest, index=i, offset=ix.offset(i), chunk=ref.sha256,
                    path=data.facts.get("path"),
                )  # fmt: skip
            builder.add(ix.offset(i), ref.length, data)
        return builder.text()

    def remove_cached(self, name: str, digest: str) -> None:
        with self._cache_lock:
            self._cache.pop((name, digest), None)
