"""The image index (format 1) as it travels: the one reader used by the store and the agent, and the
canonical JSON whose sha256 names a version.

An index is a JSON object: ``format_version``, ``name``, ``created`` (UTC, ``YYYY-MM-DDTHH:MM:SSZ``),
``disk_size``, ``sector_size``, ``chunk_size``, ``chunks`` (``{"sha256": hex | null, "length": n}`` in disk
order, ``null`` for a hole), ``layout`` (the partition table, read by the store) and ``provenance``. The
root digest is the sha256 of the canonical JSON (sorted keys, no whitespace, UTF-8, no NaN); the store's
index file holds exactly those bytes, so the digest of the bytes served is the version's digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FORMAT_VERSION = 1
BLOCK = 4096  # chunk sizes are multiples of this
MAX_CHUNK_SIZE = 256 << 20  # a writer holds a few chunks in memory per worker
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SHA256 = re.compile(r"[0-9a-f]{64}")


class IndexFormatError(ValueError):
    """The data is not an image index of format 1; the message says what is wrong (callers add where)."""


def canonical_json(value: Any) -> bytes:
    """What the store hashes to name a version: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def is_sha256(text: str) -> bool:
    return SHA256.fullmatch(text) is not None


@dataclass(frozen=True)
class Chunk:
    """One chunk of the disk: its position, plain length and sha256 (``None`` for a hole)."""

    index: int
    offset: int
    length: int
    sha256: str | None

    @property
    def hole(self) -> bool:
        return self.sha256 is None


@dataclass(frozen=True)
class Index:
    """One version's index, checked: the chunk list covers the disk exactly, every hash is a sha256."""

    name: str
    digest: str  # sha256 of the canonical JSON
    created: str
    disk_size: int
    sector_size: int
    chunk_size: int
    chunks: tuple[Chunk, ...]
    layout: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def data_chunks(self) -> tuple[Chunk, ...]:
        return tuple(c for c in self.chunks if c.sha256 is not None)

    @property
    def holes(self) -> int:
        return sum(1 for c in self.chunks if c.sha256 is None)

    @property
    def mapped_bytes(self) -> int:
        """Plain bytes in non-hole chunks (what is sent and written)."""
        return sum(c.length for c in self.chunks if c.sha256 is not None)

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        """Parse an index file as served; its digest is the sha256 of these bytes. IndexFormatError if bad."""
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
            raise IndexFormatError(f"not JSON: {exc}") from None
        return _parsed(raw, hashlib.sha256(data).hexdigest())

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Index:
        """Parse an index already decoded; its digest is the sha256 of its canonical JSON."""
        try:
            digest = hashlib.sha256(canonical_json(raw)).hexdigest()
        except (TypeError, ValueError) as exc:
            raise IndexFormatError(f"not a JSON object: {exc}") from None
        return _parsed(raw, digest)


def _parsed(raw: Any, digest: str) -> Index:
    try:
        return _checked(raw, digest)
    except KeyError as exc:
        raise IndexFormatError(f"missing key {exc}") from None
    except IndexFormatError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        raise IndexFormatError(str(exc)) from None


def _checked(raw: Any, digest: str) -> Index:
    if not isinstance(raw, Mapping):
        raise IndexFormatError("the index is not a JSON object")
    if raw["format_version"] != FORMAT_VERSION:
        raise IndexFormatError(f"format_version {raw['format_version']!r}, this provision reads {FORMAT_VERSION}")
    name = raw["name"]
    if not isinstance(name, str) or not name:
        raise IndexFormatError("name is not a non-empty string")
    created = raw["created"]
    if not isinstance(created, str):
        raise IndexFormatError("created is not a string")
    datetime.strptime(created, CREATED_FORMAT)
    sizes = {k: raw[k] for k in ("disk_size", "sector_size", "chunk_size")}
    for key, value in sizes.items():
        if type(value) is not int or value <= 0:
            raise IndexFormatError(f"{key} {value!r} is not a positive integer")
    disk_size, sector_size, chunk_size = sizes["disk_size"], sizes["sector_size"], sizes["chunk_size"]
    if chunk_size % BLOCK or chunk_size > MAX_CHUNK_SIZE:
        raise IndexFormatError(f"chunk size {chunk_size} is not a multiple of {BLOCK} up to {MAX_CHUNK_SIZE}")
    if disk_size % sector_size:
        raise IndexFormatError(f"disk size {disk_size} is not a multiple of the sector size {sector_size}")
    layout, provenance = raw["layout"], raw["provenance"]
    for key, value in (("layout", layout), ("provenance", provenance)):
        if not isinstance(value, Mapping):
            raise IndexFormatError(f"{key} is not an object")
    listed = raw["chunks"]
    if not isinstance(listed, list):
        raise IndexFormatError("chunks is not a list")
    count = -(-disk_size // chunk_size)
    if len(listed) != count:
        raise IndexFormatError(f"{len(listed)} chunks listed, a disk of {disk_size} bytes has {count}")
    chunks = []
    for i, entry in enumerate(listed):
        sha, length = entry["sha256"], entry["length"]
        want = min(chunk_size, disk_size - i * chunk_size)
        if type(length) is not int or length != want:
            raise IndexFormatError(f"chunk {i}: length {length!r}, expected {want}")
        if sha is not None and not (isinstance(sha, str) and is_sha256(sha)):
            raise IndexFormatError(f"chunk {i}: {str(sha)[:80]!r} is not a sha256 hex digest or null")
        chunks.append(Chunk(i, i * chunk_size, length, sha))
    return Index(name, digest, created, disk_size, sector_size, chunk_size, tuple(chunks), layout, provenance)
