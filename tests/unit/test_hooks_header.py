"""Hook headers (provision.hooks.header): the format, every problem located as FILE:LINE: key: message, the
parameter types and their conversion from rendered templates."""

from __future__ import annotations

import pytest

from provision.hooks import Header, OnFailure, ParamProblem, ParamType, Where, convert
from provision.hooks.header import MAX_VALUE_BYTES, parse
from tests.support.hooks import hook_text

GOOD = """
description: Set the hostname
where: target            # target | live | server
timeout: 60              # seconds, 1..21600
on_failure: fail         # fail | warn
params:
  hostname: {type: str, required: true, description: the machine's name}
  count: {type: int, default: 3}
  names: {type: "list[str]", default: [a, b]}
  quiet: {type: bool, default: false}
needs: [serial]          # fact names
"""


def problems_of(text: str) -> list[str]:
    header, _, problems = parse(text, "h")
    assert header is None
    return [str(p) for p in problems]


def test_the_example_header_reads_with_its_values() -> None:
    header, doc, problems = parse(hook_text("hostname", GOOD), "h")
    assert problems == [] and header is not None and doc is not None
    assert (header.name, header.where, header.timeout) == ("hostname", Where.TARGET, 60)
    assert header.on_failure is OnFailure.FAIL
    assert header.params["hostname"].required and header.params["names"].type is ParamType.LIST
    assert header.needs == ["serial"]
    assert doc.line_of(("params", "count")) == 10  # lines are the hook file's


def test_defaults_timeout_and_on_failure() -> None:
    header, _, problems = parse(hook_text("x", "description: d\nwhere: live\n"), "h")
    assert problems == [] and header is not None
    assert (header.timeout, header.on_failure, header.params, header.needs) == (600, OnFailure.FAIL, {}, [])


def test_every_problem_is_located_in_the_hook_file() -> None:
    header = """
description: d
where: chroot
timeout: 0
on_failure: continue
colour: blue
params:
  Bad-Name: {type: str}
  n: {type: int, default: "4"}
  l: {type: "list[str]", default: [a, 1]}
  r: {type: str, required: true, default: x}
  t: {type: float}
  b: {type: bool, bogus: 1}
needs: [serial, nope]
"""
    by_line = sorted(problems_of(hook_text("x", header)), key=lambda p: int(p.split(":")[1]))
    assert by_line == [
        "h:5: where: Input should be 'target', 'live' or 'server'",
        "h:6: timeout: Input should be greater than or equal to 1",
        "h:7: on_failure: Input should be 'fail' or 'warn'",
        "h:8: colour: unknown key",
        "h:10: params.Bad-Name: a parameter name is lower-case letters, digits and '_', starting with a letter, "
        "at most 48",
        "h:11: params.n: default: '4' is not of type int",
        "h:12: params.l: default: item 1: expected text, got an integer",
        "h:13: params.r: a required parameter takes no default",
        "h:14: params.t.type: Input should be 'str', 'int', 'bool' or 'list[str]'",
        "h:15: params.b.bogus: unknown key",
        "h:16: needs[1]: 'nope' is not a fact name (provision facts lists them)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# --- provision hook\n# name: x\n# ---\n", "h:1: a hook starts with a #! line naming its interpreter"),
        ("#!/bin/sh\necho hi\n", "h: no header: '# --- provision hook' must be one of the first 10 lines"),
        ("#!/bin/sh\n" + "\n" * 12 + "# --- provision hook\n# name: x\n# ---\n", "h: no header"),
        ("#!/bin/sh\n# --- provision hook\n# name: x\necho\n# ---\n", "h:4: the header is not closed"),
        ("#!/bin/sh\n# --- provision hook\n# name: x\n", "h:2: the header is not closed by '# ---'"),
        ("#!/bin/sh\n# --- provision hook\n# ---\n", "h:2: the header is empty"),
        ("#!/bin/sh\n# --- provision hook\n# - a\n# ---\n", "h:3: the header must be a YAML mapping"),
        ("#!/bin/sh\n# --- provision hook\n# name: [x\n# ---\n", "h:3: YAML syntax error"),
        ("#!/bin/sh\n# --- provision hook\n# name: x\n# name: y\n# ---\n", "h:4: name: duplicate key"),
        (hook_text("x", "where: target\n"), "h:3: description: required key is missing"),
        (hook_text("Bad", "description: d\nwhere: live\n"), "h:3: name: String should match pattern"),
    ],
)
def test_malformed_headers(text: str, expected: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_a_header_comment_without_space_and_blank_comment_lines() -> None:
    text = "#!/bin/sh\n#\n# --- provision hook\n#name: x\n#\n#description: d\n#where: server\n# ---\n"
    header, _, problems = parse(text, "h")
    assert problems == [] and header is not None and header.where is Where.SERVER


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (ParamType.STR, "a; rm -rf /\n$(reboot)", "a; rm -rf /\n$(reboot)"),
        (ParamType.INT, 42, 42),
        (ParamType.INT, " 42 ", 42),
        (ParamType.INT, "-7", -7),
        (ParamType.BOOL, True, True),
        (ParamType.BOOL, "True", True),
        (ParamType.BOOL, "false", False),
        (ParamType.LIST, ["a b", "c"], ["a b", "c"]),
        (ParamType.LIST, [], []),
    ],
)
def test_convert_accepts(kind: ParamType, value: object, expected: object) -> None:
    assert convert(kind, value) == expected


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (ParamType.STR, 5, "expected text, got an integer (quote it)"),
        (ParamType.STR, "a\0b", "the text holds a NUL character"),
        (ParamType.STR, "\udcff", "the text is not valid text (a lone surrogate)"),
        (ParamType.STR, "é" * MAX_VALUE_BYTES, f"the text is {2 * MAX_VALUE_BYTES} bytes; at most {MAX_VALUE_BYTES}"),
        (ParamType.INT, "4.5", "expected an integer, got '4.5'"),
        (ParamType.INT, True, "expected an integer, got a yes/no value"),
        (ParamType.INT, "None", "expected an integer, got 'None'"),
        (ParamType.INT, 1 << 63, "integer outside the 64-bit range"),
        (ParamType.BOOL, "yes", "expected true or false, got 'yes'"),
        (ParamType.BOOL, 1, "expected true or false, got an integer"),
        (ParamType.LIST, "a", "expected a list of texts, got 'a'"),
        (ParamType.LIST, ["a", 1], "item 1: expected text, got an integer"),
        (ParamType.LIST, ["a\nb"], "item 0: 'a\\nb' is empty or holds a line break"),
        (ParamType.LIST, [""], "item 0: '' is empty"),
    ],
)
def test_convert_refuses(kind: ParamType, value: object, message: str) -> None:
    with pytest.raises(ParamProblem) as caught:
        convert(kind, value)
    assert str(caught.value).startswith(message)


def test_resolve_fills_defaults_and_names_the_parameter() -> None:
    header, _, _ = parse(hook_text("hostname", GOOD), "h")
    assert isinstance(header, Header)
    assert header.resolve({"hostname": "pc-1", "count": "7"}) == {
        "hostname": "pc-1",
        "count": 7,
        "names": ["a", "b"],
        "quiet": False,
    }
    for given, message in (
        ({}, "hostname: hook 'hostname' requires this parameter"),
        ({"hostname": "x", "other": 1}, "other: hook 'hostname' takes no such parameter (it takes: hostname, "),
        ({"hostname": "x", "quiet": "maybe"}, "quiet: expected true or false, got 'maybe'"),
    ):
        with pytest.raises(ParamProblem) as caught:
            header.resolve(given)
        assert str(caught.value).startswith(message)
