"""The ``Screen`` of the agent API's answers (provision.wire.api), the server's side that fills it
(provision.dashboard.screen) and the agent's side that reads it (provision.agent.client): optional on every
answer, so answers without it (an older server) still read, and a hello without the flag (an older agent)
gets none."""

from __future__ import annotations

import json
from json import dumps
from typing import Any

import pytest
import requests

from provision.agent.client import ServerApi, screen_of
from provision.dashboard.reasons import explain, no_network
from provision.dashboard.screen import screen_of_tile
from provision.dashboard.views import Hardware, Stage, Tile
from provision.errors import InvalidPayload
from provision.wire.api import (
    BootInfo,
    Hello,
    ImageAnswer,
    LocalAnswer,
    ProgressAnswer,
    RepairAnswer,
    Report,
    RunAnswer,
    Screen,
    WaitAnswer,
)

PLAN = {"image": "educ", "version": "L", "digest": "0" * 64}
OLD_ANSWERS: list[tuple[type[Any], dict[str, Any]]] = [
    (ImageAnswer, {"action": "image", "run": "r1", "plan": PLAN, "recipe": "default"}),
    (WaitAnswer, {"action": "wait", "reason": "no recipe matches", "retry_after": 30}),
    (RepairAnswer, {"action": "repair", "reasons": ["RAM MiB 2048 < 4096"], "recipe": "weak"}),
    (LocalAnswer, {"action": "local", "reason": "recipe says: boot the local disk", "retry_after": 30}),
    (ProgressAnswer, {"run": "r1", "state": "writing", "ok": True}),
    (RunAnswer, {"run": "r1", "state": "failed", "reason": "VerifyFailed: x"}),
]
SCREEN: dict[str, Any] = {
    "tile": 3,
    "stage": "repair",
    "word": "réparation",
    "reason": "pas assez de mémoire",
    "action": "ajoutez",
}


@pytest.mark.parametrize(("kind", "data"), OLD_ANSWERS, ids=[k.__name__ for k, _ in OLD_ANSWERS])
def test_answers_without_a_screen_still_read(kind: type[Any], data: dict[str, Any]) -> None:
    answer = kind.from_dict(data)
    assert answer.screen is None
    assert "screen" not in answer.to_dict() or answer.to_dict()["screen"] is None


@pytest.mark.parametrize(("kind", "data"), OLD_ANSWERS, ids=[k.__name__ for k, _ in OLD_ANSWERS])
def test_answers_carry_a_screen(kind: type[Any], data: dict[str, Any]) -> None:
    answer = kind.from_dict({**data, "screen": SCREEN})
    assert answer.screen == Screen(**SCREEN)
    assert kind.from_dict(json.loads(json.dumps(answer.to_dict()))) == answer


def test_a_screen_omits_what_it_does_not_know() -> None:
    assert Screen(tile=1, stage="writing").to_dict() == {"tile": 1, "stage": "writing"}
    assert Screen.from_dict({}) == Screen()


@pytest.mark.parametrize(
    "bad",
    [{"tile": -1}, {"tile": "1"}, {"stage": "Écriture"}, {"stage": "x" * 33}, {"word": "w" * 65},
     {"reason": "r" * 1001}, {"colour": "red"}],
)  # fmt: skip
def test_a_bad_screen_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        Screen.from_dict(bad)
    assert screen_of({"screen": bad}) is None  # the agent leaves it out, the answer stands


def test_a_hello_says_whether_its_agent_reads_screens() -> None:
    old = Hello.from_dict({"mac": "52:54:00:12:34:56", "token": "t" * 32})
    assert old.screen is None and "screen" not in old.to_dict()
    assert Hello.from_dict({"mac": "52:54:00:12:34:56", "token": "t" * 32, "screen": True}).screen is True


def _tile(stage: Stage, reason: str | None, number: int = 3) -> Tile:
    return Tile(number=number, mac="52:54:00:12:34:56", vendor=None, model=None, hardware=Hardware(), recipe=None,
                hostname=None, stage=stage, progress=None, reasons=tuple(explain(reason)), image=None, label=None,
                last_seen=0.0)  # fmt: skip


def test_the_server_says_the_tile_in_french() -> None:
    screen = screen_of_tile(_tile(Stage.REPAIR, "reallocated sectors 312 > 5; RAM MiB 2048 < 4096"))
    assert screen == Screen(tile=3, stage="repair", word="réparation", reason="le disque a 312 secteurs réalloués",
                            action="remplacez le disque")  # fmt: skip
    assert screen_of_tile(_tile(Stage.HOOKS, None)) == Screen(tile=3, stage="hooks", word="finitions")
    english = screen_of_tile(_tile(Stage.FAILED, "NoTargetDisk: vda: too small for the image"), "en")
    assert (english.word, english.reason) == ("failed", "no disk is large enough for the image")
    outside = screen_of_tile(_tile(Stage.BOOTING, None, number=0))
    assert outside.tile is None and outside.word == "démarrage"
    silent = Tile(**{**_tile(Stage.BOOTING, None).__dict__, "reasons": (no_network(),)})
    assert screen_of_tile(silent).reason == "pas de réseau après le démarrage"


def test_a_long_reason_is_cut_to_the_wire_s_limits() -> None:
    screen = screen_of_tile(_tile(Stage.FAILED, f"hook {'h' * 3000} timed out"))
    assert screen.reason is not None and len(screen.reason) <= 1000 and screen.reason.endswith("\u2026")
    assert Screen.from_dict(screen.to_dict()) == screen


class OneAnswer(requests.Session):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__()
        self.body = body
        self.sent: list[dict[str, Any]] = []

    def post(self, url: str | bytes, data: Any = None, json: Any = None, **kw: Any) -> requests.Response:
        self.sent.append(json)
        response = requests.Response()
        response.status_code = 200
        response._content = dumps(self.body).encode()
        return response


def test_the_agent_s_client_reads_the_screen_and_survives_a_bad_one() -> None:
    session = OneAnswer({"action": "wait", "reason": "no recipe matches", "screen": SCREEN})
    api = ServerApi("http://server.test", "52:54:00:12:34:56", "t" * 32, session=session)
    answer = api.hello(BootInfo(), {}, [])
    assert isinstance(answer, WaitAnswer) and answer.screen == Screen(**SCREEN)
    assert session.sent[0]["screen"] is True
    session.body = {"action": "wait", "reason": "no recipe matches", "screen": {"tile": "three"}}
    answer = api.hello(BootInfo(), {}, [])
    assert isinstance(answer, WaitAnswer) and answer.screen is None and answer.reason == "no recipe matches"
    session.body = {"run": "r1", "state": "failed", "reason": "x", "screen": SCREEN}
    assert api.progress("r1", "writing", 1, 2, 0.0) == Screen(**SCREEN)
    failure = Report("t" * 32, False, "boom")
    assert api.report("r1", failure).screen == Screen(**SCREEN)
    session.body = {"run": "r1", "state": "done"}  # an older server
    assert api.progress("r1", "writing", 1, 2, 0.0) is None and api.report("r1", failure).screen is None
