"""`provision backup` while a served app records 10 agents' runs, then `provision restore` into fresh state folders
and `provision serve` on each: the backup taken under load is one consistent snapshot (every run acknowledged
before it began, and nothing half-written), the one taken at rest serves exactly the same machines, runs,
verifications and events, with the same keys (mode 0600), and both databases pass PRAGMA integrity_check."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.backup import read_manifest
from provision.certificates.signing import load_or_create_key
from provision.images import ImageStore
from provision.sshkeys import ensure_server_key
from tests.support.cli import run
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.serve import Running, start, stop
from tests.support.simagents import Agents
from tests.support.wait import wait_for

MACS = [f"52:54:00:0b:00:{i:02x}" for i in range(10)]
RUNS = 4  # per machine, at least: 3 failed (more while the backup runs), then done
KEYS = ("secrets/server.key", "ssh/id_ed25519", "keys/certificates_ed25519")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Running, Path, str, int]]:
    """A served app with the image ``tiny`` (its store outside the state folder) and a default recipe; its config
    file, the image's digest and data chunks."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text("name: default\ndefault: true\nimage: tiny\nwipe: zero\n")
    disk = make_disk(tmp_path / "tiny.raw", 4 * MiB, [(1 * MiB, 300_000)], seed=5)
    version = ImageStore(tmp_path / "images").import_raw(disk, "tiny", chunk_size=CHUNK)
    config = tmp_path / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp_path / "images")}))
    (tmp_path / "live").mkdir()
    served = start(tmp_path / "live", "--config", str(config))
    ensure_server_key(served.state)
    load_or_create_key(served.state / "keys" / "certificates_ed25519")
    try:
        yield served, config, version.digest, len(version.index.chunks) - version.index.holes
    finally:
        if served.proc.poll() is None:
            stop(served)


def records(url: str) -> dict[str, Any]:
    """What a server serves: its machines, every run (with verifications) by id, each machine's events."""
    machines = requests.get(f"{url}/api/v1/machines", timeout=10).json()
    runs = requests.get(f"{url}/api/v1/runs", timeout=10).json()
    events = {m["mac"]: requests.get(f"{url}/api/v1/machines/{m['mac']}/events", timeout=10).json() for m in machines}
    return {"machines": machines, "runs": {r["id"]: r for r in runs}, "events": events}


def serve_restored(tmp_path: Path, backup: Path, config: Path, name: str) -> Running:
    """``provision restore BACKUP`` into a fresh state folder, checked, and ``provision serve`` on it."""
    state = tmp_path / name / "state"
    code, out, err = run("restore", str(backup), "--state-dir", str(state))
    assert code == 0, err
    assert f"restored into {state}: " in out and "integrity ok" in out, out
    db = sqlite3.connect(state / "provision.db")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    return start(tmp_path / name, "--config", str(config))


def test_a_backup_under_load_restores_to_a_server_serving_the_same_records(
    tmp_path: Path, site: tuple[Running, Path, str, int]
) -> None:
    served, config, digest, chunks = site
    agents = Agents(served.url, digest, chunks, MACS, RUNS)
    agents.start()
    try:
        wait_for(lambda: len(agents.acked()) >= len(MACS) or agents.errors, 60, interval=0.005)
        before = set(agents.acked())
        code, out, err = run("backup", str(tmp_path / "b1"), "--config", str(config), "--state-dir", str(served.state))
        during = agents.acked()
    finally:
        agents.finish.set()
        agents.join()
    assert agents.errors == []
    assert code == 0, err
    assert "integrity ok" in out and "images not included" in out
    assert len(during) < len(agents.acked()), "the agents were done before the backup ended: not a backup under load"
    code, _, err = run("backup", str(tmp_path / "b2"), "--config", str(config), "--state-dir", str(served.state))
    assert code == 0, err
    live = records(served.url)
    assert len(live["runs"]) == len(agents.acked()) >= len(MACS) * RUNS
    assert sorted(m["state"] for m in live["machines"]) == ["done"] * len(MACS)
    stop(served)

    manifest = read_manifest(tmp_path / "b2")
    assert set(manifest.roots) == {"state", "config"}
    assert {f"state/{k}" for k in KEYS} <= {f.path for f in manifest.files}

    # the backup taken under load: a consistent snapshot
    restored = serve_restored(tmp_path, tmp_path / "b1", config, "r1")
    try:
        snapshot = records(restored.url)
    finally:
        stop(restored)
    assert before <= {i for i, r in snapshot["runs"].items() if r["finished"]}, "a run acknowledged before is lost"
    for run_id, got in snapshot["runs"].items():
        now = live["runs"][run_id]
        if got["finished"]:
            assert got == now  # a finished run is whole: state, reason, digest, verifications
        else:
            assert got["verifications"] == [] and now["finished"]
    for mac in MACS:
        ids = [i for i, r in snapshot["runs"].items() if r["mac"] == mac]
        assert ids == [i for i, r in live["runs"].items() if r["mac"] == mac][: len(ids)]
        events = snapshot["events"].get(mac, [])
        assert events == live["events"][mac][: len(events)]

    # the backup taken at rest: the very same records, the same keys
    restored = serve_restored(tmp_path, tmp_path / "b2", config, "r2")
    try:
        assert records(restored.url) == live
        script = requests.get(f"{restored.url}/boot/{MACS[0]}.ipxe", timeout=10).text
        assert "local disk" in script and "provision.token" not in script
    finally:
        stop(restored)
    for key in KEYS:
        path = restored.state / key
        assert path.read_bytes() == (served.state / key).read_bytes()
        assert path.stat().st_mode & 0o777 == 0o600, key
