"""A version of an image: its immutable index, the canonical JSON that names it, and references to it.

The index format, its one reader and the canonical JSON are the wire contract's (``provision.wire.index``),
shared with the agent; here the store adds the typed partition layout and writes new indexes. The root digest
is the sha256 of the canonical JSON of the index (sorted keys, no whitespace, UTF-8); the index file stores
exactly those bytes, so ``sha256sum versions/<digest>.json`` checks it. A version is
referred to as ``NAME`` (its current version), ``NAME@current``, ``NAME@<label>`` where the label is
``YYYYMMDD-HHMMSS-<digest[:12]>`` (creation time, UTC), or ``NAME@<digest prefix of 8 to 64 hex>``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from provision.images.errors import CorruptImage, ImageError
from provision.images.partitions import PartitionTable
from provision.wire.index import (
    CREATED_FORMAT,
    FORMAT_VERSION,
    Index,
    IndexFormatError,
    canonical_json,
)

__all__ = ["CURRENT", "FORMAT_VERSION", "ChunkRef", "ImageIndex", "ImageVersion", "canonical_json"]
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
LABEL_RE = re.compile(r"(\d{8})-(\d{6})-([0-9a-f]{12})")
PREFIX_RE = re.compile(r"[0-9a-f]{8,64}")
CURRENT = "current"
_CREATED_FMT = CREATED_FORMAT


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ImageError(
            f"bad image name {name[:80]!r}: 1 to 63 of lower-case letters, digits, '.', '_', '-', "
            "starting with a letter or digit",
            name=name[:80],
        )
    return name


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME[@VERSION]`` -> (name, selector); the selector is ``current``, a label or a digest prefix."""
    name, _, selector = ref.partition("@")
    check_name(name)
    selector = selector or CURRENT
    if selector != CURRENT and not LABEL_RE.fullmatch(selector) and not PREFIX_RE.fullmatch(selector):
        raise ImageError(
            f"bad version {selector[:80]!r} in {ref[:120]!r}: use 'current', a label YYYYMMDD-HHMMSS-<12 hex> "
            "or at least 8 hex digits of the digest",
            ref=ref[:120],
        )
    return name, selector


def format_created(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_CREATED_FMT)


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of the disk in order: its plain sha256 (``None`` for a hole) and plain length."""

    sha256: str | None
    length: int

    @property
    def hole(self) -> bool:
        return self.sha256 is None


@dataclass(frozen=True)
class ImageIndex:
    """Everything needed to rebuild the raw disk from the chunk store, and where it came from."""

    name: str
    created: str  # UTC, YYYY-MM-DDTHH:MM:SSZ
    disk_size: int
    sector_size: int
    chunk_size: int
    layout: PartitionTable
    chunks: tuple[ChunkRef, ...]
    provenance: dict[str, Any] = field(default_factory=dict, hash=False)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "created": self.created,
            "disk_size": self.disk_size,
            "sector_size": self.sector_size,
            "chunk_size": self.chunk_size,
            "layout": self.layout.to_dict(),
            "chunks": [{"sha256": c.sha256, "length": c.length} for c in self.chunks],
            "provenance": self.provenance,
        }

    def canonical(self) -> bytes:
        return canonical_json(self.to_dict())

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def offset(self, i: int) -> int:
        return i * self.chunk_size

    @property
    def mapped_bytes(self) -> int:
        """Plain bytes in non-hole chunks (what is sent and written)."""
        return sum(c.length for c in self.chunks if c.sha256 is not None)

    @property
    def holes(self) -> int:
        return sum(1 for c in self.chunks if c.sha256 is None)

    def unique_chunks(self) -> dict[str, int]:
        """sha256 -> plain length of each distinct stored chunk."""
        return {c.sha256: c.length for c in self.chunks if c.sha256 is not None}

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str = "index") -> ImageIndex:
        """Parse and check an index file with the wire's reader. CorruptImage names what is wrong."""
        try:
            read = Index.from_bytes(data)
            layout = PartitionTable.from_dict(dict(read.layout))
            return cls(
                name=check_name(read.name),
                created=read.created,
                disk_size=read.disk_size,
                sector_size=read.sector_size,
                chunk_size=read.chunk_size,
                layout=layout,
                chunks=tuple(ChunkRef(c.sha256, c.length) for c in read.chunks),
                provenance=dict(read.provenance),
            )
        except (IndexFormatError, ValueError, TypeError, KeyError, AttributeError, ImageError) as exc:
            raise CorruptImage(f"{what}: not a valid image index: {exc}", path=what) from None


@dataclass(frozen=True)
class ImageVersion:
    """A stored version: image name, root digest and the parsed index."""

    name: str
    digest: str
    index: ImageIndex = field(compare=False, repr=False)

    @property
    def created(self) -> datetime:
        return datetime.strptime(self.index.created, _CREATED_FMT).replace(tzinfo=UTC)

    @property
    def label(self) -> str:
        return f"{self.created:%Y%m%d-%H%M%S}-{self.digest[:12]}"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.label}"

    def matches(self, selector: str) -> bool:
        """True if ``selector`` (a label or a digest prefix) names this version."""
        return selector == self.label if LABEL_RE.fullmatch(selector) else self.digest.startswith(selector)

    def summary(self) -> dict[str, Any]:
        """What ``image list`` shows: no chunk list."""
        ix = self.index
        return {
            "name": self.name,
            "digest": self.digest,
            "label": self.label,
            "ref": self.ref,
            "created": ix.created,
            "disk_size": ix.disk_size,
            "sector_size": ix.sector_size,
            "chunk_size": ix.chunk_size,
            "chunks": len(ix.chunks),
            "holes": ix.holes,
            "mapped_bytes": ix.mapped_bytes,
            "partition_table": ix.layout.label,
            "partitions": len(ix.layout.partitions),
            "provenance": ix.provenance,
        }
