"""Issue 12, defect 4, over HTTP: ``/chunks/<sha>`` and ``disk.img.zst`` send only checked frames read without
following a symlink, and a damaged bmap cache is rebuilt (a real aiohttp server on 127.0.0.1, requests)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import zstandard

from provision.images import ImageStore, ImageVersion
from provision.web.images import image_app
from tests.support.images import CHUNK, DAMAGES, MiB, check_bmap, damage, make_disk, serve, unzstd

TIMEOUT = 10


@dataclass
class Site:
    url: str
    store: ImageStore
    version: ImageVersion
    raw: bytes
    outside: Path

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=TIMEOUT)

    def sha(self, i: int) -> str:
        sha = self.version.index.chunks[i].sha256
        assert sha is not None
        return sha


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    raw = make_disk(tmp_path / "d.img", 4 * MiB, [(20 * CHUNK, 4 * CHUNK)], seed=7)
    store = ImageStore(tmp_path / "store")
    version = store.import_raw(raw, "educ", chunk_size=CHUNK)
    store.frames.racy_ns = 0  # files written just now are recorded too (the damage moves their key anyway)
    with serve(image_app(store)) as url:
        yield Site(url, store, version, raw.read_bytes(), tmp_path / "outside")


def test_defect4_chunk_symlinked_to_etc_passwd_is_refused(site: Site) -> None:
    fake = hashlib.sha256(b"passwd").hexdigest()
    path = site.store.chunks.path(fake)
    path.parent.mkdir(exist_ok=True)
    path.symlink_to("/etc/passwd")
    response = site.get(f"/chunks/{fake}")
    assert response.status_code == 500 and b"root:" not in response.content
    assert response.json()["error"].startswith("image store problem:") and "symlink" in response.json()["error"]


def test_defect4_chunk_folder_symlinked_out_of_the_store_is_refused(site: Site) -> None:
    sha = site.sha(21)
    folder = site.store.chunks.path(sha).parent
    copy = site.outside / folder.name
    copy.mkdir(parents=True)
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())  # the same, right frames: only the symlink is wrong
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    folder.symlink_to(copy)
    response = site.get(f"/chunks/{sha}")
    assert response.status_code == 500 and "symlink" in response.json()["error"]
    assert site.get("/images/educ/current/disk.img.zst").status_code == 500


@pytest.mark.parametrize("kind", DAMAGES)
def test_defect4_chunk_route_refuses_a_damaged_chunk(site: Site, kind: str) -> None:
    sha = site.sha(21)
    assert site.get(f"/chunks/{sha}").status_code == 200  # served (and recorded good) before the damage
    damage(site.store, sha, kind, site.outside)
    for _ in range(2):  # the second time from the record of the bad file
        response = site.get(f"/chunks/{sha}")
        assert response.status_code == 500, kind
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"].startswith("image store problem:") and sha in response.json()["error"]
    assert site.get(f"/chunks/{site.sha(22)}").status_code == 200  # the others still go out


@pytest.mark.parametrize("kind", DAMAGES)
def test_defect4_disk_zst_refuses_a_damaged_chunk_before_any_byte(site: Site, kind: str) -> None:
    assert unzstd(site.get("/images/educ/current/disk.img.zst").content) == site.raw
    sha = site.sha(21)
    damage(site.store, sha, kind, site.outside)
    response = site.get("/images/educ/current/disk.img.zst")
    assert response.status_code == 500, kind
    error = response.json()["error"]
    assert error.startswith("image store problem:") and f"chunk 21 at offset {21 * CHUNK}" in error and sha in error


def test_defect4_random_bytes_in_the_bmap_cache_are_rebuilt(site: Site) -> None:
    path = site.store.bmap_path("educ", site.version.digest)
    good = path.read_text()
    for junk in (os.urandom(4096), good[: len(good) // 3].encode(), b""):
        path.write_bytes(junk)
        response = site.get(f"/images/educ/{site.version.label}/disk.bmap")
        assert response.status_code == 200 and response.text == good
        check_bmap(response.text, site.raw)
        assert path.read_text() == good


def test_defect4_a_chunk_is_checked_once_then_sent_from_the_record(site: Site) -> None:
    sha = site.sha(22)
    before = site.store.frames.checks
    bodies = [site.get(f"/chunks/{sha}") for _ in range(3)]
    assert site.store.frames.checks == before + 1
    for response in bodies:
        assert response.status_code == 200 and response.headers["ETag"] == f'"{sha}"'
        assert int(response.headers["Content-Length"]) == len(response.content)
        assert hashlib.sha256(zstandard.ZstdDecompressor().decompress(response.content)).hexdigest() == sha
    head = requests.head(f"{site.url}/chunks/{sha}", timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(bodies[0].content)
