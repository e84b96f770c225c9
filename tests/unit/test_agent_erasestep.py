"""The agent's erasure step with a fake server API (no sockets, no subprocess): the erasure report's call and
its 409, the progress poster, the screen's line and stage, and how the server's answer ends or continues the
run (erase-only done or repair; an image run stopped by repair; a failure before the report reported)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from provision.agent.client import ApiRefused, ErasurePoster, ServerApi
from provision.agent.disks import disks_in_folder
from provision.agent.erasestep import ErasureMeter
from provision.agent.main import EXIT_DONE, EXIT_FAILED, EXIT_REPAIR, Agent, AgentConfig
from provision.agent.screen import Console, View, lines
from provision.wire.erasure import ErasePlan, ErasureProgress, ErasureReport
from tests.support.erasure_disks import FakeNvme, fill, pattern_left
from tests.support.paths import SAMPLE_PROBE

MAC = "52:54:00:e5:00:09"
TOKEN = "t" * 32
MiB = 1 << 20
ERASE = {"method": "auto", "verify": "full"}


class FakeApi(ServerApi):
    """Answers from a script per path suffix and records every call."""

    def __init__(self, hello: dict[str, Any], erasure: dict[str, Any] | Exception | None = None) -> None:
        super().__init__("http://192.0.2.1:8080", MAC, TOKEN, sleep=lambda s: None)
        self.hello_answer, self.erasure_answer = hello, erasure
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.recorded: dict[str, Any] = {"state": "repair", "reason": "recorded already"}

    def post(self, path: str, body: Mapping[str, Any], *, retry: bool = True) -> dict[str, Any]:
        with self.lock:
            self.calls.append((path, dict(body)))
        if path.endswith("/hello"):
            return self.hello_answer
        if path.endswith("/erasure"):
            if isinstance(self.erasure_answer, Exception):
                raise self.erasure_answer
            return self.erasure_answer or {"run": "r1", "state": "done"}
        if path.endswith("/report"):
            return {"run": "r1", "state": "failed", "reason": body.get("reason")}
        return {"run": "r1", "state": "erasing"}

    def get(self, path: str) -> dict[str, Any]:
        self.calls.append((f"GET {path}", {}))
        return self.recorded

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        return [b for p, b in self.calls if p.endswith(suffix)]


def agent(tmp_path: Path, api: FakeApi, disks: Path | None = None) -> Agent:
    cfg = AgentConfig(server=api.server, mac=MAC, token=TOKEN, probe_dir=SAMPLE_PROBE, once=True,
                      disks_from=disks or tmp_path / "disks", host_key_file=None)  # fmt: skip
    return Agent(cfg, api=api, run=FakeNvme({}), sleep=lambda s: None, console=Console(None, mac=MAC))


def drives(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "disks"
    folder.mkdir()
    for name in names:
        fill(folder / name, 3 * MiB)
    return folder


def test_an_erase_only_run_is_done_when_the_server_says_so(tmp_path: Path) -> None:
    folder = drives(tmp_path, "sda", "sdb")
    api = FakeApi({"action": "erase", "run": "r1", "erase": ERASE})
    outcome = agent(tmp_path, api).run_once()
    assert (outcome.code, outcome.state, outcome.run) == (EXIT_DONE, "done", "r1")
    [body] = api.bodies("/erasure")
    report = ErasureReport.from_dict(body)
    assert report.ok and [d.device for d in report.drives] == ["sda", "sdb"] and report.token == TOKEN
    assert pattern_left(folder / "sda") == [] and pattern_left(folder / "sdb") == []
    progress = [ErasureProgress.from_dict(b) for b in api.bodies("/erasure/progress")]
    assert progress and progress[-1].drives == {"sda": 1.0, "sdb": 1.0} and progress[-1].stage == "verifying"
    assert not api.bodies("/report")


def test_a_repair_answer_ends_the_run_with_the_server_s_reason(tmp_path: Path) -> None:
    drives(tmp_path, "sda")
    reason = "drive sda (serial X) failed its verification: ...; set it aside for a technician"
    api = FakeApi({"action": "erase", "run": "r1", "erase": ERASE}, {"run": "r1", "state": "repair", "reason": reason})
    outcome = agent(tmp_path, api).run_once()
    assert (outcome.code, outcome.state, outcome.reason) == (EXIT_REPAIR, "repair", reason)


def test_an_image_run_stopped_by_the_erasure_writes_nothing(tmp_path: Path) -> None:
    drives(tmp_path, "vda")
    plan = {"image": "educ", "version": "L", "digest": "0" * 64, "index_url": "/x", "erase": ERASE}
    api = FakeApi({"action": "image", "run": "r1", "plan": plan}, {"run": "r1", "state": "repair", "reason": "no"})
    outcome = agent(tmp_path, api).run_once()
    assert (outcome.code, outcome.state, outcome.reason) == (EXIT_REPAIR, "repair", "no")
    assert [p for p, _ in api.calls if p.endswith(("/r1/progress", "/report"))] == []  # no write was started


def test_a_failure_before_the_erasure_report_is_reported(tmp_path: Path) -> None:
    api = FakeApi({"action": "erase", "run": "r1", "erase": ERASE})
    outcome = agent(tmp_path, api, tmp_path / "absent").run_once()  # the drives cannot be listed
    assert (outcome.code, outcome.state) == (EXIT_FAILED, "failed")
    [report] = api.bodies("/report")
    assert report["ok"] is False and report["reason"].startswith("the erasure failed: FileNotFoundError")


def test_the_erasure_report_s_409_answers_the_recorded_state(tmp_path: Path) -> None:
    api = FakeApi({}, ApiRefused("/api/v1/runs/r1/erasure", 409, "recorded already"))
    answer = api.erasure("r1", ErasureReport(TOKEN, []))
    assert (answer.state, answer.reason) == ("repair", "recorded already")
    assert api.calls[-1][0] == "GET /api/v1/runs/r1"


def test_the_poster_sends_the_newest_progress() -> None:
    api = FakeApi({})
    poster = ErasurePoster(api, "r1")
    for i in range(5):
        poster.put(ErasureProgress(TOKEN, {"sda": i / 4}))
    poster.close()
    sent = api.bodies("/erasure/progress")
    assert sent and sent[-1] == {"token": TOKEN, "drives": {"sda": 1.0}, "stage": "erasing"} and poster.failed == 0


def test_the_meter_says_each_drive_and_the_whole_in_french() -> None:
    meter = ErasureMeter(["sda", "nvme0n1"], 0.9)
    assert meter.line() == "2 disques : sda ?, nvme0n1 ?" and meter.percent() == 0
    meter.update("sda", "erasing", 0.5)
    percent, line = meter.update("nvme0n1", "verifying", 0.5)
    assert line == "2 disques : sda 50 %, nvme0n1 vérif. 50 %" and percent == (45 + 95) // 2
    assert meter.progress(TOKEN).stage == "erasing"
    meter.update("sda", "verifying", 1.0)
    assert meter.progress(TOKEN).stage == "verifying" and meter.percent() == 97
    assert ErasureMeter([], 0.9).line() == "aucun disque à effacer"


def test_the_screen_shows_the_erasing_stage_in_a_symbol_and_a_word() -> None:
    text = "\n".join(lines(View(tile=4, stage="erasing", percent=40, reason="1 disque : sda 40 %")))
    assert "▒  effacement" in text and " 40 %" in text and "1 disque : sda 40 %" in text


def test_a_silent_firmware_erase_still_posts_progress_so_the_token_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ATA SECURITY ERASE UNIT of a large disk says nothing for hours: the last progress goes again every
    HEARTBEAT seconds (each accepted progress extends the run's token on the server)."""
    from provision.agent import erasestep
    from provision.agent.erasure.engine import Erased

    def silent(*args: Any, **kwargs: Any) -> Erased:
        time.sleep(0.5)  # the drive's command, with no progress of its own
        return Erased([], [])

    monkeypatch.setattr(erasestep, "HEARTBEAT", 0.05)
    monkeypatch.setattr(erasestep, "erase_drives", silent)
    api = FakeApi({})
    disks = disks_in_folder(drives(tmp_path, "sda"))
    erasestep.erase_machine("r1", ErasePlan(), disks, set(), api=api, console=Console(None, mac=MAC), run=FakeNvme({}))
    assert len(api.bodies("/erasure/progress")) >= 3
    assert all(b["token"] == TOKEN for b in api.bodies("/erasure/progress"))
