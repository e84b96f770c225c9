"""What differs between two versions of an image: chunks, packages and files (``provision image diff A B``).

Pure comparisons of value objects; reading the files of a version's root file system is ``rootfiles``.

- Chunks: position by position (chunk ``i`` of A against chunk ``i`` of B, when both use one chunk size),
  each differing position placed in the partitions it overlaps (B's table; bytes outside every partition:
  ``outside``); B's distinct chunks that A does not hold (what the store gained); and what a PC whose disk
  holds A fetches for B (``provision.wire.delta.predict``: chunks not the same at the same offset, the stored
  frames' bytes when the store's sizes are given).
- Packages: from each version's provenance (``packages``: installed; else ``resolved``): added, removed,
  upgraded. ``None`` when a version records none (a disk imported by hand).
- Files: from two manifests (``FileEntry`` by path): added, removed, changed (content, type, mode, owner).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provision.images.index import ImageIndex, ImageVersion
from provision.wire.delta import Prediction, predict
from provision.wire.index import Chunk

OUTSIDE = "outside"  # bytes of a chunk outside every partition (the partition tables, gaps)


@dataclass(frozen=True)
class PartCount:
    """Differing chunks overlapping one partition, and the bytes of theirs inside it."""

    chunks: int = 0
    bytes: int = 0

    def plus(self, overlap: int) -> PartCount:
        return PartCount(self.chunks + 1, self.bytes + overlap)


@dataclass(frozen=True)
class ChunkDiff:
    """How the chunk lists of A and B differ."""

    chunk_size_a: int
    chunk_size_b: int
    chunks_a: int
    chunks_b: int
    differ: int  # positions whose chunk differs (or exists on one side only); 0 when not comparable
    differ_bytes: int  # B's bytes at those positions (A's where B has none)
    by_partition: dict[str, PartCount]  # "3 root", "2 esp", "outside" -> count
    new_chunks: int  # distinct stored chunks of B that A does not have
    new_bytes: int
    same_content: bool  # the same chunk list: the same disk, bit for bit
    delta: Prediction | None = None  # what a PC holding A fetches for B (None: chunk sizes differ)

    @property
    def comparable(self) -> bool:
        return self.chunk_size_a == self.chunk_size_b

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_size": {"a": self.chunk_size_a, "b": self.chunk_size_b},
            "chunks": {"a": self.chunks_a, "b": self.chunks_b},
            "comparable": self.comparable,
            "differ": self.differ,
            "differ_bytes": self.differ_bytes,
            "by_partition": {k: {"chunks": v.chunks, "bytes": v.bytes} for k, v in self.by_partition.items()},
            "new_chunks": self.new_chunks,
            "new_bytes": self.new_bytes,
            "same_content": self.same_content,
            "delta": None if self.delta is None else {
                "chunks": self.delta.chunks, "bytes": self.delta.bytes, "download": self.delta.download,
                "total_download": self.delta.total_download, "share": round(self.delta.share, 4),
            },
        }  # fmt: skip


def _spans(index: ImageIndex) -> list[tuple[str, int, int]]:
    """(key, first byte, end byte) of each partition."""
    ss = index.layout.sector_size
    return [(f"{p.number} {p.name}".strip(), p.start * ss, p.end * ss) for p in index.layout.partitions]


def _placed(index: ImageIndex) -> list[Chunk]:
    return [Chunk(i, i * index.chunk_size, c.length, c.sha256) for i, c in enumerate(index.chunks)]


def chunk_diff(a: ImageIndex, b: ImageIndex, sizes: Mapping[str, int] | None = None) -> ChunkDiff:
    """Compare the chunk lists of two indexes (B's partition table names where the differences are). ``sizes``:
    the stored size of B's chunks by sha256, for the delta's download (else plain lengths are counted)."""
    held = a.unique_chunks()
    new = {sha: n for sha, n in b.unique_chunks().items() if sha not in held}
    same = a.chunk_size == b.chunk_size and a.chunks == b.chunks and a.disk_size == b.disk_size
    differ = differ_bytes = 0
    parts: dict[str, PartCount] = {}
    if a.chunk_size == b.chunk_size:
        spans = _spans(b)
        for i in range(max(len(a.chunks), len(b.chunks))):
            ca = a.chunks[i] if i < len(a.chunks) else None
            cb = b.chunks[i] if i < len(b.chunks) else None
            if ca == cb:
                continue
            ref = cb if cb is not None else ca
            length = 0 if ref is None else ref.length
            start, end = i * b.chunk_size, i * b.chunk_size + length
            differ += 1
            differ_bytes += length
            inside = 0
            for key, first, last in spans:
                overlap = min(end, last) - max(start, first)
                if overlap > 0:
                    parts[key] = parts.get(key, PartCount()).plus(overlap)
                    inside += overlap
            if inside < length:
                parts[OUTSIDE] = parts.get(OUTSIDE, PartCount()).plus(length - inside)
    return ChunkDiff(
        chunk_size_a=a.chunk_size,
        chunk_size_b=b.chunk_size,
        chunks_a=len(a.chunks),
        chunks_b=len(b.chunks),
        differ=differ,
        differ_bytes=differ_bytes,
        by_partition=dict(sorted(parts.items())),
        new_chunks=len(new),
        new_bytes=sum(new.values()),
        same_content=same,
        delta=predict(_placed(a), _placed(b), sizes or {}) if a.chunk_size == b.chunk_size else None,
    )


@dataclass(frozen=True)
class PackageDiff:
    """Packages added, removed and upgraded from A to B (name -> version; upgraded: name -> (A's, B's))."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    upgraded: dict[str, tuple[str, str]] = field(default_factory=dict)
    unchanged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "upgraded": {n: {"from": old, "to": new} for n, (old, new) in self.upgraded.items()},
            "unchanged": self.unchanged,
        }


