"""The image index as the agent reads it: the wire's one reader (``provision.wire.index``), its errors turned
into the writer's ``IndexInvalid`` naming where the index came from. Checked before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provision.agent.errors import IndexInvalid
from provision.wire.index import Chunk, Index, IndexFormatError, canonical_json

__all__ = ["Chunk", "Index", "canonical_json", "read_index"]


def read_index(data: bytes | Mapping[str, Any], *, source: str = "index") -> Index:
    """The index in ``data``: the file's bytes as served (digest: their sha256) or an already decoded object
    (digest: the sha256 of its canonical JSON). IndexInvalid names ``source`` and what is wrong."""
    try:
        return Index.from_bytes(data) if isinstance(data, bytes) else Index.from_dict(data)
    except IndexFormatError as exc:
        raise IndexInvalid(f"{source}: not an image index: {exc}", source=source) from None
