"""A recipe's hooks against the hook catalog (provision.recipes.hookcheck): `recipes check` names an unknown hook,
an unknown or missing parameter and a value of the wrong type as FILE:LINE: key: message; the rendered plan
carries typed parameters with the defaults; `recipes explain` shows them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from provision.facts.derive import FACT_NAMES, FactValue
from provision.hooks import Catalog, load_catalog
from provision.recipes import Action, check_dir, load_dir, select
from tests.support.cli import run
from tests.support.hooks import HOSTILE, write_hook
from tests.support.paths import REPO, SAMPLE_PROBE

HOOK = """
description: a test hook
where: target
timeout: 30
on_failure: warn
params:
  text: {type: str, required: true}
  count: {type: int, default: 3}
  flag: {type: bool, default: false}
  items: {type: "list[str]", default: []}
"""
RECIPE = """
name: r
image: educ
match: {maker: dell}
hooks:
  - name: t
    params:
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    write_hook(tmp_path / "hooks", "t", HOOK)
    return load_catalog([tmp_path / "hooks"])


def recipe(tmp_path: Path, params: str, extra: str = "") -> Path:
    folder = tmp_path / "recipes"
    folder.mkdir(exist_ok=True)
    text = textwrap.dedent(RECIPE).lstrip() + textwrap.indent(textwrap.dedent(params).strip("\n"), "      ") + "\n"
    (folder / "r.yaml").write_text(text + extra)
    return folder


def problems(tmp_path: Path, catalog: Catalog, params: str, extra: str = "") -> list[str]:
    folder = recipe(tmp_path, params, extra)
    _, found = check_dir(folder, catalog)
    return [str(p).removeprefix(f"{folder / 'r.yaml'}:") for p in found]


def machine(**values: FactValue) -> dict[str, FactValue]:
    facts: dict[str, FactValue] = dict.fromkeys(FACT_NAMES)
    facts.update(maker="dell", serial="CZC1234", model="OptiPlex 780", ram_mb=8192, mac="52:54:00:12:34:56")
    facts.update(values)
    return facts


def test_a_valid_recipe_passes(tmp_path: Path, catalog: Catalog) -> None:
    params = """
    text: "pc-{{ serial }}"
    count: "{{ ram_mb // 1024 }}"
    flag: "{{ uefi_capable }}"
    items: ["{{ model }}", b]
    """
    assert problems(tmp_path, catalog, params) == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("text: x\nother: 1", ["8: hooks[0].params.other: hook 't' takes no parameter 'other' (it takes: "
                               "text, count, flag, items)"]),
        ("count: 1", ["6: hooks[0].params: hook 't' requires parameter 'text': str"]),
        ("text: 5", ["7: hooks[0].params.text: expected text, got an integer (quote it) (parameter of type str)"]),
        ("text: x\ncount: many", ["8: hooks[0].params.count: expected an integer, got 'many' (parameter of type int)"]),
        ("text: x\nitems: a", ["8: hooks[0].params.items: expected a list of texts, got 'a' "
                              "(parameter of type list[str])"]),
        (
            "text: x\ncount: '{{ model }}'",
            ["8: hooks[0].params.count: expected an integer, got 'x' once rendered for the trial machines "
             "(parameter of type int)"],
        ),
        (
            "text: x\nflag: '{{ serial }}'",
            ["8: hooks[0].params.flag: expected true or false, got 'x' once rendered for the trial machines "
             "(parameter of type bool)"],
        ),
    ],
)  # fmt: skip
def test_each_problem_is_located(tmp_path: Path, catalog: Catalog, params: str, expected: list[str]) -> None:
    assert problems(tmp_path, catalog, params) == expected


def test_an_unknown_hook_names_the_known_ones(tmp_path: Path, catalog: Catalog) -> None:
    found = problems(tmp_path, catalog, "text: x", "  - name: nope\n")
    assert found == ["8: hooks[1].name: unknown hook 'nope' (known: t)"]


def test_a_type_that_depends_on_the_machine_is_left_to_the_machine(tmp_path: Path, catalog: Catalog) -> None:
    """`{{ serial or 5 }}` is an int where the serial is unknown: not a problem at check time; a machine whose
    serial renders to text waits, with the hook, the parameter and the reason."""
    folder = recipe(tmp_path, "text: x\ncount: '{{ serial or 5 }}'")
    recipes, found = check_dir(folder, catalog)
    assert found == []
    assert select(recipes, machine(serial=None)).plan is not None
    decision = select(recipes, machine(serial="CZC1234"))
    assert decision.action is Action.WAIT and decision.plan is None
    assert decision.reasons == (
        f"recipe 'r' ({folder / 'r.yaml'}): hooks[0].params.count: expected an integer, got 'CZC1234'",
    )


def test_template_problems_come_first_and_alone(tmp_path: Path, catalog: Catalog) -> None:
    found = problems(tmp_path, catalog, "text: '{{ nope }}'\nbogus: 1")
    assert found == ["7: hooks[0].params.text: template names unknown fact(s): nope"]


