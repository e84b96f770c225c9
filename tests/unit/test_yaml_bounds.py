"""Issue 12, defect 6 (YAML part): YAML that stopped `recipes check` or the server is a located problem.

Billion laughs, recursive aliases, 20,000-deep nesting and a 5,000-digit priority used to hang the CLI or give
tracebacks. provision.yamlsrc reads recipes, the server configuration and image definitions, so each bound is
shown through yamlsrc and through the three readers, as FILE:LINE: key: message. Every test is bounded in
time (tests/support/bounded.py): a hang that came back fails in seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from provision import yamlsrc
from provision.builder.definition import parse_definition
from provision.config import load_config
from provision.errors import ConfigError
from provision.recipes import check_dir
from tests.support.bounded import bounded

RECIPE = "name: a\nimage: educ\nmatch: {maker: dell}\n"


def billion_laughs(levels: int = 9) -> str:
    """The classic: each anchor is a list of nine aliases to the previous one (9**9 strings at the end)."""
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def deep_flow(depth: int = 20_000) -> str:
    return "[" * depth + "]" * depth


def problems_of(text: str) -> list[str]:
    return [str(p) for p in yamlsrc.load(text, "f.yaml").problems]


@bounded(20)
def test_defect6_billion_laughs_is_a_located_problem(tmp_path: Path) -> None:
    started = time.monotonic()
    doc = yamlsrc.load(billion_laughs(), "f.yaml")
    assert doc.data is None
    [problem] = doc.problems
    assert (problem.file, problem.line) == ("f.yaml", 5)  # lol4: the first key whose aliases expand too far
    assert problem.key.startswith("lol4") and "too many aliases" in problem.message
    (tmp_path / "laughs.yaml").write_text(RECIPE + billion_laughs())
    _, found = check_dir(tmp_path)
    assert [str(p) for p in found] == [f"{tmp_path / 'laughs.yaml'}:8: {problem.key}: {problem.message}"]
    assert time.monotonic() - started < 5


def test_defect6_aliases_within_the_bound_still_expand() -> None:
    doc = yamlsrc.load("base: &b {timeout: 60, on_failure: continue}\nhooks: [*b, *b]\nsmall: " + "[*b, " * 3, "f")
    assert doc.problems  # the last line is unfinished: a syntax error, located
    doc = yamlsrc.load("base: &b {timeout: 60}\nhooks: [*b, *b]\n", "f")
    assert doc.problems == [] and doc.data == {"base": {"timeout": 60}, "hooks": [{"timeout": 60}] * 2}
    assert doc.line_of(("hooks", 1, "timeout")) == 1  # an alias's values are located where they are defined


@bounded(20)
@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("name: x\nhooks: &h\n  - *h\n", 2, "hooks[0]"),
        ("a: &m {b: *m}\n", 1, "a.b"),
        ("a: &s [1, [2, *s]]\n", 1, "a[1][1]"),
    ],
)
def test_defect6_recursive_alias_is_a_located_problem(text: str, line: int, key: str) -> None:
    doc = yamlsrc.load(text, "f.yaml")
    assert doc.data is None
    assert [(p.line, p.key, p.message) for p in doc.problems] == [
        (line, key, "recursive alias: the value contains itself")
    ]


@bounded(20)
@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("x: " + deep_flow() + "\n", 1),
        ("name: a\nx: " + "{a: " * 20_000 + "}" * 20_000 + "\n", 2),
        ("".join("  " * i + "-\n" for i in range(200)), 52),
    ],
    ids=["flow-lists", "flow-maps", "block-lists"],
)
def test_defect6_20000_deep_nesting_is_a_located_problem(text: str, line: int) -> None:
    [problem] = yamlsrc.load(text, "f.yaml").problems
    assert problem.line == line and problem.message == f"nested deeper than {yamlsrc.MAX_DEPTH} levels"
    assert problem.key and len(problem.key) <= 80  # the path, shortened


def test_defect6_nesting_through_aliases_is_bounded() -> None:
    chain = ["a0: &a0 " + "[" * 30 + "]" * 30]
    chain += [f"a{i}: &a{i} " + "[" * 30 + f"*a{i - 1}" + "]" * 30 for i in range(1, 5)]
    [problem] = yamlsrc.load("\n".join(chain) + "\n", "f.yaml").problems
    assert problem.message.startswith("nested deeper than") and "through aliases" in problem.message


@bounded(20)
def test_defect6_5000_digit_priority_is_a_located_problem(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(RECIPE + "priority: " + "9" * 5000 + "\n")
    _, found = check_dir(tmp_path)
    assert [str(p) for p in found] == [f"{tmp_path / 'p.yaml'}:4: priority: number of 5000 characters is too large"]
    assert problems_of("n: 99999999999999999999\n") == ["f.yaml:1: n: integer outside the 64-bit range"]
    assert problems_of("n: -9223372036854775808\nm: 9223372036854775807\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: .inf\n", "'.inf' is not a finite number"),
        ("x: .nan\n", "'.nan' is not a finite number"),
        ("x: !!binary aGVsbG8=\n", "bytes values (tag:yaml.org,2002:binary) are not supported"),
        ("x: !!int abc\n", "'abc' cannot be read as int"),
        ("x: !!python/name:os.system ''\n", "value cannot be read"),
    ],
)
def test_defect6_values_that_are_not_json_data_are_located_problems(text: str, message: str) -> None:
    [problem] = yamlsrc.load(text, "f.yaml").problems
    assert (problem.line, problem.key) == (1, "x") and problem.message.startswith(message)


def test_timestamps_stay_the_text_they_were_written_as() -> None:
    doc = yamlsrc.load("day: 2024-01-01\nwhen: 2024-01-01T10:00:00Z\n", "f")
    assert doc.problems == [] and doc.data == {"day": "2024-01-01", "when": "2024-01-01T10:00:00Z"}


@bounded(20)
def test_defect6_size_and_value_count_are_bounded() -> None:
    assert problems_of("x: " + "a" * yamlsrc.MAX_CHARS) == [
        f"f.yaml: file is {yamlsrc.MAX_CHARS + 3} characters; at most {yamlsrc.MAX_CHARS}"
    ]
    started = time.monotonic()
    [problem] = yamlsrc.load("x: [" + "1, " * (yamlsrc.MAX_NODES + 10) + "]\n", "f.yaml").problems
    assert problem.line == 1 and problem.message == f"more than {yamlsrc.MAX_NODES} values in one file"
    assert time.monotonic() - started < 5


@bounded(30)
def test_defect6_config_and_definitions_share_the_bounds(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    for text in (billion_laughs(), "http: " + deep_flow() + "\n", "x: &x [*x]\n"):
        config.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(config)
        [problem] = caught.value.problems
        assert problem.file == str(config) and problem.line is not None
    definition = tmp_path / "img.yaml"
    for text in (billion_laughs(), "name: x\nbuilder: tiny\nsize: " + "9" * 5000 + "\n"):
        with pytest.raises(ConfigError) as caught:
            parse_definition(text, definition)
        [problem] = caught.value.problems
        assert problem.file == str(definition) and problem.line is not None
