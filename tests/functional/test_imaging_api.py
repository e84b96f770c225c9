"""The server side of an imaging run, through a real `provision serve`: hello with facts -> image plan and run,
progress, the final report (done only when consistent), the next boot script, `provision machines`."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.cli import main
from provision.facts import load_probe
from provision.facts.derive import derive
from provision.images import ImageStore
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE
from tests.support.serve import Running, netboot, start, stop

MAC = "52:54:00:12:34:56"
OTHER_MAC = "52:54:00:ab:cd:ef"
DATA_CHUNKS: dict[str, int] = {}  # digest -> data chunks of the imported test image
RECIPE = "name: default\ndefault: true\nimage: {image}\nwipe: zero\nhostname: lab-pc\n"


@pytest.fixture
def imaging(tmp_path: Path) -> Iterator[tuple[Running, str, Path]]:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(RECIPE.format(image="tiny"))
    images = ImageStore(tmp_path / "images")
    disk = make_disk(tmp_path / "tiny.raw", 4 * MiB, [(1 * MiB, 300_000)], seed=3)
    version = images.import_raw(disk, "tiny", chunk_size=CHUNK)
    digest = version.digest
    DATA_CHUNKS[digest] = len(version.index.chunks) - version.index.holes
    config = tmp_path / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp_path / "images")}))
    run = start(tmp_path, "--config", str(config))
    try:
        yield run, digest, recipes
    finally:
        if run.proc.poll() is None:
            stop(run)


def boot(url: str, mac: str = MAC) -> str:
    script = requests.get(f"{url}/boot/{mac}.ipxe", timeout=5)
    assert script.status_code == 200, script.text
    token = re.search(r"provision\.token=([0-9a-f]+)", script.text)
    assert token is not None, script.text
    return token.group(1)


def hello(url: str, token: str, mac: str = MAC) -> dict[str, Any]:
    facts = load_probe(SAMPLE_PROBE).to_dict()
    r = requests.post(f"{url}/api/v1/hello", json={"mac": mac, "token": token, "facts": facts}, timeout=10)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def good_report(token: str, digest: str, **over: Any) -> dict[str, Any]:
    data = DATA_CHUNKS.get(digest, 5)
    body = {
        "digest": digest, "chunks": data, "verified": data, "read_back_ok": True, "wipe_method": "zeroout",
        "wipe_ranges": [[0, 4096], [1 << 20, 8192]], "bytes_written": 4 * MiB, "seconds": 2.0, "mean_rate": 2 * MiB,
    }  # fmt: skip
    return {"token": token, "ok": True, "report": {**body, **over}}


def post(url: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=5)


def test_a_run_from_hello_to_done(imaging: tuple[Running, str, Path]) -> None:
    served, digest, _ = imaging
    url = served.url
    token = boot(url)
    answer = hello(url, token)
    assert answer["action"] == "image", answer
    plan, run_id = answer["plan"], answer["run"]
    assert (plan["image"], plan["digest"], plan["wipe"]) == ("tiny", digest, "zero")
    assert plan["index_url"] == f"/images/tiny/{digest}/index.json"
    assert requests.get(url + plan["index_url"], timeout=5).status_code == 200
    assert plan["version"].endswith(digest[:12]) and plan["grow_root"] is True

    progress = {"token": token, "stage": "writing", "bytes_done": 1, "bytes_total": 10, "rate": 1.5}
    assert post(url, f"/api/v1/runs/{run_id}/progress", {**progress, "token": "0" * 32}).status_code == 403
    assert post(url, "/api/v1/runs/nope/progress", progress).status_code == 404
    bad_stage = post(url, f"/api/v1/runs/{run_id}/progress", {**progress, "stage": "done"})
    assert bad_stage.status_code == 422 and "stage" in bad_stage.text
    for _ in range(3):  # stored at most once per 2 s
        r = post(url, f"/api/v1/runs/{run_id}/progress", progress)
        assert r.status_code == 200 and r.json()["state"] == "writing", r.text
    r = post(url, f"/api/v1/runs/{run_id}/progress", {**progress, "stage": "verifying", "bytes_done": 10})
    assert r.json()["state"] == "verifying"
    events = requests.get(f"{url}/api/v1/machines/{MAC}/events", timeout=5).json()
    assert [e["detail"]["stage"] for e in events if e["kind"] == "progress"] == ["writing", "verifying"]

    # a report of another digest: failed with the reason, never done
    wrong = post(url, f"/api/v1/runs/{run_id}/report", good_report(token, "f" * 64))
    assert wrong.status_code == 200 and wrong.json()["state"] == "failed"
    assert "planned" in wrong.json()["reason"]
    again = post(url, f"/api/v1/runs/{run_id}/report", good_report(token, digest))
    assert again.status_code == 409
    assert requests.get(f"{url}/api/v1/runs/{run_id}", timeout=5).json()["state"] == "failed"
    assert "provision.token=" in requests.get(f"{url}/boot/{MAC}.ipxe", timeout=5).text  # still live

    # the next boot: a new run, a good report -> done, and the boot script says local disk
    token = boot(url)
    answer = hello(url, token)
    run_id = answer["run"]
    assert post(
        url, f"/api/v1/runs/{run_id}/report", good_report(token, digest, verified=DATA_CHUNKS[digest] - 1)
    ).json()["state"] == ("failed")
    token = boot(url)
    run_id = hello(url, token)["run"]
    assert post(url, f"/api/v1/runs/{run_id}/progress", {**progress, "token": token}).status_code == 200
    done = post(url, f"/api/v1/runs/{run_id}/report", good_report(token, digest))
    assert done.status_code == 200 and done.json()["state"] == "done", done.text
    assert post(url, f"/api/v1/runs/{run_id}/report", good_report(token, digest)).status_code == 409
    script = requests.get(f"{url}/boot/{MAC}.ipxe", timeout=5).text
    assert "local disk" in script and "provision.token" not in script

    runs = requests.get(f"{url}/api/v1/runs", params={"mac": MAC}, timeout=5).json()
    assert [r["state"] for r in runs] == ["failed", "failed", "done"]
    assert runs[-1]["verifications"][0]["complete"] is True
    assert runs[-1]["verifications"][0]["wipe_ranges"] == [[0, 4096], [1 << 20, 8192]]
    machine = requests.get(f"{url}/api/v1/machines", timeout=5).json()[0]
    vendor = derive(load_probe(SAMPLE_PROBE))["vendor"]  # the sample has no dmidecode output: None
    assert (machine["state"], machine["recipe"], machine["vendor"]) == ("done", "default", vendor)

    out = io.StringIO()
    assert main(["machines", "--json", "--state-dir", str(served.state)], out=out) == 0
    [row] = json.loads(out.getvalue())
    assert (row["mac"], row["state"], row["verified_digest"]) == (MAC, "done", digest)
    out = io.StringIO()
    assert main(["machines", "--state-dir", str(served.state)], out=out) == 0
    assert f"verified {digest[:12]}" in out.getvalue()
    out = io.StringIO()
    assert main(["runs", MAC, "--state-dir", str(served.state)], out=out) == 0
    assert "read-back ok" in out.getvalue() and "planned" in out.getvalue()


def test_missing_image_means_wait_with_reason(imaging: tuple[Running, str, Path]) -> None:
    served, _, recipes = imaging
    url = served.url
    token = boot(url, OTHER_MAC)
    assert hello(url, token, OTHER_MAC)["action"] == "image"
    recipe = recipes / "default.yaml"
    recipe.write_text(RECIPE.format(image="nothere"))
    stat = recipe.stat()
    os.utime(recipe, (stat.st_atime + 10, stat.st_mtime + 10))  # the recipe cache sees the change
    netboot(served, OTHER_MAC)  # the PC boots again, its run still open: only a network boot earns a new token
    token = boot(url, OTHER_MAC)
    answer = hello(url, token, OTHER_MAC)
    assert answer["action"] == "wait" and "nothere" in answer["reason"], answer
    events = requests.get(f"{url}/api/v1/machines/{OTHER_MAC}/events", timeout=5).json()
    assert any(e["kind"] == "image-missing" for e in events)
    machines = requests.get(f"{url}/api/v1/machines", timeout=5).json()
    assert [(m["state"], "nothere" in (m["reason"] or "")) for m in machines] == [("waiting", True)]
    bare = post(url, "/api/v1/hello", {"mac": OTHER_MAC, "token": token})
    assert bare.json()["action"] == "wait"


def test_raw_probe_kept_and_agent_claims_checked(imaging: tuple[Running, str, Path]) -> None:
    """A hello with the raw probe files: kept under the state folder and read by the server; a report that
    claims fewer data chunks than the image has is not done; a failure without a verification is recorded."""
    served, digest, _ = imaging
    url = served.url
    token = boot(url)
    probe = {f.name: f.read_text() for f in SAMPLE_PROBE.iterdir() if f.is_file()}
    r = post(url, "/api/v1/hello", {"mac": MAC, "token": token, "probe": probe, "warnings": ["smartctl: absent"]})
    assert r.status_code == 200 and r.json()["action"] == "image", r.text
    kept = served.state / "probes" / MAC.replace(":", "-")
    assert sorted(p.name for p in kept.iterdir()) == sorted(probe)
    for name in ("../x", "lsblk.json\n"):
        bad = post(url, "/api/v1/hello", {"mac": MAC, "token": token, "probe": {name: "y"}})
        assert bad.status_code == 422 and "probe" in bad.text

    run_id = r.json()["run"]
    data = DATA_CHUNKS[digest]
    claim = post(url, f"/api/v1/runs/{run_id}/report", good_report(token, digest, chunks=data - 1, verified=data - 1))
    assert claim.json()["state"] == "failed" and f"the image has {data}" in claim.json()["reason"]

    token = boot(url)
    run_id = post(url, "/api/v1/hello", {"mac": MAC, "token": token, "probe": probe}).json()["run"]
    no_reason = post(url, f"/api/v1/runs/{run_id}/report", {"token": token, "ok": False})
    assert no_reason.status_code == 422
    failed = post(
        url,
        f"/api/v1/runs/{run_id}/report",
        {"token": token, "ok": False, "reason": "no disk can take the image", "error": {"type": "NoTargetDisk"}},
    )
    answer = failed.json()
    assert answer.pop("screen")["stage"] == "failed"  # what the PC's own screen shows (docs/dashboard.md)
    assert answer == {"run": run_id, "state": "failed", "reason": "no disk can take the image"}
    events = requests.get(f"{url}/api/v1/machines/{MAC}/events", timeout=5).json()
    assert any(e["kind"] == "run-failed" and e["detail"]["error"]["type"] == "NoTargetDisk" for e in events)
    assert any(e["detail"].get("probe_warnings") == ["smartctl: absent"] for e in events if e["kind"] == "hello")
    machine = requests.get(f"{url}/api/v1/machines", timeout=5).json()[0]
    assert machine["state"] == "failed" and "no disk" in machine["reason"]

    # text SQLite and files cannot hold (a lone surrogate, valid JSON): replaced or refused, never a 500
    token = boot(url)

    def raw_hello(probe_text: bytes, warning: bytes) -> requests.Response:
        body = b'{"mac": "%s", "token": "%s", "probe": {"x.txt": "%s"}, "warnings": ["%s"]}'
        return requests.post(
            f"{url}/api/v1/hello",
            data=body % (MAC.encode(), token.encode(), probe_text, warning),
            headers={"Content-Type": "application/json"},
            timeout=5,
        )

    replaced = raw_hello(b"ok", b"\\udfff")
    assert replaced.status_code == 200, replaced.text
    events = requests.get(f"{url}/api/v1/machines/{MAC}/events", timeout=5).json()
    assert [e["detail"].get("probe_warnings") for e in events if e["kind"] == "hello"][-1] == ["?"]
    netboot(served, MAC)
    token = boot(url)
    odd = raw_hello(b"\\ud800", b"ok")
    assert odd.status_code == 200, odd.text
    # a short write whose progress never reached the server: the report alone makes the run done
    run_id = odd.json()["run"]
    done = post(url, f"/api/v1/runs/{run_id}/report", good_report(token, digest))
    assert done.json()["state"] == "done", done.text
