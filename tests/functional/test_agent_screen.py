"""The PC's own screen against a real ``provision serve`` (127.0.0.1, every port 0): the agent's client gets its
tile's number in the hello's answer (1 for the first PC of the session, 2 for the second), a repaired PC the
French sentence of its reason; an older agent's hello gets no screen; a whole run draws its screen."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from provision.agent.client import ServerApi
from provision.agent.main import EXIT_DONE, read_probe_folder
from provision.agent.screen import TILE_WORD
from provision.images import ImageStore
from provision.wire.api import BootInfo, ImageAnswer, RepairAnswer, Report
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE
from tests.support.runs import in_process, make_site
from tests.support.serve import Running, start, stop

DEFAULT = "name: default\ndefault: true\nimage: tiny\nwipe: zero\n"
WEAK_MAC = "52:54:00:5c:00:03"
WEAK = f"name: weak\nmatch:\n  mac: '{WEAK_MAC}'\nimage: tiny\nhealth:\n  min_ram_mb: 10000000\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("screen")
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(DEFAULT)
    (recipes / "weak.yaml").write_text(WEAK)
    images = ImageStore(tmp / "images")
    images.import_raw(make_disk(tmp / "d.raw", 4 * MiB, [(MiB, 200_000)], seed=7), "tiny", chunk_size=CHUNK)
    config = tmp / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp / "images")}))
    run = start(tmp, "--config", str(config))
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            stop(run)


def token(url: str, mac: str) -> str:
    """What the PC's iPXE fetches first: its boot script, with the per-boot token."""
    found = re.search(r"provision\.token=([0-9a-f]+)", requests.get(f"{url}/boot/{mac}.ipxe", timeout=10).text)
    assert found is not None
    return found.group(1)


def hello(url: str, mac: str, probe: Path = SAMPLE_PROBE) -> tuple[ServerApi, ImageAnswer | RepairAnswer]:
    """The agent's client for a PC that just booted, and the answer to its hello (with its probe)."""
    files, warnings = read_probe_folder(probe)
    api = ServerApi(url, mac, token(url, mac), deadline=10)
    answer = api.hello(BootInfo(), files, warnings)
    assert isinstance(answer, ImageAnswer | RepairAnswer), answer
    return api, answer


def test_hello_answers_carry_the_tile_number_and_the_reason_in_french(server: Running, tmp_path: Path) -> None:
    probe = Path(shutil.copytree(SAMPLE_PROBE, tmp_path / "probe"))
    (probe / "mac").write_text(f"{WEAK_MAC}\n")  # the recipe "weak" matches this PC: RAM below its gate
    _, first = hello(server.url, "52:54:00:5c:00:01")
    _, second = hello(server.url, "52:54:00:5c:00:02")
    _, weak = hello(server.url, WEAK_MAC, probe)
    assert isinstance(first, ImageAnswer) and isinstance(second, ImageAnswer)
    assert first.screen is not None and second.screen is not None
    assert (first.screen.tile, first.screen.stage, first.screen.word) == (1, "inventory", "inventaire")
    assert second.screen.tile == 2 and second.screen.reason is None
    assert isinstance(weak, RepairAnswer) and weak.screen is not None
    assert (weak.screen.tile, weak.screen.stage, weak.screen.word) == (3, "repair", "réparation")
    assert re.fullmatch(r"pas assez de mémoire\s: \d+ Mio, 10000000 nécessaires", weak.screen.reason or "")
    assert weak.screen.action == "ajoutez de la mémoire"
    # the rack view numbers the same tiles
    rack = requests.get(f"{server.url}/", timeout=10).text
    assert re.search(r'data-mac="52:54:00:5c:00:01" data-number="1"', rack)
    assert re.search(rf'data-mac="{WEAK_MAC}" data-number="3"', rack)


def test_an_older_agent_s_hello_gets_no_screen(server: Running) -> None:
    mac = "52:54:00:5c:00:04"
    files, _ = read_probe_folder(SAMPLE_PROBE)
    body = {"mac": mac, "token": token(server.url, mac), "probe": files}
    answer = requests.post(f"{server.url}/api/v1/hello", json=body, timeout=10).json()
    assert answer["action"] == "image" and "screen" not in answer


def test_progress_and_report_answers_carry_the_screen(server: Running) -> None:
    api, answer = hello(server.url, "52:54:00:5c:00:05")
    assert isinstance(answer, ImageAnswer) and answer.screen is not None
    screen = api.progress(answer.run, "writing", 10, 100, 5.0)
    assert screen is not None and (screen.tile, screen.stage, screen.word) == (
        answer.screen.tile,
        "writing",
        "écriture",
    )
    reason = "NoTargetDisk: no disk can take the image (4.0 MB): vda: too small for the image (disk 2 MB)"
    ended = api.report(answer.run, Report(api.token, False, reason))
    assert ended.state == "failed" and ended.screen is not None
    assert (ended.screen.tile, ended.screen.stage, ended.screen.word) == (answer.screen.tile, "failed", "échec")
    assert ended.screen.reason == "aucun disque n\u2019est assez grand pour l\u2019image"
    assert ended.screen.action == "montez un disque plus grand"
    # what an agent waiting for its hooks reads: the run, with ?screen=1 its screen too
    run = requests.get(f"{server.url}/api/v1/runs/{answer.run}", params={"screen": "1"}, timeout=10).json()
    assert run["state"] == "failed" and run["screen"] == ended.screen.to_dict()
    assert "screen" not in requests.get(f"{server.url}/api/v1/runs/{answer.run}", timeout=10).json()


def test_a_whole_run_draws_its_screen(tmp_path: Path) -> None:
    device = tmp_path / "tty1"
    device.touch()
    with make_site(tmp_path) as site:
        outcome = in_process(site, tmp_path, "52:54:00:5c:00:10", screen=device)
        assert outcome.code == EXIT_DONE, outcome
        text = device.read_text(encoding="utf-8")
        assert f"{TILE_WORD} 1" in text and "terminé" in text and "100 %" in text
        assert "\x1b[2J" in text and "52:54:00:5c:00:10" in text
