"""The OpenAPI document (provision.wire.openapi, provision.web.openapi): a valid OpenAPI 3.1 document, one
operation per route ``make_app`` registers, and schemas that follow the wire classes (what ``to_dict``
gives is accepted, a limit changed in a class changes the schema, the schema and ``from_dict`` agree)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from provision.boot import Booter
from provision.config import ServerConfig
from provision.errors import InvalidPayload
from provision.images import ImageStore
from provision.store import Store
from provision.web import make_app
from provision.web.openapi import ROUTES, openapi_bytes, openapi_document
from provision.wire import api
from provision.wire.openapi import REF, json_schema
from provision.wire.schema import Message, Rule, rule

DIGEST = "ab" * 32
MESSAGES: list[Message] = [
    api.Hello(mac="52:54:00:12:34:56", token="t" * 32, boot=api.BootInfo("uefi", True, "6.1"),
              probe={"lspci.txt": "x"}, warnings=["w"], host_key="ssh-ed25519 " + "A" * 68),
    api.Hello(mac="52:54:00:12:34:56", token="t" * 32, facts={"vendor": "QEMU", "nested": [1, 2.5, None]}),
    api.ImageAnswer("r1", api.Plan("tiny", "L1", DIGEST, hooks=[{"name": "h"}], firstboot_secret="0" * 64), "d"),
    api.WaitAnswer("no recipe"),
    api.RepairAnswer(["disk has 312 reallocated sectors"], "default"),
    api.LocalAnswer("boot local"),
    api.Progress("t" * 32, "writing", 10, 100, 1.5),
    api.ProgressAnswer("r1", "writing"),
    api.Report("t" * 32, True, report=api.VerificationReport(DIGEST, 3, 3, True, 10, 1.0, 10.0,
               wipe_method="BLKZEROOUT", wipe_ranges=[(0, 4096)]), writer={"fetched": 3}),
    api.Report("t" * 32, False, reason="disk gone", error={"type": "OSError"}),
    api.RunAnswer("r1", "failed", "disk gone"),
    api.FirstBoot("firstboot", "52:54:00:12:34:56", "tiny", "L1", secret="0" * 64, packages=["a=1"]),
]  # fmt: skip


def validator(schema: dict[str, Any], doc: dict[str, Any] | None = None) -> OAS31Validator:
    """A validator of ``schema`` whose references resolve in ``doc``'s components."""
    return OAS31Validator({**schema, "components": (doc or openapi_document())["components"]})


def component(kind: type) -> OAS31Validator:
    return validator({"$ref": REF + kind.__name__})


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    validate_spec(doc)
    assert doc["openapi"] == "3.1.0"
    assert openapi_bytes() is openapi_bytes()  # made once per process


