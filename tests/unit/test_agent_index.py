"""The agent's own index parser: the store's index files, their digest, strict refusal of bad ones, and
an import of provision.agent that pulls nothing but the standard library, requests and zstandard."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provision.agent import IndexInvalid, read_index
from provision.agent.index import canonical_json
from provision.images import ImageStore
from provision.images.index import FORMAT_VERSION
from tests.support.agent import CHUNK, build_image, random_disk
from tests.support.images import MiB, make_disk


def test_reads_a_store_index_with_its_digest(tmp_path: Path) -> None:
    raw = make_disk(tmp_path / "d.img", 3 * MiB + 1536, [(MiB, 5 * CHUNK), (3 * MiB, 1000)], seed=4)
    store = ImageStore(tmp_path / "store")
    version = store.import_raw(raw, "educ", chunk_size=CHUNK, created=datetime(2026, 1, 2, tzinfo=UTC))
    data = store.index_path("educ", version.digest).read_bytes()
    index = read_index(data)
    assert index.digest == version.digest and index.name == "educ"
    assert index.disk_size == version.index.disk_size and index.chunk_size == CHUNK
    assert [c.sha256 for c in index.chunks] == [c.sha256 for c in version.index.chunks]
    assert [c.offset for c in index.chunks] == [version.index.offset(i) for i in range(len(index.chunks))]
    assert index.chunks[-1].length == 1536 and index.holes == version.index.holes
    assert index.mapped_bytes == version.index.mapped_bytes
    assert read_index(json.loads(data)).digest == version.digest
    assert FORMAT_VERSION == 1


def test_from_dict_digest_is_the_canonical_json() -> None:
    image = build_image(random_disk(4 * CHUNK, [0, 2]))
    assert read_index(image.index).digest == read_index(canonical_json(image.index)).digest


def _broken(change: str) -> dict[str, object]:
    raw = copy.deepcopy(build_image(random_disk(3 * CHUNK + 512, [0, 3])).index)
    chunks = raw["chunks"]
    assert isinstance(chunks, list)
    match change:
        case "version":
            raw["format_version"] = 2
        case "missing":
            del raw["chunk_size"]
        case "count":
            chunks.pop()
        case "length":
            chunks[1]["length"] = CHUNK - 512
        case "last":
            chunks[-1]["length"] = CHUNK
        case "sha":
            chunks[0]["sha256"] = "ABC"
        case "chunk_size":
            raw["chunk_size"] = 1000
        case "huge":
            raw["chunk_size"] = 512 << 20
        case "sectors":
            raw["disk_size"] = 3 * CHUNK + 100
        case "negative":
            raw["disk_size"] = -1
        case "bool":
            raw["sector_size"] = True
        case "name":
            raw["name"] = ""
        case "chunks":
            raw["chunks"] = {"0": None}
    return raw


@pytest.mark.parametrize(
    "change",
    ["version", "missing", "count", "length", "last", "sha", "chunk_size", "huge", "sectors", "negative", "bool",
     "name", "chunks"],
)  # fmt: skip
def test_refuses_a_bad_index(change: str) -> None:
    with pytest.raises(IndexInvalid) as exc:
        read_index(_broken(change), source="http://s/index.json")
    assert "http://s/index.json" in str(exc.value)


@pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b"\xff\xfe", b'"text"', b"null"])
def test_refuses_what_is_not_an_index(data: bytes) -> None:
    with pytest.raises(IndexInvalid):
        read_index(data)


def test_agent_imports_only_stdlib_requests_and_zstandard() -> None:
    """The agent runs in the live Linux: nothing else of provision's dependencies may be pulled in, and of
    provision only the bottom layer it shares with the server (errors, the MAC type, the wire contract)."""
    code = "import sys, provision.agent, provision.agent.writer\nprint(' '.join(sorted(m for m in sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    forbidden = {"aiohttp", "pydantic", "yaml", "jinja2", "paramiko", "tftpy", "hypothesis"}
    assert not forbidden & {m.split(".")[0] for m in out}
    ours = {m for m in out if m.startswith("provision.")}
    allowed = {"provision.errors", "provision.macaddr", "provision.wire"}
    assert ours <= allowed | {m for m in ours if m.startswith(("provision.agent", "provision.wire."))}
