"""The served OpenAPI document against real answers: a real ``provision serve`` on 127.0.0.1 (port 0), two PCs
simulated through the real API (boot script -> token -> hello -> progress -> report -> first boot, and one
that waits), the records read back, and refusals (400, 403, 404, 409, 422). Each request body sent is checked
against the route's request schema and each answer against the response of its route and status."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from provision.facts import load_probe
from provision.images import ImageStore
from provision.wire import paths
from provision.wire.capture import TOKEN_HEADER
from tests.support.erasures import drive
from tests.support.erasures import report as erasure_report
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE
from tests.support.serve import Running, start, stop

MAC = "52:54:00:12:34:56"
WAITING = "52:54:00:ab:cd:ef"
PARTS = "52:54:00:00:00:0e"
RECIPE = "name: default\ndefault: true\nimage: tiny\nwipe: zero\n"
GOLDEN = "52:54:00:00:00:c0"
CAPTURE = f"name: golden\ncapture: golden\nmatch: {{mac: '{GOLDEN}'}}\n"
ERASE_ONLY = f"name: parts\naction: erase\nmatch: {{mac: '{PARTS}'}}\nerase: {{method: overwrite, lot: 'Lot 7'}}\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Running, str, int]]:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(RECIPE)
    (recipes / "parts.yaml").write_text(ERASE_ONLY)
    (recipes / "golden.yaml").write_text(CAPTURE)
    images = ImageStore(tmp_path / "images")
    version = images.import_raw(
        make_disk(tmp_path / "d.raw", 4 * MiB, [(MiB, 200_000)], seed=7), "tiny", chunk_size=CHUNK
    )
    images.publish(version)
    config = tmp_path / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp_path / "images")}))
    run = start(tmp_path, "--config", str(config))
    try:
        yield run, version.digest, len(version.index.chunks) - version.index.holes
    finally:
        if run.proc.poll() is None:
            stop(run)


class Api:
    """Calls of the served API, each checked against the document the same server serves."""

    def __init__(self, url: str) -> None:
        self.url = url
        answer = requests.get(url + paths.OPENAPI, timeout=10)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
        self.doc: dict[str, Any] = answer.json()
        validate_spec(self.doc)
        self.seen: set[tuple[str, str, int]] = set()
        self.check(answer, "GET", paths.OPENAPI)

    def schema(self, schema: dict[str, Any]) -> OAS31Validator:
        return OAS31Validator({**schema, "components": self.doc["components"]})

    def check(self, answer: requests.Response, method: str, template: str) -> Any:
        """``answer`` must be a documented status of the route, its body valid against that status's schema."""
        operation = self.doc["paths"][template][method.lower()]
        status = str(answer.status_code)
        assert status in operation["responses"], f"{method} {template}: {status} not documented: {answer.text}"
        [(media, content)] = operation["responses"][status]["content"].items()
        assert answer.headers["Content-Type"].split(";")[0] == media
        body = answer.json()
        errors = sorted(self.schema(content["schema"]).iter_errors(body), key=str)
        assert not errors, f"{method} {template} {status}: {errors[0]}\n{json.dumps(body)[:2000]}"
        self.seen.add((method, template, answer.status_code))
        return body

    def get(self, template: str, query: dict[str, str] | None = None, **values: str) -> tuple[int, Any]:
        answer = requests.get(self.url + paths.fill(template, **values), params=query, timeout=10)
        return answer.status_code, self.check(answer, "GET", template)

    def post(self, template: str, body: Any, *, valid: bool = True, **values: str) -> tuple[int, Any]:
        operation = self.doc["paths"][template]["post"]
        request = operation["requestBody"]["content"]["application/json"]["schema"]
        assert self.schema(request).is_valid(body) == valid, body
        url = self.url + paths.fill(template, **values)
        if isinstance(body, str):  # not JSON on purpose
            answer = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        else:
            answer = requests.post(url, json=body, timeout=10)
        return answer.status_code, self.check(answer, "POST", template)

    def put(self, template: str, body: bytes, headers: dict[str, str], **values: str) -> tuple[int, Any]:
        """A raw body (a capture's chunk upload: not JSON)."""
        answer = requests.put(self.url + paths.fill(template, **values), data=body, headers=headers, timeout=10)
        return answer.status_code, self.check(answer, "PUT", template)


