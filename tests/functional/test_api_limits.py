"""Issue 12, defect 5, through a real `provision serve`: bodies that used to be HTTP 500s are refused as 4xx and
change nothing (JSON nested 5,000 deep, integers past SQLite's range, Infinity), and wrong-typed facts get no
imaging plan."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from provision.facts import load_probe
from provision.images import ImageStore
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE
from tests.support.serve import Running, start, stop

MAC = "52:54:00:12:34:56"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Running]:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text("name: default\ndefault: true\nimage: tiny\n")
    images = ImageStore(tmp_path / "images")
    images.import_raw(make_disk(tmp_path / "d.raw", 4 * MiB, [(MiB, 100_000)], seed=9), "tiny", chunk_size=CHUNK)
    config = tmp_path / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp_path / "images")}))
    run = start(tmp_path, "--config", str(config))
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            code, _, err = stop(run)
            assert code == 0 and "Traceback" not in err, err[-2000:]


def token(url: str) -> str:
    found = re.search(r"provision\.token=([0-9a-f]+)", requests.get(f"{url}/boot/{MAC}.ipxe", timeout=5).text)
    assert found is not None
    return found.group(1)


def post_raw(url: str, path: str, text: str) -> requests.Response:
    return requests.post(f"{url}{path}", data=text, headers={"Content-Type": "application/json"}, timeout=10)


def test_defect5_json_nested_5000_deep_is_a_400(served: Running) -> None:
    deep = '{"mac": "52:54:00:12:34:56", "token": "0123456789", "facts": ' + "[" * 5000 + "]" * 5000 + "}"
    answer = post_raw(served.url, "/api/v1/hello", deep)
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"], answer.text


def test_defect5_numbers_past_64_bits_or_infinite_are_422_and_change_nothing(served: Running) -> None:
    url = served.url
    tok = token(url)
    hello = requests.post(
        f"{url}/api/v1/hello", json={"mac": MAC, "token": tok, "facts": load_probe(SAMPLE_PROBE).to_dict()}, timeout=10
    ).json()
    run = hello["run"]
    too_big = {"token": tok, "stage": "writing", "bytes_done": 2**63, "bytes_total": 10, "rate": 1.0}
    answer = requests.post(f"{url}/api/v1/runs/{run}/progress", json=too_big, timeout=5)
    assert answer.status_code == 422 and "bytes_done" in answer.text
    infinite = json.dumps({**too_big, "bytes_done": 1}).replace('"rate": 1.0', '"rate": Infinity')
    assert post_raw(url, f"/api/v1/runs/{run}/progress", infinite).status_code == 400
    body = {"digest": "a" * 64, "chunks": 1, "verified": 1, "read_back_ok": True, "bytes_written": 2**63,
            "seconds": 1.0, "mean_rate": 1.0}  # fmt: skip
    answer = requests.post(
        f"{url}/api/v1/runs/{run}/report", json={"token": tok, "ok": True, "report": body}, timeout=5
    )
    assert answer.status_code == 422 and "bytes_written" in answer.text
    recorded = requests.get(f"{url}/api/v1/runs/{run}", timeout=5).json()
    assert recorded["state"] == "inventoried" and recorded["verifications"] == []  # nothing half applied


def test_defect5_wrong_typed_facts_get_no_plan(served: Running) -> None:
    answer = requests.post(
        f"{served.url}/api/v1/hello", json={"mac": MAC, "token": token(served.url), "facts": {"disks": "x"}}, timeout=5
    )
    assert answer.status_code == 422 and "disks" in answer.text, answer.text
    assert requests.get(f"{served.url}/api/v1/runs", timeout=5).json() == []
