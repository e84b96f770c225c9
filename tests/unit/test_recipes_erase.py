"""Recipes' ``erase:`` block and erase-only recipes: shapes checked with FILE:LINE and key, the lot rendered per
machine, erase-only recipes ranked before image recipes, the shipped erase-only recipe matching no PC."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.recipes import Action, check_dir, load_dir, select
from tests.support.paths import REPO
from tests.unit.test_recipes import facts, write

IMAGE = "name: desk\nimage: educ\nmatch: {maker: dell, form_factor: tower}\n"
PARTS = (
    "name: parts\naction: erase\nmatch: {mac: '52:54:00:12:34:56'}\nerase:\n  method: overwrite\n"
    "  lot: 'don-{{ maker }}'\n"
)


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("name: x\nimage: educ\nmatch: {maker: dell}\nerase:\n  method: shred\n", 5, "erase.method", "'auto' or"),
        ("name: x\nimage: educ\nmatch: {maker: dell}\nerase:\n  verify: all\n", 5, "erase.verify", "'sample' or"),
        (
            "name: x\nimage: educ\nmatch: {maker: dell}\nerase:\n  hidden_areas: keep\n",
            5,
            "erase.hidden_areas",
            "'report'",
        ),
        (
            "name: x\nimage: educ\nmatch: {maker: dell}\nerase:\n  sample_percent: 0\n",
            5,
            "erase.sample_percent",
            "greater",
        ),
        ("name: x\nimage: educ\nmatch: {maker: dell}\nerase:\n  unfreeze: maybe\n", 5, "erase.unfreeze", "boolean"),
        ("name: x\nimage: educ\nmatch: {maker: dell}\nerase:\n  passes: 3\n", 5, "erase.passes", "unknown key"),
        ("name: x\nimage: educ\nmatch: {maker: dell}\nerase: yes\n", 4, "erase", "valid dictionary"),
        ("name: x\naction: erase\nmatch: {maker: dell}\nerase:\n  lot: 'x-{{ nope }}'\n", 5, "erase.lot", "nope"),
        ("name: x\naction: erase\nmatch: {maker: dell}\n", 1, "", "needs 'erase:'"),
        ("name: x\naction: erase\nimage: educ\nerase: {}\nmatch: {maker: dell}\n", 1, "", "writes nothing"),
    ],
)
def test_a_malformed_erase_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    write(tmp_path, "r.yaml", text)
    _, problems = check_dir(tmp_path)
    found = [(Path(p.file).name, p.line, p.key) for p in problems if message in p.message]
    assert found == [("r.yaml", line, key)], [str(p) for p in problems]


def test_the_erase_block_becomes_the_plan_with_its_lot_rendered(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", IMAGE + "erase: {verify: full, lot: 'Banque {{ maker }}'}\n")
    decision = select(load_dir(tmp_path), facts())
    assert decision.action is Action.IMAGE and decision.plan is not None
    assert decision.plan.erase == {
        "method": "auto", "hidden_areas": "report", "verify": "full", "sample_percent": 5.0, "unfreeze": True,
        "lot": "Banque dell",
    }  # fmt: skip
    write(tmp_path, "a.yaml", IMAGE)
    plan = select(load_dir(tmp_path), facts()).plan
    assert plan is not None and plan.erase is None


def test_an_erase_only_recipe_wins_over_more_specific_image_recipes(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", IMAGE)
    write(tmp_path, "b.yaml", PARTS)
    decision = select(load_dir(tmp_path), facts())
    assert (decision.action, decision.recipe.name if decision.recipe else None) == (Action.ERASE, "parts")
    assert decision.plan is not None and decision.plan.erase is not None
    assert decision.plan.erase["lot"] == "don-dell" and decision.plan.image is None
    other = select(load_dir(tmp_path), facts(mac="52:54:00:00:00:02"))
    assert other.recipe is not None and other.recipe.name == "desk"


def test_a_lot_that_renders_empty_makes_the_machine_wait(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", PARTS.replace("don-{{ maker }}", "{{ maker[:0] }}  "))
    decision = select(load_dir(tmp_path), facts())
    assert decision.action is Action.WAIT
    assert "erase.lot: rendered to ''" in decision.reasons[0]


def test_a_failed_health_gate_does_not_stop_an_erasure(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", PARTS.replace("erase:", "health: {min_ram_mb: 99999}\nerase:"))
    assert select(load_dir(tmp_path), facts()).action is Action.ERASE


def test_the_shipped_erase_only_recipe_matches_no_pc_until_the_workshop_lists_one() -> None:
    recipes = load_dir(REPO / "recipes")
    parts = recipes.get("erase-only")
    assert parts is not None and parts.recipe.action is Action.ERASE
    assert select(recipes, facts()).action is Action.IMAGE
    listed = select(recipes, facts(mac="02:00:00:00:00:00", vendor="Dell Inc."))
    assert listed.action is Action.ERASE and listed.plan is not None and listed.plan.erase is not None
    assert listed.plan.erase["lot"] == "parts-dell-inc"


def test_recipes_explain_shows_the_erase_plan(tmp_path: Path) -> None:
    import io

    from provision.cli import main
    from tests.support.paths import SAMPLE_PROBE

    write(tmp_path, "a.yaml", "name: a\ndefault: true\nimage: educ\nerase: {verify: full}\n")
    out = io.StringIO()
    assert main(["recipes", "explain", "--recipes", str(tmp_path), str(SAMPLE_PROBE)], out=out) == 0
    assert '          erase {"method": "auto", "hidden_areas": "report", "verify": "full"' in out.getvalue()
    write(tmp_path, "a.yaml", "name: a\ndefault: true\naction: erase\nerase: {method: overwrite}\n")
    out = io.StringIO()
    assert main(["recipes", "explain", "--recipes", str(tmp_path), str(SAMPLE_PROBE)], out=out) == 0
    assert 'plan:     erase only {"method": "overwrite"' in out.getvalue() and "image None" not in out.getvalue()
