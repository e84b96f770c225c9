"""Fuzz the wire contract's checks (``wire-messages`` target): the agent API's request bodies, as the server
decodes them (``json.loads``) into ``Message.from_dict`` for Hello, Progress, Report and FirstBoot, without a
server. Bodies from tests/support/fuzz.py ``json_bodies`` (derived from the message classes themselves).

``from_dict`` raises nothing but InvalidPayload (422), whose problems name a field; a message it accepts gives
strict JSON back (``to_dict`` with no NaN or infinity, integers within SQLite's 64 bits, text encodable as
UTF-8 where the rule says ``clean_text``) that reads back to the same message.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import strategies as st

from provision.errors import InvalidPayload
from provision.wire import api
from provision.wire.schema import INT_LIMIT, Message
from tests.support import fuzz

KINDS: list[type[Message]] = [api.Hello, api.Progress, api.Report, api.FirstBoot]


def decoded(body: bytes) -> object | None:
    """What the server's json_body hands to from_dict, or None when it answers 400 first."""
    try:
        data: object = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return data


def numbers(value: Any) -> list[int | float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def test_fuzz_wire_messages() -> None:
    target = fuzz.target("wire-messages", examples=1000, budget=40, deadline=2, hang=20)

    @target.given(
        st.sampled_from(range(len(KINDS))).flatmap(lambda i: st.tuples(st.just(i), fuzz.json_bodies(KINDS[i]))),
        st.booleans(),
    )
    def case(drawn: tuple[int, Any], ascii_only: bool) -> None:
        kind = KINDS[drawn[0]]
        data = decoded(fuzz.encode(drawn[1], ensure_ascii=ascii_only))
        if data is None:
            target.tally["400 not JSON"] += 1
            return
        try:
            message = kind.from_dict(data)
        except InvalidPayload as exc:
            target.tally["422"] += 1
            problems = exc.http_body().get("problems", [])
            assert problems and all(isinstance(p.get("field"), str) for p in problems), exc.http_body()
            return
        target.tally["accepted"] += 1
        out = message.to_dict()
        text = json.dumps(out, allow_nan=False)  # ValueError: NaN or an infinity was accepted
        assert all(-INT_LIMIT <= n < INT_LIMIT for n in numbers(out) if isinstance(n, int)), out
        assert kind.from_dict(json.loads(text)) == message

    case()
    target.done()
    assert target.tally["accepted"] > 0 and target.tally["422"] > 0, target.tally


def test_any_field_refuses_nan() -> None:
    body = {"token": "0" * 32, "ok": False, "reason": "x", "writer": {"rate": float("nan")}}
    with pytest.raises(InvalidPayload):
        api.Report.from_dict(body)


def test_a_free_form_value_nested_past_the_bound_is_refused() -> None:
    """Found by the 100,000-case run (35,844th case): an object nested ~990 deep under ``writer`` was accepted,
    and ``to_dict`` then raised RecursionError."""
    deep: dict[str, Any] = {}
    for _ in range(990):
        deep = {"a": deep}
    with pytest.raises(InvalidPayload):
        api.Report.from_dict({"token": "0" * 32, "ok": False, "reason": "x", "writer": deep})
