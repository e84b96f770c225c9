"""The PC's own screen (provision.agent.screen): big digits that fit the console, hostile text cleaned and
wrapped, the dashboard's French words, a console that cannot be drawn on, and the agent's run drawn on it."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from provision.agent.client import ServerApi
from provision.agent.index import canonical_json, read_index
from provision.agent.main import EXIT_DONE, EXIT_FAILED, EXIT_REPAIR, Agent, AgentConfig, run_agent
from provision.agent.screen import (
    BLOCK,
    CALL_IT,
    FONT,
    STAGE_SYMBOLS,
    STAGE_WORDS,
    TILE_WORD,
    Console,
    View,
    big_number,
    clean,
    lines,
    paint,
    wrap,
)
from provision.dashboard import reasons
from provision.dashboard.i18n import translations
from provision.dashboard.views import STAGE_WORDS as DASHBOARD_WORDS
from provision.dashboard.views import Stage
from provision.wire.api import Screen
from tests.support.agent import FAST, INDEX_PATH, SERVER, FakeSession, build_image, random_disk
from tests.support.files import sparse_file
from tests.support.paths import SAMPLE_PROBE

MAC = "52:54:00:12:34:56"
HOSTILE = (
    "disk \x1b[31mred\x1b[0m \x1b]0;owned\x07 \x9b2J bell\x07 back\x08 cr\r lf\n tab\t "
    "\u202eevil\u202c zero\u200bwidth \U0001f4a5 \x00nul \x1bc reset"
)


def test_big_digits_fit_a_80x25_console_for_every_tile_number() -> None:
    for number in [*range(100), 100, 101, 123, 555, 999]:
        shown = lines(View(tile=number, stage="writing", percent=50, reason="r " * 300, action="a " * 200, at=0))
        assert len(shown) <= 25 and max(len(line) for line in shown) <= 80, number
        digits = [line for line in shown if BLOCK * 2 in line and "[" not in line]
        assert len(digits) == 7, (number, shown)  # 7 rows of block digits, the bar apart
        assert shown[0].strip().startswith(f"{TILE_WORD} {number}")


def test_block_digits_draw_the_font() -> None:
    rows = big_number("80")
    assert len(rows) == 7
    for row, (eight, zero) in enumerate(zip(FONT["8"], FONT["0"], strict=True)):
        pixels = "".join("#" if c == BLOCK else " " for c in rows[row][::2])
        assert pixels.ljust(11) == (eight + " " + zero).ljust(11)
    assert len(big_number("7", scale=2)) == 14 and len(big_number("7", scale=2)[0]) == 20


def test_a_larger_console_gets_larger_digits() -> None:
    small = [line for line in lines(View(tile=42), 80, 25) if BLOCK in line]
    large = [line for line in lines(View(tile=42), 200, 60) if BLOCK in line]
    assert len(small) == 7 and len(large) >= 21
    assert max(len(line) for line in lines(View(tile=42), 200, 60)) <= 200


def test_a_number_too_long_for_block_digits_is_said_in_text() -> None:
    shown = lines(View(tile=12345678901), 80, 25)
    assert not any(BLOCK in line for line in shown) and f"{TILE_WORD} 12345678901" in shown[2]


def test_hostile_text_is_cleaned() -> None:
    said = clean(HOSTILE)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u200b\u202c\u202e]", said), repr(said)
    assert "red" in said and "owned" not in said and "evil" in said and "?" in said  # the emoji: no glyph
    assert "  " not in said
    assert clean("l\u2019image\u202f: 2\u00a0Go \u2013 ok\u2026") == "l'image : 2 Go - ok..."
    assert clean("é è à ç É ° « » █") == "é è à ç É ° « » █"  # what the console font has stays


def test_hostile_and_very_long_reasons_are_wrapped_within_the_screen() -> None:
    long_word = "x" * 5000
    for reason in (HOSTILE * 20, long_word, "mot " * 2000):
        view = View(tile=7, stage="failed", reason=reason, action=reason, at=0)
        shown = lines(view)
        assert len(shown) <= 25 and max(len(line) for line in shown) <= 80
        assert all(not re.search(r"[\x00-\x1f\x7f-\x9f]", line) for line in shown)
        assert any(line.endswith("...") for line in shown)
        # the only escape sequences drawn are the screen's own: without them, the painted screen is the text
        plain = re.sub(r"\x1b\[(?:[0-9;]*m|9;0\]|H|2J|\d+;1H)", "", paint(view))
        assert [line.rstrip() for line in plain.split("\r\n")] == shown
    assert wrap(long_word, 20, 3) == ["x" * 20, "x" * 20, "x" * 17 + "..."]


def test_the_words_are_the_dashboard_catalogue_s() -> None:
    french = translations("fr").gettext
    for stage, word in STAGE_WORDS.items():
        assert word == french(DASHBOARD_WORDS[Stage(stage)]), stage
    assert set(STAGE_WORDS) >= {"booting", "inventory", "writing", "verifying", "hooks", "done", "failed", "repair"}
    assert french("Tile") == TILE_WORD
    assert french(reasons.CALL_IT) == CALL_IT


def test_every_stage_has_a_symbol_and_the_final_ones_differ() -> None:
    assert set(STAGE_SYMBOLS) == set(STAGE_WORDS)
    assert len({STAGE_SYMBOLS[s] for s in ("done", "failed", "repair", "waiting")}) == 4
    for stage in STAGE_WORDS:
        text = "\n".join(lines(View(tile=1, stage=stage)))
        assert f"{STAGE_SYMBOLS[stage]}  {STAGE_WORDS[stage]}" in text  # the state in a symbol AND a word


def test_a_failure_shows_the_reason_and_the_action() -> None:
    view = View(tile=12, stage="failed", reason="le disque a 312 secteurs réalloués", action="remplacez le disque")
    text = "\n".join(lines(view))
    assert "X  échec" in text and "le disque a 312 secteurs réalloués" in text and "-> remplacez le disque" in text
    painted = paint(view)
    assert "\x1b[1;37;41m" in painted and "\x1b[2J" in painted  # red, and cleared first
    assert "\x1b[?25l" not in painted  # the cursor stays: a rescue shell may follow on this console


def test_the_server_s_screen_is_merged() -> None:
    view = View(stage="writing", percent=40).merged(Screen(tile=3, stage="repair", word="réparation", reason="r"))
    assert (view.tile, view.stage, view.percent, view.reason) == (3, "repair", None, "r")
    view = View(stage="writing", percent=40).merged(Screen(tile=5, stage="writing"))
    assert (view.tile, view.percent) == (5, 40)
    unknown = View().merged(Screen(tile=1, stage="ignored", word="ignor\x1b[2Jé"))
    assert unknown.stage_word == "ignoré"


def test_a_progress_answer_changes_only_the_tile_number() -> None:
    console = Console(None)
    console.progress("verifying", 5, 10)
    console.number(Screen(tile=8, stage="writing", word="écriture"))
    assert (console.view.tile, console.view.stage, console.view.percent) == (8, "verifying", 50)
    console.number(None)
    console.number(Screen(stage="writing"))
    assert console.view.tile == 8


def test_the_console_draws_on_its_device_and_keeps_the_newest(tmp_path: Path) -> None:
    device = tmp_path / "tty1"
    device.touch()
    console = Console(device, mac=MAC, clock=lambda: 0.0)
    console.show(stage="booting")
    console.server(Screen(tile=9, stage="inventory", word="inventaire"))
    console.progress("writing", 30, 100)
    text = device.read_text(encoding="utf-8")
    assert text.startswith("\x1b[9;0]") and text.count("\x1b[2J") == 1  # the newest drawing only
    assert f"{TILE_WORD} 9" in text and "écriture" in text and " 30 %" in text and MAC in text
    assert console.drawn == 3


def test_a_console_that_cannot_be_drawn_on_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    console = Console(tmp_path / "missing" / "tty1")
    with caplog.at_level(logging.WARNING):
        for percent in range(5):
            console.progress("writing", percent, 10)
        console.failed("boom")
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert len(caplog.records) == 1 and "cannot be drawn on" in caplog.text
    assert not (tmp_path / "missing").exists() and console.drawn == 0
    Console(None).show(stage="done")  # no screen: nothing at all


def test_a_failure_without_the_server_s_words_shows_the_recorded_reason(tmp_path: Path) -> None:
    console = Console(None)
    console.failed("FetchFailed: \x1b[2Jserver gone")
    assert (console.view.stage, console.view.action) == ("failed", CALL_IT)
    assert "server gone" in "\n".join(lines(console.view))
    console.failed("VerifyFailed: x", Screen(tile=2, stage="failed", reason="le disque relit mal", action="remplacez"))
    assert (console.view.tile, console.view.reason, console.view.action) == (2, "le disque relit mal", "remplacez")


# the agent's run drawn on the screen


class ScreenApi(ServerApi):
    """Answers like a server that gives screens (tile 4)."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        super().__init__(SERVER, MAC, "t" * 32, sleep=lambda s: None)
        self.answers = answers
        self.hellos: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def post(self, path: str, body: Mapping[str, Any], *, retry: bool = True) -> dict[str, Any]:
        if path == "/api/v1/hello":
            self.hellos.append(dict(body))
            return self.answers.pop(0)
        if path.endswith("/report"):
            if body["ok"]:
                return {"run": "r1", "state": "done", "screen": {"tile": 4, "stage": "done", "word": "terminé"}}
            screen = {"tile": 4, "stage": "failed", "word": "échec", "reason": "la copie a échoué", "action": "agir"}
            return {"run": "r1", "state": "failed", "reason": body.get("reason"), "screen": screen}
        return {"run": "r1", "state": "writing", "ok": True, "screen": {"tile": 4, "stage": "writing"}}


