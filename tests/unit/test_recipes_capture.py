"""Recipes' ``capture: NAME`` (docs/capture.md): a machine the recipe matches has its disk published as a version of
image NAME, so a capture recipe must name the machines it captures: never the default recipe (every PC that
matches nothing else), never one without ``match:`` (every PC); its plan names the image it captures."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.recipes import Action, check_dir, load_dir, select
from tests.unit.test_recipes import facts, write

GOLDEN = "name: golden\ncapture: educ\nmatch: {mac: '52:54:00:12:34:56'}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: golden\ncapture: educ\ndefault: true\n", "cannot be the default"),
        ("name: golden\ncapture: educ\n", "without match conditions"),
        ("name: golden\ncapture: educ\nmatch: {}\n", "without match conditions"),
        (GOLDEN + "image: educ\n", "writes nothing"),
        (GOLDEN + "action: erase\n", "takes no 'action: erase'"),
        ("name: golden\ncapture: educ\nmatch: {vendor: Dell*}\n", "name the golden PC exactly"),
        ("name: golden\ncapture: educ\nmatch: {mac: '52:54:00:*'}\n", "name the golden PC exactly"),
        ("name: golden\ncapture: educ\nmatch: {mac: ['52:54:00:12:34:56', '52:54:00:1?:*']}\n", "exactly"),
        ("name: golden\ncapture: educ\nmatch: {serial: '{{ facts.serial }}'}\n", "name the golden PC exactly"),
    ],
)
def test_a_capture_recipe_that_would_capture_any_pc_is_refused(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, "golden.yaml", text)
    _, problems = check_dir(tmp_path)
    found = [(Path(p.file).name, p.line) for p in problems if message in p.message]
    assert found == [("golden.yaml", 1)], [str(p) for p in problems]


@pytest.mark.parametrize(
    "match", ["{mac: ['52:54:00:12:34:56', '52:54:00:12:34:58']}", "{serial: 'CZC1234X', vendor: HP}"]
)
def test_a_capture_recipe_naming_its_pcs_exactly_loads(tmp_path: Path, match: str) -> None:
    write(tmp_path, "golden.yaml", f"name: golden\ncapture: educ\nmatch: {match}\n")
    _, problems = check_dir(tmp_path)
    assert problems == [], [str(p) for p in problems]


def test_a_capture_recipe_matching_its_golden_pc_plans_the_capture(tmp_path: Path) -> None:
    write(tmp_path, "golden.yaml", GOLDEN)
    decision = select(load_dir(tmp_path), facts())
    assert decision.action is Action.IMAGE and decision.plan is not None
    assert (decision.plan.capture, decision.plan.image) == ("educ", None)
    other = select(load_dir(tmp_path), facts(mac="52:54:00:12:34:57"))
    assert other.plan is None and other.action is Action.WAIT