def recorded_packages(provenance: Mapping[str, Any]) -> dict[str, str] | None:
    """name -> version a version's provenance records (installed, else apt's plan); None if neither."""
    for key in ("packages", "resolved"):
        found = provenance.get(key)
        if isinstance(found, Mapping) and all(isinstance(v, str) for v in found.values()):
            return {str(k): str(v) for k, v in found.items()}
    return None


def package_diff(a: Mapping[str, str], b: Mapping[str, str]) -> PackageDiff:
    return PackageDiff(
        added={n: v for n, v in sorted(b.items()) if n not in a},
        removed={n: v for n, v in sorted(a.items()) if n not in b},
        upgraded={n: (a[n], v) for n, v in sorted(b.items()) if n in a and a[n] != v},
        unchanged=sum(1 for n, v in b.items() if a.get(n) == v),
    )


@dataclass(frozen=True)
class FileEntry:
    """One path of a root file system: kind (file, dir, link, other), mode bits, owner, size, and for a
    file the sha256 of its content, for a link its target."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    digest: str = ""


@dataclass(frozen=True)
class FileChange:
    path: str
    size_a: int
    size_b: int
    what: tuple[str, ...]  # "content", "kind", "mode", "owner", "target"


@dataclass(frozen=True)
class FileDiff:
    """Paths added and removed (path -> entry) and changed, from A to B."""

    added: dict[str, FileEntry] = field(default_factory=dict)
    removed: dict[str, FileEntry] = field(default_factory=dict)
    changed: tuple[FileChange, ...] = ()
    unchanged: int = 0
    partition: str = ""  # which partition was read ("3 root")

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "added": {p: {"kind": e.kind, "size": e.size} for p, e in self.added.items()},
            "removed": {p: {"kind": e.kind, "size": e.size} for p, e in self.removed.items()},
            "changed": [
                {"path": c.path, "size_a": c.size_a, "size_b": c.size_b, "what": list(c.what)} for c in self.changed
            ],
            "unchanged": self.unchanged,
        }


def _what(a: FileEntry, b: FileEntry) -> tuple[str, ...]:
    if a.kind != b.kind:
        return ("kind",)
    what = []
    if a.digest != b.digest or a.size != b.size:
        what.append("target" if a.kind == "link" else "content")
    if a.mode != b.mode:
        what.append("mode")
    if (a.uid, a.gid) != (b.uid, b.gid):
        what.append("owner")
    return tuple(what)


def file_diff(a: Mapping[str, FileEntry], b: Mapping[str, FileEntry], *, partition: str = "") -> FileDiff:
    """Compare two manifests (path -> entry). A folder's size is not compared (it is the file system's)."""
    changed = []
    unchanged = 0
    for path in sorted(a.keys() & b.keys()):
        ea, eb = a[path], b[path]
        if ea.kind == eb.kind == "dir":
            eb = FileEntry(eb.kind, eb.mode, eb.uid, eb.gid, ea.size, ea.digest)
        what = _what(ea, eb)
        if what:
            changed.append(FileChange(path, ea.size, eb.size, what))
        else:
            unchanged += 1
    return FileDiff(
        added={p: b[p] for p in sorted(b.keys() - a.keys())},
        removed={p: a[p] for p in sorted(a.keys() - b.keys())},
        changed=tuple(changed),
        unchanged=unchanged,
        partition=partition,
    )


@dataclass(frozen=True)
class ImageDiff:
    """Everything ``provision image diff A B`` says."""

    a: ImageVersion
    b: ImageVersion
    chunks: ChunkDiff
    packages: PackageDiff | None  # None: a version records no package list
    files: FileDiff | None = None  # None: not asked for, or no root file system found
    files_note: str = ""  # why there is no file list

    @property
    def disk_sha256(self) -> tuple[str | None, str | None]:
        """The sha256 of each raw disk as imported (provenance ``source``), when recorded."""

        def of(version: ImageVersion) -> str | None:
            source = version.index.provenance.get("source")
            return str(source["sha256"]) if isinstance(source, Mapping) and "sha256" in source else None

        return of(self.a), of(self.b)

    def to_dict(self) -> dict[str, Any]:
        sha_a, sha_b = self.disk_sha256
        return {
            "a": {
                "ref": self.a.ref,
                "digest": self.a.digest,
                "disk_size": self.a.index.disk_size,
                "disk_sha256": sha_a,
            },
            "b": {
                "ref": self.b.ref,
                "digest": self.b.digest,
                "disk_size": self.b.index.disk_size,
                "disk_sha256": sha_b,
            },
            "same_content": self.chunks.same_content,
            "chunks": self.chunks.to_dict(),
            "packages": None if self.packages is None else self.packages.to_dict(),
            "files": None if self.files is None else self.files.to_dict(),
            "files_note": self.files_note,
        }


def version_diff(
    a: ImageVersion,
    b: ImageVersion,
    files: FileDiff | None = None,
    files_note: str = "",
    sizes: Mapping[str, int] | None = None,
) -> ImageDiff:
    """Chunks and packages of two versions (files given by the caller, who read them; ``sizes``: the stored size
    of B's chunks by sha256)."""
    pa, pb = recorded_packages(a.index.provenance), recorded_packages(b.index.provenance)
    packages = None if pa is None or pb is None else package_diff(pa, pb)
    return ImageDiff(a, b, chunk_diff(a.index, b.index, sizes), packages, files, files_note)