def _config(tmp_path: Path, screen: Path) -> AgentConfig:
    return AgentConfig(server=SERVER, mac=MAC, token="t" * 32, probe_dir=SAMPLE_PROBE, disks_from=tmp_path / "disks",
                       retry=FAST, once=True, screen=screen)  # fmt: skip


def _image_answer(digest: str) -> dict[str, Any]:
    plan = {"image": "educ", "version": "L", "digest": digest, "index_url": INDEX_PATH, "wipe": "zero"}
    screen = {"tile": 4, "stage": "inventory", "word": "inventaire"}
    return {"action": "image", "run": "r1", "plan": plan, "screen": screen}


def _device(tmp_path: Path) -> Path:
    device = tmp_path / "tty1"
    device.touch()
    (tmp_path / "disks").mkdir()
    return device


def test_a_run_is_drawn_from_the_hello_to_done(tmp_path: Path) -> None:
    device = _device(tmp_path)
    session = FakeSession(build_image(random_disk(24 * 65536, [1, 2, 5, 9, 20])))
    sparse_file(tmp_path / "disks" / "vda", 24 * 65536)
    api = ScreenApi([_image_answer(read_index(canonical_json(session.image.index)).digest)])
    seen: list[str] = []
    console = Console(device, mac=MAC)
    drawn = console._write

    def record(view: View) -> None:
        seen.append(f"{view.tile} {view.stage} {view.percent}")
        drawn(view)

    console._write = record  # type: ignore[method-assign]
    outcome = Agent(_config(tmp_path, device), api=api, chunk_session=lambda n: session, console=console).run_once()
    assert outcome.code == EXIT_DONE
    assert api.hellos[0]["screen"] is True  # the hello asks for the screen
    assert seen[0] == "None booting None" and "4 inventory None" in seen
    assert any(s.startswith("4 writing") for s in seen) and any(s.startswith("4 verifying") for s in seen)
    assert seen[-1] == "4 done 100"
    text = device.read_text(encoding="utf-8")
    assert f"{TILE_WORD} 4" in text and "√  terminé" in text and "100 %" in text


