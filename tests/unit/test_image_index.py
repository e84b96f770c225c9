"""The index: canonical JSON, a stable root digest, strict parsing, labels and references."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from provision.images import CorruptImage, ImageError, ImageIndex, ImageVersion
from provision.images.index import ChunkRef, canonical_json, parse_ref
from provision.images.partitions import Partition, PartitionTable

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()
LAYOUT = PartitionTable(
    "gpt",
    "78E51061-7311-48A3-82CE-6F447ED4D57B",
    512,
    (Partition(1, 2048, 2048, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI", "CD613E30-D8F1-4ADF-91B7-584A2265B1F5"),),
    34,
    8158,
)


def make_index(**changes: Any) -> ImageIndex:
    fields: dict[str, Any] = {
        "name": "educ",
        "created": "2025-11-27T07:31:00Z",
        "disk_size": 2 * 4096 * 1024 + 512,
        "sector_size": 512,
        "chunk_size": 4096 * 1024,
        "layout": LAYOUT,
        "chunks": (ChunkRef(SHA_A, 4096 * 1024), ChunkRef(None, 4096 * 1024), ChunkRef(SHA_B, 512)),
        "provenance": {"definition": "d" * 64, "packages": {"linux-image-amd64": "6.1.158-1"}, "note": "élève"},
    }
    fields.update(changes)
    return ImageIndex(**fields)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": None, "c": "é"}]}) == '{"a":[1,{"c":"é","d":null}],"b":1}'.encode()


def test_digest_is_stable() -> None:
    index = make_index()
    assert index.digest() == make_index().digest() == hashlib.sha256(index.canonical()).hexdigest()
    # the provenance's key order does not matter, its content does
    reordered = make_index(provenance=dict(reversed(list(make_index().provenance.items()))))
    assert reordered.digest() == index.digest()
    assert make_index(provenance={}).digest() != index.digest()
    assert make_index(created="2025-11-27T07:31:01Z").digest() != index.digest()


def test_digest_pinned() -> None:
    """The canonical form is a format: changing it renames every stored version."""
    data = make_index().canonical()
    assert data.startswith(b'{"chunk_size":4194304,"chunks":[{"length":4194304,"sha256":"ca978112')
    assert hashlib.sha256(data).hexdigest() == make_index().digest()
    assert make_index().digest() == "872fc5ec08846adcecdf976ded63ed3bc90f40753c25d5f0e45c8e4f7a9c5a5a"


def test_round_trip() -> None:
    index = make_index()
    assert ImageIndex.from_bytes(index.canonical()) == index
    assert index.mapped_bytes == 4096 * 1024 + 512 and index.holes == 1
    assert index.unique_chunks() == {SHA_A: 4096 * 1024, SHA_B: 512}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "format_version 2"),
        ({"disk_size": 512}, "chunks listed"),
        ({"chunks": [{"sha256": SHA_A, "length": 4096 * 1024}] * 3}, "chunk 2: length"),
        (
            {"chunks": [{"sha256": "XYZ", "length": 4096 * 1024}, *[{"sha256": None, "length": 4096 * 1024}] * 2]},
            "not a sha",
        ),
        ({"chunk_size": 1000}, "multiple of 4096"),
        ({"created": "yesterday"}, "does not match format"),
        ({"name": "../etc"}, "bad image name"),
        ({"provenance": []}, "provenance is not an object"),
    ],
)
def test_bad_index(change: dict[str, Any], message: str) -> None:
    raw = make_index().to_dict()
    raw.update(change)
    with pytest.raises(CorruptImage, match=message):
        ImageIndex.from_bytes(json.dumps(raw).encode(), what="x.json")


def test_not_json() -> None:
    with pytest.raises(CorruptImage, match=r"x\.json: not a valid image index"):
        ImageIndex.from_bytes(b"{", what="x.json")
    with pytest.raises(CorruptImage, match="missing key 'format_version'"):
        ImageIndex.from_bytes(b"{}", what="x.json")


def test_label_and_ref() -> None:
    index = make_index()
    version = ImageVersion("educ", index.digest(), index)
    assert version.created == datetime(2025, 11, 27, 7, 31, tzinfo=UTC)
    assert version.label == f"20251127-073100-{index.digest()[:12]}"
    assert version.ref == f"educ@{version.label}"
    assert version.matches(version.label) and version.matches(index.digest()[:8])
    assert not version.matches(f"20251127-073101-{index.digest()[:12]}")
    assert version.summary()["chunks"] == 3


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("educ", ("educ", "current")),
        ("educ@current", ("educ", "current")),
        ("educ-light@20251127-073100-0123456789ab", ("educ-light", "20251127-073100-0123456789ab")),
        ("educ@deadbeef", ("educ", "deadbeef")),
        ("educ@" + "a" * 64, ("educ", "a" * 64)),
    ],
)
def test_parse_ref(ref: str, expected: tuple[str, str]) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "Educ",
        "../educ",
        "educ/x",
        "educ@dead",
        "educ@DEADBEEF",
        "educ@latest",
        "educ@" + "a" * 65,
        "a" * 64 + "@current",
        "educ@@current",
    ],
)
def test_bad_ref(ref: str) -> None:
    with pytest.raises(ImageError):
        parse_ref(ref)
