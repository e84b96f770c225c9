"""The image routes on a real aiohttp server (127.0.0.1, port 0), fetched with requests."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import zstandard

from provision.images import ImageStore, ImageVersion
from provision.web.images import image_app
from provision.wire.byteranges import boundary_of, parse_multipart, range_header
from tests.support.images import CHUNK, MiB, check_bmap, make_disk, serve, unzstd

SIZE = 6 * MiB + 512
TIMEOUT = 10


@dataclass
class Served:
    url: str
    store: ImageStore
    version: ImageVersion
    old: ImageVersion
    raw: bytes

    def get(self, path: str, **kw: object) -> requests.Response:
        return requests.get(self.url + path, timeout=TIMEOUT, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("web")
    store = ImageStore(tmp / "store")
    old_raw = make_disk(tmp / "old.img", SIZE, [(2 * MiB, 3 * CHUNK)], seed=1)
    old = store.import_raw(old_raw, "educ", chunk_size=CHUNK, created=datetime(2025, 11, 26, tzinfo=UTC))
    raw = make_disk(tmp / "new.img", SIZE, [(2 * MiB, 5 * CHUNK), (5 * MiB, 100_000)], seed=2)
    version = store.import_raw(raw, "educ", chunk_size=CHUNK, created=datetime(2025, 11, 27, tzinfo=UTC))
    app = image_app(store)
    with serve(app) as url:
        yield Served(url, store, version, old, raw.read_bytes())


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """A GET with the path sent exactly as given (requests would normalise dot segments)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("version", ["current", "label", "prefix"])
def test_disk_zst_and_bmap(served: Served, version: str) -> None:
    ref = {"current": "current", "label": served.version.label, "prefix": served.version.digest[:10]}[version]
    response = served.get(f"/images/educ/{ref}/disk.img.zst")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zstd"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.headers["ETag"] == f'"{served.version.digest}"'
    assert unzstd(response.content) == served.raw
    bmap = served.get(f"/images/educ/{ref}/disk.bmap")
    assert bmap.status_code == 200 and bmap.headers["Content-Type"].startswith("application/xml")
    check_bmap(bmap.text, served.raw)
    cache = "no-cache" if version == "current" else "immutable"
    assert cache in response.headers["Cache-Control"] and cache in bmap.headers["Cache-Control"]


def test_old_version_by_label(served: Served) -> None:
    response = served.get(f"/images/educ/{served.old.label}/disk.img.zst")
    assert hashlib.sha256(unzstd(response.content)).hexdigest() == served.old.index.provenance["source"]["sha256"]


def test_head_disk_zst(served: Served) -> None:
    head = requests.head(f"{served.url}/images/educ/current/disk.img.zst", timeout=TIMEOUT)
    _, total = served.store.zst_parts(served.version)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == total and head.content == b""


def test_index_json(served: Served) -> None:
    response = served.get(f"/images/educ/{served.version.digest[:8]}/index.json")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert hashlib.sha256(response.content).hexdigest() == served.version.digest
    assert response.json()["chunk_size"] == CHUNK


def test_chunks(served: Served) -> None:
    index = served.get("/images/educ/current/index.json").json()
    shas = {c["sha256"] for c in index["chunks"] if c["sha256"]}
    assert len(shas) > 3
    plain = b""
    for i, c in enumerate(index["chunks"]):
        if c["sha256"] is None:
            plain += bytes(c["length"])
            continue
        response = served.get(f"/chunks/{c['sha256']}")
        assert response.status_code == 200, i
        assert response.headers["Content-Type"] == "application/zstd"
        data = zstandard.ZstdDecompressor().decompress(response.content)
        assert hashlib.sha256(data).hexdigest() == c["sha256"]
        plain += data
    assert plain == served.raw


