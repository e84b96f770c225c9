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
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.agent.main import EXIT_DONE, EXIT_FAILED
from tests.support.chunk_server import SIZE, target_sha
from tests.support.images import MiB
from tests.support.paths import REPO
from tests.support.runs import (
    Site,
    WireFaults,
    agent_process,
    assert_never_verified,
    data_digest,
    disks,
    in_process,
    make_site,
    result,
)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with make_site(tmp_path) as site:
        yield site


def test_four_agents_at_once_all_done(site: Site, tmp_path: Path) -> None:
    macs = [f"52:54:00:aa:00:{i:02x}" for i in range(4)]
    folders = [disks(tmp_path / f"pc{i}", ("vda", SIZE + i * MiB, None)) for i in range(4)]
    procs = [agent_process(site.url, mac, site.token(mac), folder) for mac, folder in zip(macs, folders, strict=True)]
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
    code, last, _ = result(agent_process(site.url, mac, site.token(mac), folder))
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
    code, last, _ = result(agent_process(site.url, mac, "f" * 32, disks(tmp_path / "pc", ("vda", SIZE, None))))
    assert code == EXIT_FAILED and "wrong or expired boot token" in last
    assert site.runs(mac) == []


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
    timers: list[threading.Timer] = []

    def kill_and_restart_later() -> None:
        site.server.kill()
        timers.append(threading.Timer(1.0, site.server.start))
        timers[0].start()

    wire.at = (15, kill_and_restart_later)
    try:
        outcome = in_process(site, tmp_path, mac, wire, workers=2)
    finally:  # the restart happens before the fixture kills the server, never after
        for timer in timers:
            timer.join(timeout=60)
    assert (outcome.code, outcome.state) == (EXIT_DONE, "done"), outcome
    assert target_sha(tmp_path / "pc" / "vda") == site.raw_sha
    [run] = site.runs(mac)
    assert run["state"] == "done" and run["digest"] == site.version.digest and run["verifications"][0]["complete"]
    [write] = site.events(mac, "write")
    assert write["failure_count"] >= 1 and {f["kind"] for f in write["failures"]} == {"transient"}
