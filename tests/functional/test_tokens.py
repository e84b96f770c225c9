"""Issue 12 defects 1-3 through a real `provision serve`: a recorded verification cannot be forged by another host
of the LAN, a token cannot be replayed to supersede a run, and a first-boot callback needs its run's secret.

The server runs on 127.0.0.1 without an interface, so the neighbour binding is off here (tests/unit/
test_tokens.py checks it with a neighbour table); what is checked is what holds everywhere: no new token
while a run is in flight unless the PC network-booted again, runs bound to the token that started them, and
the first-boot secret."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.facts import load_probe
from provision.images import ImageStore
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE
from tests.support.serve import Running, netboot, start, stop

MAC = "52:54:00:12:34:56"
RECIPE = "name: default\ndefault: true\nimage: tiny\nwipe: zero\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Running, str, int]]:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(RECIPE)
    images = ImageStore(tmp_path / "images")
    version = images.import_raw(
        make_disk(tmp_path / "d.raw", 4 * MiB, [(MiB, 200_000)], seed=5), "tiny", chunk_size=CHUNK
    )
    config = tmp_path / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp_path / "images")}))
    run = start(tmp_path, "--config", str(config))
    try:
        yield run, version.digest, len(version.index.chunks) - version.index.holes
    finally:
        if run.proc.poll() is None:
            stop(run)


def boot_script(url: str, mac: str = MAC) -> str:
    r = requests.get(f"{url}/boot/{mac}.ipxe", timeout=5)
    assert r.status_code == 200, r.text
    return r.text


def token_of(script: str) -> str | None:
    found = re.search(r"provision\.token=([0-9a-f]+)", script)
    return found.group(1) if found else None


def post(url: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=10)


def hello(url: str, token: str) -> requests.Response:
    return post(url, "/api/v1/hello", {"mac": MAC, "token": token, "facts": load_probe(SAMPLE_PROBE).to_dict()})


def report(token: str, digest: str, data: int) -> dict[str, Any]:
    body = {"digest": digest, "chunks": data, "verified": data, "read_back_ok": True, "bytes_written": 1,
            "seconds": 1.0, "mean_rate": 1.0}  # fmt: skip
    return {"token": token, "ok": True, "report": body}


def test_defect1_another_host_cannot_get_a_token_for_a_pc_being_imaged(served: tuple[Running, str, int]) -> None:
    run, digest, data = served
    token = token_of(boot_script(run.url))
    assert token is not None
    run_id = hello(run.url, token).json()["run"]
    stolen = boot_script(run.url)  # another host asks for the victim's boot script while it is imaged
    assert token_of(stolen) is None and "is under way" in stolen
    forged = post(run.url, f"/api/v1/runs/{run_id}/report", report("0" * 32, digest, data))
    assert forged.status_code == 403
    done = post(run.url, f"/api/v1/runs/{run_id}/report", report(token, digest, data))
    assert done.json()["state"] == "done", done.text  # the victim's own token still works


def test_defect1_the_pc_booting_again_gets_a_new_token(served: tuple[Running, str, int]) -> None:
    run, digest, data = served
    token = token_of(boot_script(run.url))
    assert token is not None
    first = hello(run.url, token).json()["run"]
    netboot(run, MAC)  # power cut: the PC network-boots again
    again = token_of(boot_script(run.url))
    assert again is not None and again != token
    second = hello(run.url, again).json()["run"]
    runs = {r["id"]: r for r in requests.get(f"{run.url}/api/v1/runs", timeout=5).json()}
    assert runs[first]["state"] == "failed" and second in (runs[first]["reason"] or "")
    # the first run's agent is gone: its token neither reports the old run nor the new one
    assert post(run.url, f"/api/v1/runs/{first}/report", report(token, digest, data)).status_code in (403, 409)
    assert post(run.url, f"/api/v1/runs/{second}/report", report(token, digest, data)).status_code == 403


def test_defect2_a_replayed_hello_does_not_supersede_the_run(served: tuple[Running, str, int]) -> None:
    run, digest, data = served
    token = token_of(boot_script(run.url))
    assert token is not None
    first = hello(run.url, token).json()
    replay = hello(run.url, token).json()
    assert replay["run"] == first["run"] and replay["plan"] == first["plan"]
    runs = requests.get(f"{run.url}/api/v1/runs", timeout=5).json()
    assert [(r["id"], r["state"]) for r in runs] == [(first["run"], "inventoried")]
    assert post(run.url, f"/api/v1/runs/{first['run']}/report", report(token, digest, data)).json()["state"] == "done"
    ended = hello(run.url, token)
    assert ended.status_code == 409 and "done" in ended.json()["error"]


def test_defect3_firstboot_needs_the_runs_secret(served: tuple[Running, str, int]) -> None:
    run, digest, data = served
    token = token_of(boot_script(run.url))
    assert token is not None
    answer = hello(run.url, token).json()
    secret = answer["plan"]["firstboot_secret"]
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    post(run.url, f"/api/v1/runs/{answer['run']}/report", report(token, digest, data))
    call = {"event": "firstboot", "mac": MAC, "image": "tiny", "label": "L", "firmware": "uefi"}
    assert post(run.url, "/api/v1/firstboot", call).status_code == 403
    assert post(run.url, "/api/v1/firstboot", {**call, "secret": "ab" * 32}).status_code == 403
    assert post(run.url, "/api/v1/firstboot", {**call, "secret": secret}).status_code == 200
    events = requests.get(f"{run.url}/api/v1/machines/{MAC}/events", timeout=5).json()
    [first] = [e for e in events if e["kind"] == "firstboot"]
    assert first["detail"]["run"] == answer["run"] and "secret" not in first["detail"]
    # a MAC the server never saw: refused, and no machine record is made for it
    stranger = post(run.url, "/api/v1/firstboot", {**call, "mac": "52:54:00:99:99:99", "secret": secret})
    assert stranger.status_code == 404
    macs = [m["mac"] for m in requests.get(f"{run.url}/api/v1/machines", timeout=5).json()]
    assert macs == [MAC]