def test_without_a_catalog_hooks_are_taken_as_they_are(tmp_path: Path) -> None:
    folder = recipe(tmp_path, "anything: 1", "    timeout: 40\n")
    recipes, found = check_dir(folder)
    assert found == []
    plan = select(recipes, machine()).plan
    assert plan is not None
    assert plan.hooks == [{"name": "t", "where": None, "params": {"anything": 1}, "timeout": 40, "on_failure": None}]


def test_the_plan_carries_typed_params_defaults_and_the_header(tmp_path: Path, catalog: Catalog) -> None:
    params = """
    text: "{{ serial }}"
    count: "{{ ram_mb // 1024 }}"
    items: ["{{ model }}"]
    """
    folder = recipe(tmp_path, params, "    on_failure: fail\n")
    recipes = load_dir(folder, catalog)
    hostile = HOSTILE[0] + HOSTILE[1] + HOSTILE[3] + HOSTILE[4]
    plan = select(recipes, machine(serial=hostile, model=HOSTILE[2])).plan
    assert plan is not None
    assert plan.hooks == [
        {
            "name": "t",
            "where": "target",
            "params": {"text": hostile, "count": 8, "flag": False, "items": [HOSTILE[2]]},  # verbatim
            "timeout": 30,  # the header's
            "on_failure": "fail",  # the recipe's
        }
    ]
    json.dumps(plan.hooks)  # what the server stores and sends


def test_recipe_overrides_are_bounded(tmp_path: Path, catalog: Catalog) -> None:
    found = problems(tmp_path, catalog, "text: x", "    timeout: 99999\n    on_failure: continue\n")
    assert found == [
        "8: hooks[0].timeout: Input should be less than or equal to 21600",
        "9: hooks[0].on_failure: String should match pattern '^(fail|warn)$'",
    ]


# ------------------------------------------------------------------------------------------------ the CLI
def test_the_sample_recipes_check_against_the_builtin_hooks() -> None:
    code, out, err = run("recipes", "check", str(REPO / "recipes"))
    assert code == 0, err
    assert "legacy-bios-desktop          educ         conditions=2 priority=0  hooks: locale, hostname" in out


def test_cli_recipes_check_with_a_site_hook_folder(tmp_path: Path) -> None:
    write_hook(tmp_path / "site", "t", HOOK)
    folder = recipe(tmp_path, "text: x\ncount: x")
    code, _, err = run("recipes", "check", str(folder))
    known = "account, bundle, firmware, hostname, identity, label, laptop-power, locale, portal, zram-swap"
    assert code == 1 and err.splitlines()[0].endswith(f"hooks[0].name: unknown hook 't' (known: {known})")
    code, _, err = run("recipes", "check", "--hooks", str(tmp_path / "site"), str(folder))
    assert code == 1 and err.splitlines() == [
        f"{folder / 'r.yaml'}:8: hooks[0].params.count: expected an integer, got 'x' (parameter of type int)",
        "provision: error: 1 problem(s) found",
    ]


def test_cli_recipes_check_reports_a_broken_hook_too(tmp_path: Path) -> None:
    write_hook(tmp_path / "site", "t", HOOK.replace("timeout: 30", "timeout: 0"))
    folder = recipe(tmp_path, "text: x")
    code, _, err = run("recipes", "check", "--hooks", str(tmp_path / "site"), str(folder))
    assert code == 1
    assert err.splitlines()[:2] == [
        f"{tmp_path / 'site' / 't'}:6: timeout: Input should be greater than or equal to 1",
        f"{folder / 'r.yaml'}:5: hooks[0].name: unknown hook 't' (known: account, bundle, firmware, hostname, "
        "identity, label, laptop-power, locale, portal, zram-swap)",
    ]


def test_cli_explain_shows_the_hooks(tmp_path: Path) -> None:
    if not SAMPLE_PROBE.is_dir():
        pytest.skip("no sample probe")
    write_hook(tmp_path / "site", "t", HOOK)
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "d.yaml").write_text(
        "name: d\ndefault: true\nimage: educ\nhooks:\n  - name: t\n    params: {text: pc, count: '{{ 2 + 2 }}'}\n"
    )
    code, out, err = run(
        "recipes", "explain", "--recipes", str(folder), "--hooks", str(tmp_path / "site"), str(SAMPLE_PROBE)
    )
    assert code == 0, err
    assert "decision: IMAGE  recipe d" in out
    assert (
        '  hook t (target, on_failure warn, timeout 30 s) {"text": "pc", "count": 4, "flag": false, "items": []}' in out
    )
    code, out, err = run("recipes", "explain", "--json", "--recipes", str(folder), str(SAMPLE_PROBE))
    assert code == 1 and "unknown hook 't'" in err  # explain checks the recipes against the catalog too
