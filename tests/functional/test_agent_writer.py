"""The agent writer against provision's real HTTP: aiohttp on 127.0.0.1 (port 0) in a thread, or
``python -m provision serve`` in a process the tests kill; targets are sparse files (and a loop device).

4 agents at once, all verified and byte-identical to the raw disk; a chunk corrupted on the wire (re-fetched,
never written); a connection cut mid-body; the server killed mid-write (the run rides it out, or fails
retryable and the next run resumes); a chunk the server does not have (fatal, with the URL); and never a
report for a disk that is not what the image says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import zstandard
from aiohttp import web

from provision.agent import (
    ChunkCorrupt,
    FetchFailed,
    HttpRefused,
    RetryPolicy,
    WriteReport,
    write_image,
)
from provision.agent.fetch import HttpResponse
from provision.images import ImageStore, ImageVersion
from provision.web.images import image_app
from tests.support.agent import RecordingTarget
from tests.support.chunk_server import SIZE, Server, build_store, free_port, target_sha
from tests.support.files import sha256_file, sparse_file
from tests.support.images import MiB, serve

QUICK = RetryPolicy(deadline=10, initial_delay=0.02, max_delay=0.5, connect_timeout=2, read_timeout=10)


@dataclass
class Faults:
    """Scripted faults of the chunk route: sha256 -> what the next GETs get ("flip": one byte of the plain
    chunk flipped, sent as a valid frame; "garbage": a byte of the frame flipped; "cut": half the body,
    then the connection closes)."""

    plan: dict[str, list[str]] = field(default_factory=dict)
    always: dict[str, str] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, digest: str) -> str | None:
        with self.lock:
            self.served.append(digest)
            if digest in self.always:
                return self.always[digest]
            queue = self.plan.get(digest)
            return queue.pop(0) if queue else None


def fault_middleware(store: ImageStore, faults: Faults) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        digest = request.match_info.get("sha256", "")
        kind = faults.take(digest) if request.path.startswith("/chunks/") else None
        if kind is None:
            return await handler(request)
        frame = store.chunks.path(digest).read_bytes()
        if kind == "flip":
            plain = bytearray(zstandard.ZstdDecompressor().decompress(frame))
            plain[len(plain) // 3] ^= 0x01
            body = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(plain))
            return web.Response(body=body, content_type="application/zstd")
        if kind == "garbage":
            flipped = bytearray(frame)
            flipped[len(flipped) // 2] ^= 0x40
            return web.Response(body=bytes(flipped), content_type="application/zstd")
        assert kind == "cut", kind
        response = web.StreamResponse(headers={"Content-Type": "application/zstd"})
        response.content_length = len(frame)
        await response.prepare(request)
        await response.write(frame[: len(frame) // 2])
        assert request.transport is not None
        request.transport.abort()  # the connection drops mid-body
        return response

    return middleware


@dataclass
class Site:
    url: str
    store: ImageStore
    version: ImageVersion
    raw: Path
    raw_sha: str
    faults: Faults

    @property
    def index_path(self) -> str:
        return f"/images/educ/{self.version.label}/index.json"

    def data_digests(self) -> list[str]:
        return [c.sha256 for c in self.version.index.chunks if c.sha256 is not None]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("agent-web")
    store, version, raw = build_store(tmp)
    faults = Faults()
    app = image_app(store, [fault_middleware(store, faults)])
    with serve(app) as url:
        yield Site(url, store, version, raw, sha256_file(raw), faults)
    faults.plan.clear()


def check_written(report: WriteReport, site: Site, path: Path) -> None:
    assert report.ok and report.digest == site.version.digest
    assert report.verified == len(site.data_digests()) and report.holes_verified == report.holes
    assert target_sha(path) == site.raw_sha


def test_four_agents_at_once(site: Site, tmp_path: Path) -> None:
    targets = [sparse_file(tmp_path / f"pc{i}.img", SIZE + i * MiB) for i in range(4)]

    def agent(path: Path) -> WriteReport:
        return write_image(site.url, site.index_path, path, workers=4, retry=QUICK, log_id=path.stem,
                           expected_digest=site.version.digest)  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(agent, targets))
    for report, path in zip(reports, targets, strict=True):
        check_written(report, site, path)
        assert report.fetched == len(site.data_digests()) and report.skipped == 0
        assert report.bytes_fetched == site.store.stored_bytes(site.version)
        assert report.failure_count == 0


@pytest.mark.parametrize("kind", ["flip", "garbage"])
def test_a_chunk_corrupted_on_the_wire_is_fetched_again_never_written(site: Site, tmp_path: Path, kind: str) -> None:
    victim = site.data_digests()[7]
    site.faults.plan[victim] = [kind]
    before = site.faults.served.count(victim)
    path = sparse_file(tmp_path / "pc.img", SIZE)
    with RecordingTarget.open(path) as target:
        report = write_image(site.url, site.index_path, target, retry=QUICK)
    check_written(report, site, path)
    chunks = site.version.index.chunks
    expected = {site.version.index.offset(i): c.sha256 for i, c in enumerate(chunks) if c.sha256 is not None}
    assert sorted(target.writes) == sorted(expected.items())  # each write was the right bytes, once
    victim_index = next(i for i, c in enumerate(chunks) if c.sha256 == victim)
    assert [(f.kind, f.chunk) for f in report.failures] == [("corrupt", victim_index)]
    assert site.faults.served.count(victim) - before == 2


def test_a_chunk_always_corrupt_fails_and_nothing_bad_is_written(site: Site, tmp_path: Path) -> None:
    victim = site.data_digests()[3]
    site.faults.always[victim] = "flip"
    path = sparse_file(tmp_path / "pc.img", SIZE)
    try:
        with RecordingTarget.open(path) as target, pytest.raises(ChunkCorrupt) as exc:
            write_image(site.url, site.index_path, target, retry=QUICK, workers=2)
    finally:
        del site.faults.always[victim]
    assert exc.value.expected == victim and exc.value.url == f"{site.url}/chunks/{victim}"
    assert all(digest == victim or digest != exc.value.actual for _, digest in target.writes)
    assert exc.value.offset not in {offset for offset, _ in target.writes}
    assert target_sha(path) != site.raw_sha  # no report, and the disk is indeed not the image


def test_a_connection_cut_mid_body(site: Site, tmp_path: Path) -> None:
    victims = site.data_digests()[10:13]
    for digest in victims:
        site.faults.plan[digest] = ["cut"]
    path = sparse_file(tmp_path / "pc.img", SIZE)
    report = write_image(site.url, site.index_path, path, retry=QUICK)
    check_written(report, site, path)
    assert {f.kind for f in report.failures} == {"transient"} and report.failure_count >= 3


def test_a_chunk_the_server_does_not_have_is_fatal(tmp_path: Path) -> None:
    store, version, _ = build_store(tmp_path)
    position, missing = next((i, c) for i, c in enumerate(version.index.chunks) if c.sha256 and i > 16)
    assert missing.sha256 is not None
    store.chunks.path(missing.sha256).unlink()
    app = image_app(store)
    with serve(app) as url:
        with pytest.raises(HttpRefused) as exc:
            write_image(url, f"{url}/images/educ/{version.digest}/index.json", sparse_file(tmp_path / "pc.img", SIZE))
        with pytest.raises(HttpRefused) as no_image:
            write_image(url, "/images/other/current/index.json", sparse_file(tmp_path / "pc.img", SIZE))
    assert exc.value.url == f"{url}/chunks/{missing.sha256}" and exc.value.status == 404
    assert exc.value.chunk == position and exc.value.offset == version.index.offset(position)
    assert no_image.value.status == 404 and no_image.value.chunk is None


# --- provision serve in a process the tests kill ---------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, ImageVersion, Path]]:
    _, version, raw = build_store(tmp_path)
    srv = Server(tmp_path, free_port())
    srv.start()
    try:
        yield srv, version, raw
    finally:
        srv.kill()


class Tripwire:
    """A real requests session that runs ``action`` just before the ``at``-th chunk GET."""

    def __init__(self, at: int, action: Callable[[], None]) -> None:
        self.session = requests.Session()
        self.at, self.action = at, action
        self.chunk_gets = 0
        self.lock = threading.Lock()

    def get(self, url: str, *, timeout: tuple[float, float], stream: bool) -> HttpResponse:
        if "/chunks/" in url:
            with self.lock:
                self.chunk_gets += 1
                if self.chunk_gets == self.at:
                    self.action()
        return self.session.get(url, timeout=timeout, stream=stream)


def test_server_killed_mid_write_and_restarted_the_run_rides_it_out(
    server: tuple[Server, ImageVersion, Path], tmp_path: Path
) -> None:
    srv, version, raw = server

    def kill_and_restart_later() -> None:
        srv.kill()
        threading.Timer(1.0, srv.start).start()

    session = Tripwire(15, kill_and_restart_later)
    path = sparse_file(tmp_path / "pc.img", SIZE)
    report = write_image(srv.url, f"/images/educ/{version.digest[:12]}/index.json", path, session=session,
                         retry=RetryPolicy(deadline=60, initial_delay=0.05, max_delay=0.5))  # fmt: skip
    session.session.close()
    assert report.ok and report.digest == version.digest and target_sha(path) == sha256_file(raw)
    assert report.failure_count >= 1 and {f.kind for f in report.failures} == {"transient"}
    assert report.fetched == len([c for c in version.index.chunks if c.sha256])


def test_server_killed_the_run_fails_retryable_and_the_next_one_resumes(
    server: tuple[Server, ImageVersion, Path], tmp_path: Path
) -> None:
    srv, version, raw = server
    data = len([c for c in version.index.chunks if c.sha256])
    session = Tripwire(20, srv.kill)
    path = sparse_file(tmp_path / "pc.img", SIZE)
    index = f"/images/educ/{version.digest}/index.json"
    with pytest.raises(FetchFailed) as exc:
        write_image(srv.url, index, path, session=session, workers=2,
                    retry=RetryPolicy(deadline=1.0, initial_delay=0.05, max_delay=0.2))  # fmt: skip
    session.session.close()
    assert exc.value.retryable and exc.value.url.startswith(f"{srv.url}/chunks/")
    assert target_sha(path) != sha256_file(raw)
    srv.start()
    report = write_image(srv.url, index, path, retry=QUICK)
    assert report.ok and target_sha(path) == sha256_file(raw)
    assert report.skipped >= 15 and report.fetched == data - report.skipped and report.fetched > 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("losetup") is None, reason="needs root and losetup")
@pytest.mark.parametrize("sector", [512, 4096])
def test_a_loop_device_uses_o_direct_and_blkzeroout(site: Site, tmp_path: Path, sector: int) -> None:
    """With 4096-byte sectors the image's last chunk (1536 bytes) is not whole blocks: it goes buffered."""
    backing = tmp_path / "backing.img"
    backing.write_bytes(os.urandom(SIZE + MiB))  # an old disk full of data
    argv = ["losetup", "-f", "--show", "--sector-size", str(sector), str(backing)]
    attach = subprocess.run(argv, capture_output=True, text=True, check=False)
    if attach.returncode != 0:
        pytest.skip(f"no loop device: {attach.stderr.strip()}")
    device = Path(attach.stdout.strip())
    try:
        report = write_image(site.url, site.index_path, device, retry=QUICK, wipe="zero")
        assert (report.target_kind, report.io_mode, report.readback) == ("block", "O_DIRECT", "O_DIRECT")
        assert report.wipe_method in ("BLKZEROOUT", "write-zeros")
        check_written(report, site, device)
        again = write_image(site.url, site.index_path, device, retry=QUICK, wipe="discard")
        assert again.ok and again.fetched == 0 and again.skipped == report.fetched
        assert again.wipe_method in ("BLKDISCARD", "unsupported")
    finally:
        subprocess.run(["losetup", "-d", str(device)], check=False)