def test_chunk_byte_ranges(served: Served) -> None:
    """A range is a 206 of exactly those bytes, several a multipart answer of exactly them (the multicast
    agent's repair); past the end a 416; other forms the whole frame."""
    sha = max(served.version.index.unique_chunks(), key=lambda s: served.store.chunks.path(s).stat().st_size)
    whole = served.get(f"/chunks/{sha}").content
    assert len(whole) > 3000
    for header, first, last in [("bytes=0-99", 0, 99), ("bytes=1400-2799", 1400, 2799),
                                (f"bytes=1000-{len(whole) + 50}", 1000, len(whole) - 1),
                                ("bytes=2000-", 2000, len(whole) - 1)]:  # fmt: skip
        response = served.get(f"/chunks/{sha}", headers={"Range": header})
        assert response.status_code == 206, header
        assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(whole)}"
        assert response.content == whole[first : last + 1], header
    past = served.get(f"/chunks/{sha}", headers={"Range": f"bytes={len(whole)}-"})
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(whole)}"
    for header in ("bytes=-100", "bytes=5-6,0-1", "items=0-1", "bytes=9-3", "bytes=0-10,5-20"):
        response = served.get(f"/chunks/{sha}", headers={"Range": header})
        assert (response.status_code, response.content) == (200, whole), header
    # several ranges (a frame missing scattered datagrams): one multipart/byteranges answer of exactly them
    ranges = [(0, 99), (1400, 2799), (len(whole) - 10, len(whole) - 1)]
    response = served.get(f"/chunks/{sha}", headers={"Range": range_header(ranges)})
    assert response.status_code == 206 and int(response.headers["Content-Length"]) == len(response.content)
    boundary = boundary_of(response.headers["Content-Type"])
    assert boundary is not None and "Content-Range" not in response.headers
    parts = parse_multipart(response.content, boundary, len(whole))
    assert parts == {a: whole[a : b + 1] for a, b in ranges}


def test_list(served: Served) -> None:
    [image] = served.get("/images").json()
    assert image["name"] == "educ" and image["current"]["digest"] == served.version.digest
    assert [v["label"] for v in image["versions"]] == [served.version.label, served.old.label]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/chunks/" + "0" * 64, 404),
        ("/chunks/" + "A" * 64, 400),
        ("/chunks/abc", 400),
        ("/chunks/" + "0" * 64 + ".zst", 400),
        ("/images/nope/current/disk.img.zst", 404),
        ("/images/educ/deadbeefdeadbeef/disk.bmap", 404),
        ("/images/educ/20200101-000000-000000000000/index.json", 404),
        ("/images/educ/latest/disk.bmap", 400),
        ("/images/EDUC/current/disk.bmap", 400),
    ],
)
def test_errors(served: Served, path: str, status: int) -> None:
    response = served.get(path)
    assert response.status_code == status
    assert "error" in response.json()


@pytest.mark.parametrize(
    "path",
    [
        "/images/../current/disk.bmap",
        "/images/%2e%2e/current/index.json",
        "/images/..%2f..%2fetc/current/index.json",
        "/images/educ/..%2f..%2fchunks/index.json",
        "/chunks/..%2f..%2flock",
        "/chunks/../images/educ/current",
        "/images/educ/current/../../../lock",
    ],
)
def test_path_traversal_refused(served: Served, path: str) -> None:
    status, body = raw_get(served.url, path)
    assert status in (400, 404), (path, status)
    assert served.store.root.name.encode() not in body


def test_missing_chunk_is_a_500_before_any_byte(served: Served, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    raw = make_disk(tmp_path / "d.img", 3 * MiB, [(MiB + 4096, 1000)], seed=3)
    version = store.import_raw(raw, "tiny", chunk_size=CHUNK)
    sha = next(c.sha256 for c in version.index.chunks if c.sha256)
    assert sha is not None
    store.chunks.path(sha).unlink()
    app = image_app(store)
    with serve(app) as url:
        response = requests.get(f"{url}/images/tiny/current/disk.img.zst", timeout=TIMEOUT)
    assert response.status_code == 500 and "missing" in response.json()["error"]