def test_every_json_route_of_the_app_is_in_the_document_and_no_other(tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite") as store:
        config = ServerConfig.model_validate(
            {"address": "198.18.0.1", "state_dir": str(tmp_path / "state"), "boot_root": str(tmp_path / "boot")}
        )
        app = make_app(Booter(config, store), ImageStore(tmp_path / "images"))
        served = {
            (r.method, r.resource.canonical)
            for r in app.router.routes()
            if r.resource is not None and r.method != "HEAD" and not (r.name or "").startswith("dashboard")
            and not r.resource.canonical.startswith(("/boot/", "/files", "/repo"))
        }  # fmt: skip
    documented = {(r.method, r.path) for r in ROUTES}
    assert served == documented
    doc = openapi_document()
    assert {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops} == documented


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_what_to_dict_gives_is_accepted_by_its_schema(msg: Message) -> None:
    component(type(msg)).validate(msg.to_dict())
    assert type(msg).from_dict(msg.to_dict()) == msg


def test_the_hello_answer_is_one_of_four_told_apart_by_action() -> None:
    [route] = [r for r in ROUTES if r.name == "hello"]
    schema = openapi_document()["paths"][route.path]["post"]["responses"]["200"]["content"]["application/json"]
    check = validator(schema["schema"])
    for msg in MESSAGES[2:6]:
        check.validate(msg.to_dict())
    assert schema["schema"]["discriminator"]["mapping"]["wait"] == REF + "WaitAnswer"
    assert not check.is_valid({**api.WaitAnswer("x").to_dict(), "action": "image"})


def rules_of(kind: type[Message]) -> dict[str, Rule]:
    return {f.name: f.metadata["wire"] for f in dataclasses.fields(kind) if "wire" in f.metadata}


@pytest.mark.parametrize("kind", [api.Hello, api.Progress, api.Report, api.FirstBoot, api.VerificationReport])
def test_every_limit_of_a_message_is_in_the_served_document(kind: type[Message]) -> None:
    properties = openapi_document()["components"]["schemas"][kind.__name__]["properties"]
    for name, limits in rules_of(kind).items():
        schema = properties[name]
        text = schema if "anyOf" not in schema else schema["anyOf"][0]
        if limits.max_length is not None:
            assert limits.max_length in (text.get("maxLength"), text.get("maxItems"), text.get("maxProperties"))
        if limits.min_length is not None:
            assert text["minLength"] == limits.min_length
        if limits.pattern is not None:
            assert text["pattern"] == f"^(?:{limits.pattern})$"
        if limits.ge is not None:
            assert text["minimum"] == limits.ge
        if limits.item_max_length is not None:
            assert text["items"]["maxLength"] == limits.item_max_length


def limited(most: int) -> type[Message]:
    @dataclass(frozen=True)
    class Call(Message):
        name: str = field(metadata=rule(min_length=2, max_length=most, pattern=r"[a-z]+"))
        count: int = field(default=0, metadata=rule(ge=1))
        tags: list[str] = field(default_factory=list, metadata=rule(max_length=most, item_max_length=3))
        kind: Literal["a", "b"] = "a"
        pair: tuple[int, str] | None = None

    return Call


def test_a_limit_changed_in_the_class_changes_the_schema() -> None:
    five, six = limited(5), limited(6)
    assert json_schema(five, {}) == {"$ref": REF + "Call"}
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    json_schema(five, first)
    json_schema(six, second)
    assert first["Call"]["properties"]["name"]["maxLength"] == 5
    assert second["Call"]["properties"]["name"]["maxLength"] == 6
    assert second["Call"]["properties"]["tags"]["maxItems"] == 6
    assert first["Call"]["properties"]["count"] == {"type": "integer", "minimum": 1, "maximum": (1 << 63) - 1,
                                                    "default": 0}  # fmt: skip


CASES: list[dict[str, Any]] = [
    {"name": "abc"},
    {"name": "abcdef"},  # over five
    {"name": "a"},
    {"name": "ab1"},
    {"name": "abc\n"},
    {"name": "abc", "count": 0},
    {"name": "abc", "count": 1.5},
    {"name": "abc", "count": True},
    {"name": "abc", "count": 1 << 63},
    {"name": "abc", "tags": ["abc", "abcd"]},
    {"name": "abc", "tags": ["a"] * 6},
    {"name": "abc", "kind": "c"},
    {"name": "abc", "pair": [1, "x"]},
    {"name": "abc", "pair": [1, 2]},
    {"name": "abc", "pair": [1, "x", 3]},
    {"name": "abc", "pair": None},
    {"name": "abc", "other": 1},
    {"count": 2},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: repr(c)[:40])
def test_the_schema_and_from_dict_agree(case: dict[str, Any]) -> None:
    kind = limited(5)
    components: dict[str, Any] = {}
    json_schema(kind, components)
    check = OAS31Validator({"$ref": REF + "Call", "components": {"schemas": components}})
    try:
        kind.from_dict(case)
        accepted = True
    except InvalidPayload:
        accepted = False
    # one difference, on purpose: "^...$" lets a trailing newline through in Python's re (JSON Schema's regex
    # dialect, ECMA 262, does not); the server matches the whole text and refuses it
    assert check.is_valid(case) == accepted or case == {"name": "abc\n"}


def test_request_messages_refused_by_from_dict_are_refused_by_the_document() -> None:
    check = component(api.Progress)
    good = api.Progress("t" * 32, "writing", 10, 100, 1.5).to_dict()
    no_rate = {k: v for k, v in good.items() if k != "rate"}
    for bad in ({**good, "token": "short"}, {**good, "stage": "done"}, {**good, "bytes_done": -1},
                {**good, "rate": "fast"}, {**good, "extra": 1}, no_rate):  # fmt: skip
        with pytest.raises(InvalidPayload):
            api.Progress.from_dict(bad)
        assert not check.is_valid(bad), bad
