"""The image index as the agent reads it: stdlib JSON only, checked before anything is written.

The server's ``provision.images.index`` is the reference (format 1): ``disk_size``, ``sector_size``,
``chunk_size`` and ``chunks`` (``{"sha256": hex | null, "length": n}`` in disk order, ``null`` for a hole).
The agent needs only those, the name and the root digest: the sha256 of the index file as served (the
canonical JSON), or of the canonical JSON of a dict it was handed. The partition layout and provenance are
not read here (the grow step reads the layout later).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provision.agent.errors import IndexInvalid

FORMAT_VERSION = 1
BLOCK = 4096  # chunk sizes are multiples of this
MAX_CHUNK_SIZE = 256 << 20  # as the store: a worker holds about three chunks in memory
_SHA256 = re.compile(r"[0-9a-f]{64}")


def canonical_json(value: Any) -> bytes:
    """What the store hashes to name a version: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


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
class AgentIndex:
    """What the writer needs of one image version."""

    name: str
    digest: str
    disk_size: int
    sector_size: int
    chunk_size: int
    chunks: tuple[Chunk, ...]

    @property
    def data_chunks(self) -> tuple[Chunk, ...]:
        return tuple(c for c in self.chunks if c.sha256 is not None)

    @property
    def holes(self) -> int:
        return sum(1 for c in self.chunks if c.sha256 is None)

    @property
    def mapped_bytes(self) -> int:
        return sum(c.length for c in self.chunks if c.sha256 is not None)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "index") -> AgentIndex:
        """Parse an index file as served; its digest is the sha256 of these bytes."""
        try:
            raw = json.loads(data)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise IndexInvalid(f"{source}: not JSON: {exc}", source=source) from None
        return cls._parse(raw, hashlib.sha256(data).hexdigest(), source)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "index") -> AgentIndex:
        """Parse an index already decoded; its digest is the sha256 of its canonical JSON."""
        try:
            digest = hashlib.sha256(canonical_json(raw)).hexdigest()
        except (TypeError, ValueError) as exc:
            raise IndexInvalid(f"{source}: not a JSON object: {exc}", source=source) from None
        return cls._parse(raw, digest, source)

    @classmethod
    def _parse(cls, raw: Any, digest: str, source: str) -> AgentIndex:
        try:
            return cls._checked(raw, digest)
        except KeyError as exc:
            raise IndexInvalid(f"{source}: not an image index: missing key {exc}", source=source) from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise IndexInvalid(f"{source}: not an image index: {exc}", source=source) from None

    @classmethod
    def _checked(cls, raw: Any, digest: str) -> AgentIndex:
        if not isinstance(raw, Mapping):
            raise TypeError("the index is not a JSON object")
        if raw["format_version"] != FORMAT_VERSION:
            raise ValueError(f"format_version {raw['format_version']!r}, this agent reads {FORMAT_VERSION}")
        name = raw["name"]
        if not isinstance(name, str) or not name:
            raise ValueError("name is not a non-empty string")
        sizes = {k: raw[k] for k in ("disk_size", "sector_size", "chunk_size")}
        for key, value in sizes.items():
            if type(value) is not int or value <= 0:
                raise ValueError(f"{key} {value!r} is not a positive integer")
        disk_size, sector_size, chunk_size = sizes["disk_size"], sizes["sector_size"], sizes["chunk_size"]
        if chunk_size % BLOCK or chunk_size > MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} is not a multiple of {BLOCK} up to {MAX_CHUNK_SIZE}")
        if disk_size % sector_size:
            raise ValueError(f"disk size {disk_size} is not a multiple of the sector size {sector_size}")
        listed = raw["chunks"]
        if not isinstance(listed, list):
            raise TypeError("chunks is not a list")
        count = -(-disk_size // chunk_size)
        if len(listed) != count:
            raise ValueError(f"{len(listed)} chunks listed, a disk of {disk_size} bytes has {count}")
        chunks = []
        for i, entry in enumerate(listed):
            sha, length = entry["sha256"], entry["length"]
            want = min(chunk_size, disk_size - i * chunk_size)
            if type(length) is not int or length != want:
                raise ValueError(f"chunk {i}: length {length!r}, expected {want}")
            if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
                raise ValueError(f"chunk {i}: {str(sha)[:80]!r} is not a sha256 hex digest or null")
            chunks.append(Chunk(i, i * chunk_size, length, sha))
        return cls(name, digest, disk_size, sector_size, chunk_size, tuple(chunks))
