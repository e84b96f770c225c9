"""Capture, the server side (docs/capture.md): ``provision serve`` as a process on 127.0.0.1 with the image ``educ``
(64 KiB chunks), a capture asked with ``provision image capture``, and a fake agent (``tests.support.capturing``)
driving the wire with ``requests``: offers, the uploads the server asks for, done. The version is published with
its provenance and exports back to the disk's bytes; a second capture of the same disk uploads nothing; a bad
upload is 422 and stores nothing; a capture short of a position or with a wrong sha256 fails and publishes nothing;
a token of another boot is 403."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard

from provision.facts import load_probe
from provision.images import ImageStore
from provision.store import Store
from provision.wire import paths
from tests.support.capturing import FakeCapture, disk_chunks
from tests.support.chunk_server import Server, build_store, free_port
from tests.support.images import CHUNK, unzstd
from tests.support.paths import REPO, SAMPLE_PROBE
from tests.support.wait import wait_for

RECIPE = "name: default\ndefault: true\nimage: educ\nwipe: zero\ngrow_root: false\n"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
MAC = "52:54:00:ca:97:01"
OTHER = "52:54:00:ca:97:02"


@dataclass
class Golden:
    server: Server
    store: ImageStore
    disk: bytes  # the golden PC's disk: educ's master with one chunk changed

    @property
    def url(self) -> str:
        return self.server.url

    def provision(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "provision", *argv, "--state-dir", str(self.server.state_dir)],
                              capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60, check=check)  # fmt: skip

    def token(self, mac: str) -> str:
        script = requests.get(f"{self.url}/boot/{mac}.ipxe", timeout=10).text
        return script.split("provision.token=")[1].split()[0]

    def hello(self, mac: str, token: str, *, capture: bool = True) -> dict[str, Any]:
        facts = {**load_probe(SAMPLE_PROBE).to_dict(), "mac": mac}
        facts["dmi"]["system"].update(vendor="LENOVO", product="ThinkCentre M720", serial="PF3ABC12")
        body = {"mac": mac, "token": token, "facts": facts, **({"capture": True} if capture else {})}
        response = requests.post(self.url + paths.HELLO, json=body, timeout=30)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def start(self, mac: str = MAC, name: str = "educ") -> FakeCapture:
        """A capture asked (the CLI) and the PC's network boot and hello: the fake agent of its capture run."""
        out = self.provision("image", "capture", mac, "--name", name).stdout
        assert f"power the PC on with network boot: it will be captured as {name}" in out, out
        token = self.token(mac)
        answer = self.hello(mac, token)
        assert answer["action"] == "capture", answer
        plan = answer["capture"]
        assert plan["image"] == name
        return FakeCapture(self.url, mac, token, answer["run"], plan["chunk_size"])

    def run(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = requests.get(self.url + paths.run(run_id), timeout=10).json()
        return found


@pytest.fixture
def golden(tmp_path: Path) -> Iterator[Golden]:
    store, _, raw = build_store(tmp_path)
    disk = bytearray(raw.read_bytes())
    disk[2 << 20 : (2 << 20) + 4096] = random.Random(7).randbytes(4096)  # a file added: one chunk changed
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(RECIPE)
    server = Server(tmp_path, free_port(), recipes=recipes)
    server.start()
    try:
        yield Golden(server, store, bytes(disk))
    finally:
        server.kill()


def test_a_capture_uploads_only_what_the_store_lacks_and_publishes_the_disk(golden: Golden, tmp_path: Path) -> None:
    before = golden.store.current("educ")
    assert before is not None
    agent = golden.start()
    assert agent.chunk_size == CHUNK  # the current version's: unchanged chunks are shared
    agent.offer(golden.disk)
    changed = hashlib.sha256(golden.disk[2 << 20 : (2 << 20) + CHUNK]).hexdigest()
    assert agent.asked == [changed]  # the store holds every other chunk
    assert golden.run(agent.run)["state"] == "capturing"
    assert agent.upload_asked(golden.disk) == 1
    response = agent.done(golden.disk)
    assert response.status_code == 200, response.text
    ended = response.json()
    assert ended["state"] == "done", ended
    version = golden.store.current("educ")
    assert version is not None and version.digest != before.digest
    run = golden.run(agent.run)
    assert (run["kind"], run["image"], run["label"], run["digest"]) == (
        "capture",
        "educ",
        version.label,
        version.digest,
    )
    assert run["captured"]["uploaded_chunks"] == 1 and run["captured"]["new_chunks"] == 1
    captured = version.index.provenance["captured"]
    assert (captured["mac"], captured["run"], captured["serial"]) == (MAC, agent.run, "GOLDEN-1")
    pc = ("PF3ABC12", "LENOVO", "ThinkCentre M720")
    assert (captured["system_serial"], captured["vendor"], captured["product"]) == pc
    assert captured["free_bytes"] == 1 << 20 and captured["filesystems"][0]["fs"] == "ext4"
    assert version.index.provenance["source"]["sha256"] == hashlib.sha256(golden.disk).hexdigest()
    assert [c.sha256 for c in version.index.chunks] == disk_chunks(golden.disk, CHUNK)
    assert version.index.layout == before.index.layout
    # the disk comes back from the store, checked
    assert golden.store.verify("educ").ok
    zst, _ = golden.store.export("educ", tmp_path / "out")
    assert unzstd(zst.read_bytes()) == golden.disk
    # the machine boots its local disk next: no capture again in a loop
    machine = next(m for m in requests.get(golden.url + paths.MACHINES, timeout=10).json() if m["mac"] == MAC)
    assert machine["state"] == "done"
    assert "local disk" in requests.get(f"{golden.url}/boot/{MAC}.ipxe", timeout=10).text
    assert any(
        e["kind"] == "captured" for e in requests.get(golden.url + f"/api/v1/machines/{MAC}/events", timeout=10).json()
    )
    text = golden.provision("runs", MAC).stdout
    assert f"captured as educ@{version.label}" in text, text
    assert "capture of the disk: 129 of 129 chunks offered, 1 uploaded (1 new)" in text, text
    page = {
        lang: requests.get(f"{golden.url}/machines/{MAC}", params={"lang": lang}, timeout=10) for lang in ("en", "fr")
    }
    assert "capture of the disk as" in page["en"].text and "capture du disque en tant que" in page["fr"].text
    # the same disk captured again, followed by --wait: nothing to upload, a new version of the same chunks
    argv = ["image", "capture", MAC, "--name", "educ", "--wait", "--timeout", "60", "--state-dir"]
    pipe = subprocess.PIPE
    waiting = subprocess.Popen([sys.executable, "-m", "provision", *argv, str(golden.server.state_dir)],
                               stdout=pipe, stderr=pipe, text=True, env=ENV, cwd=REPO)  # fmt: skip
    try:
        with Store(golden.server.state_dir / "provision.db") as store:
            assert wait_for(lambda: store.capture_request(MAC), 30, interval=0.1), "the CLI asked for no capture"
        token = golden.token(MAC)
        answer = golden.hello(MAC, token)
        assert golden.hello(MAC, token) == answer  # the same hello again: the same run and plan
        again = FakeCapture(golden.url, MAC, token, answer["run"], CHUNK)
        again.offer(golden.disk)
        assert again.asked == []
        assert again.done(golden.disk).json()["state"] == "done"
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, (out, err)
    second = golden.store.current("educ")
    assert second is not None and second.digest != version.digest
    assert second.index.chunks == version.index.chunks
    assert f"captured as educ@{second.label}" in out and "chunks: 129 in all, 0 new, 0 uploaded (0 bytes sent)" in out
    report = json.loads(golden.provision("report", "--json", "--from", "2000-01-01").stdout)
    assert (report["total"]["imaged"], report["total"]["runs_ended"]) == (0, 0)  # a golden PC is not refurbished


def test_a_bad_upload_is_refused_and_stores_nothing(golden: Golden) -> None:
    agent = golden.start()
    agent.offer(golden.disk)
    [sha] = agent.asked
    other = random.Random(1).randbytes(CHUNK)
    response = agent.upload(sha, other)  # a frame of other bytes under the asked sha256
    assert response.status_code == 422, response.text
    assert response.json()["found"] == hashlib.sha256(other).hexdigest() and response.json()["chunk"] == sha
    assert not golden.store.chunks.has(sha) and not golden.store.chunks.has(hashlib.sha256(other).hexdigest())
    garbage = agent.put(sha, b"not a zstd frame at all")
    assert garbage.status_code == 422 and "zstd" in garbage.json()["error"], garbage.text
    too_big = zstandard.ZstdCompressor().compress(bytes(2 * CHUNK))
    assert agent.put(sha, too_big).status_code == 422
    assert agent.put(sha, bytes(3 * CHUNK)).status_code == 413
    not_asked = hashlib.sha256(b"x").hexdigest()
    assert agent.upload(not_asked, b"x").status_code == 409
    # a token of another boot (another PC's) is refused on every call
    foreign = golden.token(OTHER)
    assert agent.put(sha, zstandard.ZstdCompressor().compress(other), token=foreign).status_code == 403
    # the token is checked before the body is read: a caller without one never has a chunk's size buffered
    assert agent.put(sha, bytes(3 * CHUNK), token=foreign).status_code == 403
    assert agent.put(sha, bytes(3 * CHUNK), token="x" * 32).status_code == 403
    forged = requests.post(golden.url + paths.run_capture_offer(agent.run),
                           json={"token": foreign, "disk_size": len(golden.disk), "first": 0, "chunks": [None]},
                           timeout=10)  # fmt: skip
    assert forged.status_code == 403
    assert not golden.store.chunks.has(sha)
    assert agent.upload_asked(golden.disk) == 1 and golden.store.chunks.has(sha)


def test_offers_come_in_order_and_a_retry_is_the_same_offer(golden: Golden) -> None:
    agent = golden.start()
    shas = disk_chunks(golden.disk, CHUNK)
    offer = {"disk_size": len(golden.disk), "first": 0, "chunks": shas[:8]}
    first = agent.post(paths.run_capture_offer(agent.run), offer)
    assert first.status_code == 200 and first.json()["offered"] == 8
    assert agent.post(paths.run_capture_offer(agent.run), offer).json() == {"missing": [], "offered": 8}  # a retry
    wrong = {**offer, "chunks": [hashlib.sha256(b"y").hexdigest(), *shas[1:8]]}
    assert agent.post(paths.run_capture_offer(agent.run), wrong).status_code == 409
    gap = {**offer, "first": 9}
    assert agent.post(paths.run_capture_offer(agent.run), gap).status_code == 409
    resized = {**offer, "disk_size": len(golden.disk) + 512}
    assert agent.post(paths.run_capture_offer(agent.run), resized).status_code == 409
    past = {**offer, "first": 8, "chunks": [None] * (len(shas) - 7)}
    assert agent.post(paths.run_capture_offer(agent.run), past).status_code == 409


@pytest.mark.parametrize("fault", ["missing position", "wrong sha256"])
def test_a_capture_that_does_not_make_the_disk_fails_and_publishes_nothing(golden: Golden, fault: str) -> None:
    before = golden.store.current("educ")
    assert before is not None
    agent = golden.start()
    positions = len(disk_chunks(golden.disk, CHUNK))
    agent.offer(golden.disk, upto=positions - 1 if fault == "missing position" else None)
    agent.upload_asked(golden.disk)
    response = agent.done(golden.disk, **({"sha256": "0" * 64} if fault == "wrong sha256" else {}))
    assert response.status_code == 200, response.text
    ended = response.json()
    assert ended["state"] == "failed", ended
    words = "capture stopped early" if fault == "missing position" else "the agent read " + "0" * 64
    assert words in ended["reason"], ended
    current = golden.store.current("educ")
    assert current is not None and current.digest == before.digest
    assert golden.store.digests("educ") == [before.digest]
    assert agent.done(golden.disk).json()["state"] == "failed"  # its answer again: the run has ended


def test_retention_during_a_capture_spares_its_uploads_and_the_version_is_published(golden: Golden) -> None:
    agent = golden.start()
    agent.offer(golden.disk)
    [sha] = agent.asked
    assert agent.upload_asked(golden.disk) == 1 and golden.store.chunks.has(sha)
    # the nightly retention runs meanwhile: the upload is named by no index yet, but the capture relies on it
    retained = golden.provision(
        "image", "retain", "educ", "--keep", "1", "--store", str(golden.server.store), check=False
    )
    assert retained.returncode == 0 and "0 chunks removed" in retained.stdout, (retained.stdout, retained.stderr)
    assert golden.store.chunks.has(sha)
    response = agent.done(golden.disk)
    assert response.status_code == 200 and response.json()["state"] == "done", response.text
    version = golden.store.current("educ")
    assert version is not None and sha in version.index.unique_chunks()
    assert golden.store.verify("educ").ok
    # a capture that fails leaves its uploads to the next sweep
    other = golden.disk[: 1 << 20] + random.Random(3).randbytes(CHUNK) + golden.disk[(1 << 20) + CHUNK :]
    again = golden.start()
    again.offer(other)
    [lost] = again.asked
    assert again.upload_asked(other) == 1
    failed = again.post(paths.run_report(again.run), {"ok": False, "reason": "the PC was switched off"})
    assert failed.json()["state"] == "failed", failed.text
    out = golden.provision("image", "retain", "educ", "--store", str(golden.server.store)).stdout  # keeps both
    assert "1 chunks removed" in out and not golden.store.chunks.has(lost) and golden.store.chunks.has(sha), out


def test_an_agent_that_cannot_capture_waits_and_a_report_ends_a_capture(golden: Golden) -> None:
    golden.provision("image", "capture", MAC, "--name", "golden")
    answer = golden.hello(MAC, golden.token(MAC), capture=False)
    assert answer["action"] == "wait" and "provision live build" in answer["reason"], answer
    agent = golden.start(name="golden")
    assert agent.chunk_size == 4 << 20  # a new image: the store's default
    report = {"digest": "0" * 64, "chunks": 1, "verified": 1, "read_back_ok": True, "bytes_written": 1,
              "seconds": 1.0, "mean_rate": 1.0}  # fmt: skip
    ok = agent.post(paths.run_report(agent.run), {"ok": True, "report": report})
    assert ok.status_code == 409 and "capture/done" in ok.json()["error"], ok.text
    failed = agent.post(paths.run_report(agent.run), {"ok": False, "reason": "disk unreadable at sector 12"})
    assert failed.status_code == 200 and failed.json()["state"] == "failed"
    assert "disk unreadable" in golden.run(agent.run)["reason"]
    assert golden.store.digests("golden") == []
    # the request stays after a failed capture: the golden PC is captured again, never imaged by its recipe
    out = golden.provision("image", "capture", MAC, "--cancel").stdout
    assert "capture as golden cancelled" in out, out