def token_of(url: str, mac: str) -> str:
    script = requests.get(url + paths.boot_ipxe(mac), timeout=10).text
    found = re.search(r"provision\.token=([0-9a-f]+)", script)
    assert found is not None, script
    return found.group(1)


def test_real_answers_follow_the_served_document(served: tuple[Running, str, int], tmp_path: Path) -> None:
    run, digest, data = served
    api = Api(run.url)
    assert api.get(paths.HEALTHZ)[0] == 200
    status, images = api.get(paths.IMAGES)
    assert status == 200 and images[0]["current"]["digest"] == digest
    assert api.get(paths.IMAGE_INDEX, name="tiny", version="current")[0] == 200
    assert api.get(paths.IMAGE_INDEX, name="tiny", version="0" * 12)[0] == 404
    assert api.get(paths.IMAGE_INDEX, name="no such", version="current")[0] == 400

    # a PC: boot script, hello, progress, report, first boot of the installed system
    token = token_of(run.url, MAC)
    facts = load_probe(SAMPLE_PROBE).to_dict()
    status, answer = api.post(paths.HELLO, {"mac": MAC, "token": token, "boot": {"firmware": "uefi"}, "facts": facts})
    assert status == 200 and answer["action"] == "image", answer
    run_id = answer["run"]
    for stage, done in (("writing", 0), ("writing", 2 * MiB), ("verifying", 4 * MiB)):
        body = {"token": token, "stage": stage, "bytes_done": done, "bytes_total": 4 * MiB, "rate": 1e6}
        status, progress = api.post(paths.RUN_PROGRESS, body, run=run_id)
        assert status == 200 and progress["state"] == stage
    # one PC alone wants its version: its plan is HTTP only, so a multicast call is refused (409)
    assert answer["plan"].get("multicast") is None
    assert api.post(paths.RUN_MULTICAST, {"token": token, "event": "join"}, run=run_id)[0] == 409
    report = {"digest": digest, "chunks": data, "verified": data, "read_back_ok": True, "bytes_written": 4 * MiB,
              "seconds": 2.0, "mean_rate": 2e6, "wipe_method": "BLKZEROOUT", "wipe_ranges": [[0, 4096]]}  # fmt: skip
    forged = {"token": "0" * 32, "ok": True, "report": report}
    assert api.post(paths.RUN_REPORT, forged, run=run_id)[0] == 403
    transfer = {"mode": "unicast", "bytes_http": 4 * MiB, "chunks_http": data}
    status, ended = api.post(paths.RUN_REPORT, {"token": token, "ok": True, "report": report, "transfer": transfer},
                             run=run_id)  # fmt: skip
    assert status == 200 and ended["state"] == "done", ended
    secret = answer["plan"]["firstboot_secret"]
    call = {"event": "firstboot", "mac": MAC, "image": "tiny", "label": "L", "firmware": "uefi", "secret": secret,
            "hostname": "pc-1", "packages": ["base-files=12"]}  # fmt: skip
    assert api.post(paths.FIRSTBOOT, call) == (200, {"ok": True})

    # a second PC that says nothing to choose a recipe by: it waits
    status, wait = api.post(paths.HELLO, {"mac": WAITING, "token": token_of(run.url, WAITING)})
    assert status == 200 and wait["action"] == "wait", wait

    # a third PC leaves as parts: erase-only, its drives' progress, then its erasure report
    parts_token = token_of(run.url, PARTS)
    status, erase = api.post(paths.HELLO, {"mac": PARTS, "token": parts_token, "facts": {**facts, "mac": PARTS}})
    assert status == 200 and erase["action"] == "erase" and erase["erase"]["lot"] == "Lot 7", erase
    moving = {"token": parts_token, "drives": {"sda": 0.5, "nvme0n1": None}, "stage": "verifying"}
    status, moved = api.post(paths.RUN_ERASURE_PROGRESS, moving, run=erase["run"])
    assert status == 200 and (moved["state"], moved["screen"]["word"]) == ("erasing", "effacement"), moved
    drives = [drive("sda"), drive("nvme0n1", method="nvme-sanitize-crypto", serial=None)]
    erased = erasure_report(parts_token, *drives).to_dict()
    assert api.post(paths.RUN_ERASURE, {**erased, "token": "0" * 32}, run=erase["run"])[0] == 403
    status, ended = api.post(paths.RUN_ERASURE, erased, run=erase["run"])
    assert status == 200 and ended["state"] == "done", ended
    assert api.post(paths.RUN_ERASURE, erased, run=erase["run"])[0] == 409
    status, parts_runs = api.get(paths.RUNS, {"mac": PARTS})
    assert [e["serial"] for e in parts_runs[0]["erasures"]] == ["WD-WCC4N1234567", None]

    # the records
    status, machines = api.get(paths.MACHINES)
    assert status == 200 and {m["mac"] for m in machines} == {MAC, WAITING, PARTS}
    status, events = api.get(paths.MACHINE_EVENTS, mac=MAC)
    assert status == 200 and {"progress", "firstboot"} <= {e["kind"] for e in events}
    status, runs = api.get(paths.RUNS, {"mac": MAC})
    assert status == 200 and [r["id"] for r in runs] == [run_id] and runs[0]["verifications"][0]["complete"]
    assert {k: runs[0]["transfer"][k] for k in transfer} == transfer and runs[0]["transfer"]["bytes_multicast"] == 0
    assert api.get(paths.RUN, run=run_id)[1]["state"] == "done"

    # a golden PC its recipe captures (docs/capture.md): one offer, the one chunk asked for uploaded, done
    disk = make_disk(tmp_path / "golden.raw", 4 * MiB, [(MiB, 100_000)], seed=9).read_bytes()
    golden = token_of(run.url, GOLDEN)
    status, capture = api.post(paths.HELLO, {"mac": GOLDEN, "token": golden, "facts": {**facts, "mac": GOLDEN},
                                             "capture": True})  # fmt: skip
    assert status == 200 and capture["action"] == "capture" and capture["capture"]["image"] == "golden", capture
    sha = hashlib.sha256(disk).hexdigest()
    offer = {"token": golden, "disk_size": len(disk), "first": 0, "chunks": [sha]}
    assert api.post(paths.RUN_CAPTURE_OFFER, offer, run=capture["run"]) == (200, {"missing": [sha], "offered": 1})
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(disk)
    upload = {TOKEN_HEADER: golden, "Content-Type": "application/zstd"}
    assert api.put(paths.RUN_CAPTURE_CHUNK, frame[:-9], upload, run=capture["run"], sha256=sha)[0] == 422
    status, stored = api.put(paths.RUN_CAPTURE_CHUNK, frame, upload, run=capture["run"], sha256=sha)
    assert status == 200 and stored["new"], stored
    end = {"token": golden, "disk_size": len(disk), "sector_size": 512, "sha256": sha, "chunks": 1, "holes": 0,
           "read_bytes": len(disk), "uploaded_chunks": 1, "uploaded_bytes": len(frame), "seconds": 1.0}  # fmt: skip
    status, captured = api.post(paths.RUN_CAPTURE_DONE, end, run=capture["run"])
    assert status == 200 and captured["state"] == "done", captured
    status, golden_runs = api.get(paths.RUNS, {"mac": GOLDEN})
    assert golden_runs[0]["kind"] == "capture" and golden_runs[0]["captured"]["uploaded_chunks"] == 1

    # refusals: each error body follows the document too
    assert api.get(paths.RUN, run="no-such-run")[0] == 404
    assert api.get(paths.MACHINE_EVENTS, mac="not-a-mac")[0] == 400
    assert api.get(paths.RUNS, {"mac": "zz"})[0] == 400
    status, again = api.post(paths.HELLO, {"mac": MAC, "token": token, "facts": facts})
    assert status == 409 and again["state"] == "done", again
    assert api.post(paths.RUN_PROGRESS, {**body, "token": token}, run=run_id)[0] == 409
    status, invalid = api.post(paths.RUN_PROGRESS, {"token": "x", "stage": "done"}, valid=False, run=run_id)
    assert status == 422 and {p["field"] for p in invalid["problems"]} >= {"token", "stage", "rate"}, invalid
    assert api.post(paths.HELLO, "{not json", valid=False)[0] == 400
    assert api.post(paths.FIRSTBOOT, {**call, "mac": "52:54:00:99:99:99"})[0] == 404
    assert api.post(paths.RUN_REPORT, {"token": token, "ok": True, "report": report}, run="no-such-run")[0] == 404

    covered = {(m, t) for m, t, _ in api.seen}
    json_routes = {(m.upper(), p) for p, ops in api.doc["paths"].items() for m, op in ops.items()
                   if "application/json" in op["responses"]["200"]["content"]}  # fmt: skip
    assert covered == json_routes
