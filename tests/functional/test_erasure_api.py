"""Erasure through a real `provision serve` (127.0.0.1, port 0) and a fake agent speaking the wire: an erase-only
run to done (then the PC powers off), an image run with erase -> writing -> verified -> done, a drive not ok ->
repair with the reason and never done, the wrong token refused, the records in the store and `provision runs`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.cli import main
from provision.facts import load_probe
from provision.images import ImageStore
from provision.store import Store
from tests.functional.test_imaging_api import DATA_CHUNKS, boot, good_report, post
from tests.support.erasures import drive, report
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE
from tests.support.serve import Running, start, stop

IMAGE_MAC = "52:54:00:12:34:56"
PARTS_MAC = "52:54:00:ab:cd:ef"
RECIPES = {
    "default.yaml": "name: default\ndefault: true\nimage: tiny\ngrow_root: false\n"
    "erase:\n  verify: full\n  lot: 'Banque {{ maker }}'\n",
    "parts.yaml": f"name: parts\naction: erase\nmatch:\n  mac: ['{PARTS_MAC}']\nerase:\n  method: overwrite\n",
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Running, str]]:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name, text in RECIPES.items():
        (recipes / name).write_text(text)
    images = ImageStore(tmp_path / "images")
    disk = make_disk(tmp_path / "tiny.raw", 4 * MiB, [(1 * MiB, 300_000)], seed=5)
    version = images.import_raw(disk, "tiny", chunk_size=CHUNK)
    DATA_CHUNKS[version.digest] = len(version.index.chunks) - version.index.holes
    config = tmp_path / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp_path / "images"),
                                  "erasure": {"operator": "atelier-nord"}}))  # fmt: skip
    run = start(tmp_path, "--config", str(config))
    try:
        yield run, version.digest
    finally:
        if run.proc.poll() is None:
            stop(run)


def hello(url: str, token: str, mac: str) -> dict[str, Any]:
    facts = {**load_probe(SAMPLE_PROBE).to_dict(), "mac": mac}  # the probe's NIC is the PC's
    r = requests.post(f"{url}/api/v1/hello", json={"mac": mac, "token": token, "facts": facts}, timeout=10)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def erasure(url: str, run: str, body: dict[str, Any]) -> requests.Response:
    return post(url, f"/api/v1/runs/{run}/erasure", body)


def cli(state: Path, *args: str) -> str:
    out = io.StringIO()
    assert main([*args, "--state-dir", str(state)], out=out) == 0
    return out.getvalue()


def test_an_erase_only_run_ends_done_and_the_pc_then_powers_off(served: tuple[Running, str]) -> None:
    running, _ = served
    url = running.url
    token = boot(url, PARTS_MAC)
    answer = hello(url, token, PARTS_MAC)
    assert answer["action"] == "erase" and answer["recipe"] == "parts", answer
    assert answer["erase"] == {"method": "overwrite", "hidden_areas": "report", "verify": "sample",
                               "sample_percent": 5.0, "unfreeze": True, "only": True}  # fmt: skip
    run = answer["run"]
    assert hello(url, token, PARTS_MAC) == answer  # the same hello again: the same run, not a second one

    progress = {"token": token, "drives": {"sda": 0.25, "nvme0n1": None}, "stage": "erasing"}
    refused = post(url, f"/api/v1/runs/{run}/erasure/progress", {**progress, "token": "0" * 32})
    assert refused.status_code == 403
    moved = post(url, f"/api/v1/runs/{run}/erasure/progress", progress)
    assert moved.status_code == 200 and moved.json()["state"] == "erasing", moved.text
    tile = requests.get(f"{url}/api/v1/machines/{PARTS_MAC}/events", timeout=5).json()
    assert [e["detail"]["fraction"] for e in tile if e["kind"] == "progress"] == [0.25]

    body = report(token, drive("sda"), drive("nvme0n1", method="nvme-sanitize-crypto", serial="S4EWNX0R1")).to_dict()
    assert erasure(url, run, {**body, "token": "0" * 32}).status_code == 403
    assert erasure(url, "nope", body).status_code == 404
    done = erasure(url, run, body)
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "done"
    assert done.json()["reason"] == "2 drives erased and verified (sda: purge, nvme0n1: purge)"
    assert erasure(url, run, body).status_code == 409  # the run has ended

    script = requests.get(f"{url}/boot/{PARTS_MAC}.ipxe", timeout=5).text
    assert "poweroff" in script and "provision.token=" not in script and "sanboot" not in script
    got = requests.get(f"{url}/api/v1/runs/{run}", timeout=5).json()
    assert [(e["device"], e["serial"], e["operator"]) for e in got["erasures"]] == [
        ("sda", "WD-WCC4N1234567", "atelier-nord"), ("nvme0n1", "S4EWNX0R1", "atelier-nord")
    ]  # fmt: skip
    assert got["erase_only"] is True and got["image"] == ""

    text = cli(running.state, "runs", PARTS_MAC)
    assert "erase only" in text and "erase sda" in text and "serial S4EWNX0R1" in text
    assert "nvme-sanitize-crypto" in text and "verify sample zeros ok" in text and "erased by atelier-nord" in text
    assert "erase only (done)" in cli(running.state, "machines")


def test_an_image_run_erases_first_then_writes_and_ends_done(served: tuple[Running, str]) -> None:
    running, digest = served
    url = running.url
    token = boot(url, IMAGE_MAC)
    answer = hello(url, token, IMAGE_MAC)
    assert answer["action"] == "image", answer
    run, plan = answer["run"], answer["plan"]
    assert (
        plan["erase"]["verify"] == "full" and plan["erase"]["lot"].startswith("Banque ") and not plan["erase"]["only"]
    )
    lot = plan["erase"]["lot"]

    writing = {"token": token, "stage": "writing", "bytes_done": 1, "bytes_total": 10, "rate": 1.5}
    early = post(url, f"/api/v1/runs/{run}/progress", writing)
    assert early.status_code == 422 and "no complete erasure" in early.text  # no write before the erasure

    answered = erasure(url, run, report(token, drive("sda")).to_dict())
    assert answered.status_code == 200 and answered.json()["state"] == "writing", answered.text
    assert post(url, f"/api/v1/runs/{run}/progress", writing).json()["state"] == "writing"
    assert post(url, f"/api/v1/runs/{run}/report", good_report(token, digest)).json()["state"] == "done"

    with Store(running.state / "provision.db") as store:
        [record] = store.erasures(mac=IMAGE_MAC)
        assert (record.run_id, record.lot, record.operator, record.ok) == (run, lot, "atelier-nord", True)
        assert store.erasures(lot=lot) == [record]
        machine = store.machine(IMAGE_MAC)
        assert machine is not None and machine.lot == lot
    assert "sanboot" in requests.get(f"{url}/boot/{IMAGE_MAC}.ipxe", timeout=5).text  # imaged: its own disk
    assert f"lot {lot}" in cli(running.state, "machines")
    assert cli(running.state, "machines", "lot", IMAGE_MAC, "Lot 42", "--by", "paul").strip() == (
        f"{IMAGE_MAC}: lot Lot 42 (set by paul)"
    )


def test_a_drive_not_ok_sends_the_run_to_repair_never_done(served: tuple[Running, str]) -> None:
    running, digest = served
    url = running.url
    token = boot(url, IMAGE_MAC)
    run = hello(url, token, IMAGE_MAC)["run"]
    bad = drive("sdb", ok=False, verified=False, serial="WD-WCC4N7654321")
    answered = erasure(url, run, report(token, drive("sda"), bad).to_dict())
    assert answered.status_code == 200 and answered.json()["state"] == "repair"
    reason = answered.json()["reason"]
    assert reason.startswith("1 drive erased and verified; drive sdb (serial WD-WCC4N7654321) failed its verification")
    assert "set it aside for a technician" in reason
    late = post(url, f"/api/v1/runs/{run}/report", good_report(token, digest))
    assert late.status_code == 409  # repair is final: a write report cannot make it done
    got = requests.get(f"{url}/api/v1/runs/{run}", timeout=5).json()
    assert got["state"] == "repair" and [e["ok"] for e in got["erasures"]] == [True, False]
    machines = requests.get(f"{url}/api/v1/machines", timeout=5).json()
    assert [(m["state"], m["reason"]) for m in machines] == [("repair", reason)]
    text = cli(running.state, "runs", IMAGE_MAC)
    assert "NOT OK" in text and "reason: 3 of 25600 sampled blocks still hold data" in text
    assert "provision.token=" in requests.get(f"{url}/boot/{IMAGE_MAC}.ipxe", timeout=5).text  # live again
