"""The dashboard of a real ``provision serve`` (127.0.0.1, every port 0), its machines moved by simulated agents
through the real API: pages in French and English, a failed and a repaired machine with their plain reasons,
a progress report arriving as a live tile over Server-Sent Events, strings from a machine's facts escaped.

One server for the module (each test has its own MACs): about 3 s in all."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.facts import load_probe
from provision.images import ImageStore
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE
from tests.support.serve import Running, start, stop

DEFAULT = "name: default\ndefault: true\nimage: tiny\nwipe: zero\n"
WEAK = "name: weak\nmatch:\n  vendor: 'Weakco*'\nimage: tiny\nhealth:\n  min_ram_mb: 10000000\n"
HOSTILE = "<script>alert('pwn')</script>&\"x\""


@dataclass
class Site:
    run: Running
    digest: str
    label: str
    data: int

    @property
    def url(self) -> str:
        return self.run.url

    def get(self, path: str, lang: str | None = None, **headers: str) -> requests.Response:
        params = {"lang": lang} if lang else None
        response = requests.get(f"{self.url}{path}", params=params, headers=headers, timeout=10)
        return response

    def token(self, mac: str) -> str:
        script = requests.get(f"{self.url}/boot/{mac}.ipxe", timeout=10).text
        found = re.search(r"provision\.token=([0-9a-f]+)", script)
        assert found is not None, script
        return found.group(1)

    def hello(self, mac: str, vendor: str | None = None, product: str | None = None) -> tuple[str, dict[str, Any]]:
        token = self.token(mac)
        facts = load_probe(SAMPLE_PROBE).to_dict()
        facts["dmi"]["system"].update({"vendor": vendor, "product": product})
        body = {"mac": mac, "token": token, "facts": facts}
        answer = requests.post(f"{self.url}/api/v1/hello", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        return token, answer.json()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = requests.post(f"{self.url}{path}", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard")
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(DEFAULT)
    (recipes / "weak.yaml").write_text(WEAK)
    images = ImageStore(tmp / "images")
    version = images.import_raw(make_disk(tmp / "d.raw", 4 * MiB, [(MiB, 200_000)], seed=7), "tiny", chunk_size=CHUNK)
    config = tmp / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp / "images")}))
    run = start(tmp, "--config", str(config))
    try:
        yield Site(run, version.digest, version.label, len(version.index.chunks) - version.index.holes)
    finally:
        if run.proc.poll() is None:
            stop(run)


def test_pages_in_french_by_default_and_in_english(site: Site) -> None:
    mac = "52:54:00:d0:00:01"
    token, answer = site.hello(mac, "Dell Inc.", "OptiPlex 7010")
    report = {"digest": site.digest, "chunks": site.data, "verified": site.data, "read_back_ok": True,
              "bytes_written": 1, "seconds": 1.0, "mean_rate": 1.0}  # fmt: skip
    assert site.post(f"/api/v1/runs/{answer['run']}/report", {"token": token, "ok": True, "report": report})
    french = site.get("/")
    assert french.status_code == 200 and '<html lang="fr">' in french.text
    assert "terminé" in french.text and "OptiPlex 7010" in french.text and "Recette" in french.text
    assert '<noscript><meta http-equiv="refresh"' in french.text  # reads without JavaScript
    english = site.get("/", "en")
    assert '<html lang="en">' in english.text and ">done<" in english.text and "Recipe" in english.text
    assert "lang=en" in english.headers["Set-Cookie"]
    assert ">done<" in requests.get(f"{site.url}/", cookies={"lang": "en"}, timeout=10).text
    assert '<html lang="en">' in site.get("/", **{"Accept-Language": "en-GB,en;q=0.9"}).text
    page = site.get(f"/machines/{mac}")
    assert page.status_code == 200
    assert "Vérification" in page.text and f"{site.data} / {site.data}" in page.text and site.digest in page.text
    assert "Pourquoi cette recette" in page.text and "default" in page.text
    english_page = site.get(f"/machines/{mac}", "en").text
    assert "Why this recipe" in english_page and "No other recipe matched: this is the default recipe." in english_page
    assert "recipe default (" in english_page and "Image digest" in english_page
    image = site.get("/images/tiny", "en")
    assert image.status_code == 200 and site.label in image.text and "current version" in image.text
    assert f'href="/machines/{mac}"' in image.text  # the machine holds that version
    assert site.get("/images/nothing").status_code == 404
    assert site.get("/machines/52:54:00:ff:ff:ff").status_code == 404
    assert site.get("/machines/not-a-mac").status_code == 404
    assert site.get("/dashboard/static/dashboard.js").status_code == 200


def test_a_failed_and_a_repaired_machine_show_their_reasons(site: Site) -> None:
    failed, weak = "52:54:00:d0:00:02", "52:54:00:d0:00:03"
    token, answer = site.hello(failed, "HP", "Compaq 8000")
    reason = "NoTargetDisk: no disk can take the image (4.0 MB): vda: too small for the image (disk 2 MB)"
    site.post(f"/api/v1/runs/{answer['run']}/report", {"token": token, "ok": False, "reason": reason})
    assert site.hello(weak, "Weakco", "Slowbook")[1]["action"] == "repair"
    english, french = site.get("/", "en").text, site.get("/", "fr").text
    assert "no disk is large enough for the image</strong>: fit a larger disk" in english
    assert "aucun disque n\u2019est assez grand pour l\u2019image</strong>\u202f: montez un disque plus grand" in french
    assert re.search(r"not enough memory: \d+ MiB, 10000000 needed</strong>: add memory", english)
    assert "✖" in english and ">failed<" in english and "⚠" in english and ">repair<" in english
    page = site.get(f"/machines/{failed}", "en").text
    assert reason in page and "no disk is large enough" in page


def test_the_live_stream_delivers_a_progress_report(site: Site) -> None:
    mac = "52:54:00:d0:00:04"
    token, answer = site.hello(mac, "Lenovo", "ThinkCentre M73")
    lines: list[str] = []
    ready, found = threading.Event(), threading.Event()

    def listen() -> None:
        with requests.get(f"{site.url}/dashboard/events", params={"lang": "en"}, stream=True, timeout=15) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            for line in r.iter_lines(decode_unicode=True):
                lines.append(line)
                ready.set()
                if line.startswith("data: ") and json.loads(line[6:])["stage"] == "writing":
                    found.set()
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(10), "no stream"
    progress = {"token": token, "stage": "writing", "bytes_done": 3 * MiB, "bytes_total": 4 * MiB, "rate": 2.0 * MiB}
    site.post(f"/api/v1/runs/{answer['run']}/progress", progress)
    assert found.wait(10), lines
    data = json.loads(lines[-1][6:])
    assert data["mac"] == mac and data["number"] > 0
    assert "75 %" in data["html"] and "writing" in data["html"] and "2.1\u00a0MB/s" in data["html"]
    assert "event: tile" in lines


def test_strings_from_a_machine_are_escaped(site: Site) -> None:
    mac = "52:54:00:d0:00:05"
    site.hello(mac, HOSTILE, HOSTILE)
    for path in ("/", f"/machines/{mac}"):
        text = site.get(path).text
        assert "<script>" not in text
        assert "&lt;script&gt;alert(&#39;pwn&#39;)&lt;/script&gt;&amp;&#34;x&#34;" in text


def test_the_server_stops_while_a_stream_is_open(tmp_path: Path) -> None:
    run = start(tmp_path)
    with requests.get(f"{run.url}/dashboard/events", stream=True, timeout=10) as stream:
        assert next(stream.iter_lines()) == b"retry: 3000"
        code, _, err = stop(run)
    assert code == 0, err
