"""Whole imaging runs: ``provision serve`` (a process on 127.0.0.1) and the agent (``python -m provision.agent``
processes, or the Agent in this process where a fault must be injected on the wire), files standing in for
disks, the sample probe of a QEMU PC.

Shown: 4 agents at once all done and byte-identical; the fault matrix — server killed and restarted
mid-write, a chunk corrupted on the wire, a chunk always corrupt, a connection cut, a target too small, two
candidate disks, a removable disk only, a wrong token — each ends in the right state with its reason, and
no disk that is not the image is ever recorded as verified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.agent.fetch import HttpResponse, RetryPolicy
from provision.agent.main import EXIT_DONE, EXIT_FAILED, AgentConfig, Outcome, run_agent
from provision.images import ImageVersion
from tests.support.chunk_server import SIZE, Server, build_store, free_port, target_sha
from tests.support.files import sha256_file, sparse_file
from tests.support.images import MiB
from tests.support.paths import REPO, SAMPLE_PROBE

RECIPE = "name: default\ndefault: true\nimage: educ\nwipe: zero\nhostname: lab-pc\ngrow_root: false\n"
QUICK = RetryPolicy(deadline=30, initial_delay=0.05, max_delay=0.5, connect_timeout=2, read_timeout=10)


@dataclass
class Site:
    server: Server
    version: ImageVersion
    raw_sha: str

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, mac: str) -> str:
        """Boot the machine: its iPXE script holds a fresh per-boot token."""
        script = requests.get(f"{self.url}/boot/{mac}.ipxe", timeout=5).text
        return script.split("provision.token=")[1].split()[0]

    def runs(self, mac: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = requests.get(f"{self.url}/api/v1/runs", params={"mac": mac}, timeout=5).json()
        return runs

    def events(self, mac: str, kind: str) -> list[dict[str, Any]]:
        events = requests.get(f"{self.url}/api/v1/machines/{mac}/events", timeout=5).json()
        return [e["detail"] for e in events if e["kind"] == kind]

    def machine(self, mac: str) -> dict[str, Any]:
        [machine] = [m for m in requests.get(f"{self.url}/api/v1/machines", timeout=5).json() if m["mac"] == mac]
        return dict(machine)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    _, version, raw = build_store(tmp_path)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(RECIPE)
    srv = Server(tmp_path, free_port(), recipes=recipes)
    srv.start()
    try:
        yield Site(srv, version, sha256_file(raw))
    finally:
        srv.kill()


def disks(folder: Path, *specs: tuple[str, int, dict[str, Any] | None]) -> Path:
    """A folder of files standing in for disks: (name, size, lsblk fields or None)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, size, meta in specs:
        sparse_file(folder / name, size)
        if meta is not None:
            (folder / f"{name}.json").write_text(json.dumps(meta))
    return folder


def agent_process(site: Site, mac: str, token: str, disk_dir: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "provision.agent", "--server", site.url, "--mac", mac, "--token", token,
            "--probe-dir", str(SAMPLE_PROBE), "--disks-from", str(disk_dir), "--once", "--no-grow", "--deadline", "30",
            "--fetch-deadline", "30", "--cmdline", os.devnull]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    assert last.startswith("PROVISION-AGENT-RESULT "), (out, err)
    return proc.returncode, last, err


def assert_never_verified(site: Site, mac: str) -> None:
    """No run of this machine is done, and no verification of it is complete."""
    for run in site.runs(mac):
        assert run["state"] != "done"
        assert not any(v["complete"] for v in run["verifications"]), run