def test_a_failed_run_shows_the_server_s_words(tmp_path: Path) -> None:
    device = _device(tmp_path)  # no disk: the run fails
    session = FakeSession(build_image(random_disk(24 * 65536, [1])))
    api = ScreenApi([_image_answer(read_index(canonical_json(session.image.index)).digest)])
    outcome = run_agent(_config(tmp_path, device), api=api, chunk_session=lambda n: session)
    assert outcome.code == EXIT_FAILED
    text = device.read_text(encoding="utf-8")
    assert "X  échec" in text and "la copie a échoué" in text and "-> agir" in text and f"{TILE_WORD} 4" in text


def test_repair_and_a_server_that_cannot_be_reached(tmp_path: Path) -> None:
    device = _device(tmp_path)
    screen = {"tile": 6, "stage": "repair", "word": "réparation", "reason": "le disque a 312 secteurs réalloués",
              "action": "remplacez le disque"}  # fmt: skip
    api = ScreenApi([{"action": "repair", "reasons": ["reallocated sectors 312 > 5"], "screen": screen}])
    assert run_agent(_config(tmp_path, device), api=api).code == EXIT_REPAIR
    text = device.read_text(encoding="utf-8")
    assert "▲  réparation" in text and "le disque a 312 secteurs réalloués" in text and f"{TILE_WORD} 6" in text
    old = ScreenApi([{"action": "repair", "reasons": ["reallocated sectors 312 > 5"]}])  # an older server
    assert run_agent(_config(tmp_path, device), api=old).code == EXIT_REPAIR
    text = device.read_text(encoding="utf-8")
    assert "réparation" in text and "reallocated sectors 312 > 5" in text and CALL_IT.replace("\u2019", "'") in text
    gone = AgentConfig(server="http://127.0.0.1:9", mac=MAC, token="t" * 32, probe_dir=SAMPLE_PROBE,
                       hello_deadline=0.0, screen=device)  # fmt: skip
    assert run_agent(gone).code == EXIT_FAILED
    text = device.read_text(encoding="utf-8")
    assert "X  échec" in text and "ServerUnreachable" in text


def test_the_screen_is_drawn_on_tty1_in_the_live_environment_only() -> None:
    from provision.agent.__main__ import parse_args, screen_path

    live = "console=ttyS0 provision.server=http://10.0.0.1:8080 provision.mac=52:54:00:12:34:56"
    assert screen_path(parse_args([]), live) == Path("/dev/tty1")
    assert screen_path(parse_args([]), "console=ttyS0 quiet") is None  # a workstation: its terminals are its own
    assert screen_path(parse_args(["--screen", "/tmp/screen"]), "") == Path("/tmp/screen")
    assert screen_path(parse_args(["--no-screen"]), live) is None


def test_the_live_environment_carries_the_screen_module() -> None:
    from provision.live.payload import agent_files

    assert "provision/agent/screen.py" in agent_files()