def test_four_agents_at_once_all_done(site: Site, tmp_path: Path) -> None:
    macs = [f"52:54:00:aa:00:{i:02x}" for i in range(4)]
    folders = [disks(tmp_path / f"pc{i}", ("vda", SIZE + i * MiB, None)) for i in range(4)]
    procs = [agent_process(site, mac, site.token(mac), folder) for mac, folder in zip(macs, folders, strict=True)]
    for proc, mac, folder in zip(procs, macs, folders, strict=True):
        code, last, err = result(proc)
        assert code == EXIT_DONE and " done " in last, err
        assert target_sha(folder / "vda") == site.raw_sha
        [run] = site.runs(mac)
        assert (run["state"], run["digest"]) == ("done", site.version.digest)
        [verification] = run["verifications"]
        assert verification["complete"] and verification["read_back"] == "ok"
        data = len(site.version.index.chunks) - site.version.index.holes
        assert verification["chunks"] == verification["verified"] == data
        [write] = site.events(mac, "write")
        assert write["fetched"] + write["skipped"] == data and write["io_mode"]
        stages = {e["stage"] for e in site.events(mac, "progress")}
        assert stages <= {"writing", "verifying"} and stages
        assert "local disk" in requests.get(f"{site.url}/boot/{mac}.ipxe", timeout=5).text
    listed = subprocess.run(
        [sys.executable, "-m", "provision", "machines", "--json", "--state-dir", str(site.server.tmp / "state")],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    rows = {r["mac"]: r for r in json.loads(listed.stdout)}
    assert all((rows[m]["state"], rows[m]["verified_digest"]) == ("done", site.version.digest) for m in macs)


@pytest.mark.parametrize(
    ("specs", "needle"),
    [
        ([("vda", 2 * MiB, None)], "too small for the image"),
        ([("vda", SIZE, None), ("vdb", SIZE + MiB, None)], "several disks qualify"),
        ([("sdb", SIZE, {"rm": True, "tran": "usb"})], "removable"),
    ],
    ids=["target-too-small", "two-candidate-disks", "removable-only"],
)
def test_no_usable_disk_fails_the_run_with_the_reason(
    site: Site, tmp_path: Path, specs: list[tuple[str, int, dict[str, Any] | None]], needle: str
) -> None:
    mac = "52:54:00:aa:01:01"
    folder = disks(tmp_path / "pc", *specs)
    code, last, _ = result(agent_process(site, mac, site.token(mac), folder))
    assert code == EXIT_FAILED and needle in last
    [run] = site.runs(mac)
    assert run["state"] == "failed" and needle in run["reason"] and run["verifications"] == []
    machine = site.machine(mac)
    assert machine["state"] == "failed" and needle in machine["reason"]
    [failed] = site.events(mac, "run-failed")
    assert failed["error"]["type"] in ("NoTargetDisk", "AmbiguousTarget")
    for name, _, _ in specs:  # nothing was written: the sparse files hold no block
        assert (folder / name).stat().st_blocks == 0


def test_a_wrong_token_is_refused_and_nothing_runs(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:aa:01:02"
    site.token(mac)
    code, last, _ = result(agent_process(site, mac, "f" * 32, disks(tmp_path / "pc", ("vda", SIZE, None))))
    assert code == EXIT_FAILED and "wrong or expired boot token" in last
    assert site.runs(mac) == []


class WireFaults:
    """A real requests session whose chunk GETs can be tampered with: ``flip`` a byte of the body of the
    first GETs of one chunk, ``cut`` it (the body ends early), ``always`` corrupt one chunk, or run
    ``action`` before the ``at``-th chunk GET."""

    def __init__(self, digest: str = "", mode: str = "", times: int = 1) -> None:
        self.session = requests.Session()
        self.digest, self.mode, self.left = digest, mode, times
        self.lock = threading.Lock()
        self.at: tuple[int, Any] | None = None
        self.chunk_gets = 0

    def get(self, url: str, *, timeout: tuple[float, float], stream: bool) -> HttpResponse:
        tamper = False
        with self.lock:
            if "/chunks/" in url:
                self.chunk_gets += 1
                if self.at is not None and self.chunk_gets == self.at[0]:
                    self.at[1]()
                if self.digest and url.endswith(self.digest) and (self.mode == "always" or self.left > 0):
                    self.left -= 1
                    tamper = True
        response = self.session.get(url, timeout=timeout, stream=stream)
        if not tamper:
            return response
        body = response.content
        if self.mode == "cut":
            response.raw = _Cut(body[: len(body) // 2])
            setattr(response, "_content", False)  # noqa: B010 - make requests read the (cut) raw body again
            setattr(response, "_content_consumed", False)  # noqa: B010
        else:
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0x55
            response._content = bytes(flipped)
        return response

    def close(self) -> None:
        self.session.close()


class _Cut:
    """A body that ends early with a connection error, as a cut cable does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, amt: int, decode_content: bool = True) -> Iterator[bytes]:
        yield self.data
        raise requests.exceptions.ChunkedEncodingError("connection cut mid-body")

    def close(self) -> None:
        pass


def in_process(site: Site, tmp_path: Path, mac: str, wire: WireFaults, **over: Any) -> Outcome:
    cfg = AgentConfig(server=site.url, mac=mac, token=site.token(mac), probe_dir=SAMPLE_PROBE,
                      disks_from=disks(tmp_path / "pc", ("vda", SIZE, None)), once=True, hello_deadline=60,
                      retry=QUICK, **over)  # fmt: skip
    try:
        return run_agent(cfg, chunk_session=lambda workers: wire)
    finally:
        wire.close()


def data_digest(site: Site, n: int) -> str:
    return [c.sha256 for c in site.version.index.chunks if c.sha256 is not None][n] or ""


@pytest.mark.parametrize("mode", ["flip", "cut"])
def test_a_chunk_damaged_on_the_wire_is_fetched_again_and_the_run_is_done(
    site: Site, tmp_path: Path, mode: str
) -> None:
    mac = "52:54:00:aa:02:01"
    outcome = in_process(site, tmp_path, mac, WireFaults(data_digest(site, 3), mode, times=2))
    assert (outcome.code, outcome.state) == (EXIT_DONE, "done"), outcome
    assert target_sha(tmp_path / "pc" / "vda") == site.raw_sha
    [write] = site.events(mac, "write")
    kinds = {f["kind"] for f in write["failures"]}
    assert kinds == ({"corrupt"} if mode == "flip" else {"transient"}) and write["failure_count"] == 2


def test_a_chunk_always_corrupt_fails_the_run_and_nothing_is_verified(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:aa:02:02"
    digest = data_digest(site, 5)
    outcome = in_process(site, tmp_path, mac, WireFaults(digest, "always"), write_attempts=2)
    assert (outcome.code, outcome.state) == (EXIT_FAILED, "failed")
    assert outcome.reason is not None and "ChunkCorrupt" in outcome.reason and digest in outcome.reason
    assert_never_verified(site, mac)
    [failed] = site.events(mac, "run-failed")
    assert failed["error"]["retryable"] is True and failed["error"]["facts"]["expected"] == digest
    assert site.machine(mac)["state"] == "failed"


def test_server_killed_and_restarted_mid_write_the_run_ends_done(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:aa:02:03"
    wire = WireFaults()

    def kill_and_restart_later() -> None:
        site.server.kill()
        threading.Timer(1.0, site.server.start).start()

    wire.at = (15, kill_and_restart_later)
    outcome = in_process(site, tmp_path, mac, wire, workers=2)
    assert (outcome.code, outcome.state) == (EXIT_DONE, "done"), outcome
    assert target_sha(tmp_path / "pc" / "vda") == site.raw_sha
    [run] = site.runs(mac)
    assert run["state"] == "done" and run["digest"] == site.version.digest and run["verifications"][0]["complete"]
    [write] = site.events(mac, "write")
    assert write["failure_count"] >= 1 and {f["kind"] for f in write["failures"]} == {"transient"}
