"""Recipe loading, validation (every problem at once, located), selection, health gate and templates."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from provision.errors import ConfigError
from provision.facts.derive import FACT_NAMES, FactValue
from provision.recipes import Action, check_dir, load_dir, select
from provision.recipes.conditions import ConditionError, compile_condition
from tests.support.paths import REPO


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def facts(**values: FactValue) -> dict[str, FactValue]:
    base: dict[str, FactValue] = dict.fromkeys(FACT_NAMES)
    base.update(
        {
            "mac": "52:54:00:12:34:56",
            "vendor": "Dell Inc.",
            "maker": "dell",
            "model": "OptiPlex 780",
            "product": "OptiPlex 780",
            "form_factor": "tower",
            "uefi_capable": False,
            "firmware": "bios",
            "ram_mb": 8192,
            "disk_count": 1,
            "disk_gb": 250,
            "disk_transport": ["sata"],
            "pci_ids": ["8086:10de", "8086:3a22"],
            "pci_drivers": [],
            "nic_drivers": ["e1000e"],
            "smart_verdict": "passed",
        }
    )
    base.update(values)
    return base


BASIC = """
name: {name}
image: educ
match:
  maker: dell
  ram_mb: ">= 4096"
"""


# ------------------------------------------------------------------------------------------ conditions
@pytest.mark.parametrize(
    ("fact", "spec", "value", "expected"),
    [
        ("vendor", "dell*", "Dell Inc.", True),
        ("vendor", ["hp", "hewlett*"], "Hewlett-Packard", True),
        ("vendor", "!dell*", "Dell Inc.", False),
        ("vendor", "unknown", None, True),
        ("vendor", "*", None, False),
        ("model", "OptiPlex 7*", "OptiPlex 780", True),
        ("ram_mb", ">= 4096", 4096, True),
        ("ram_mb", "> 4096", 4096, False),
        ("ram_mb", "2048..4096", 3072, True),
        ("ram_mb", "2048..4096", 8192, False),
        ("ram_mb", 8192, 8192, True),
        ("ram_mb", [1024, ">= 8192"], 16384, True),
        ("ram_mb", ">= 1", None, False),
        ("uefi_capable", True, True, True),
        ("uefi_capable", False, None, False),
        ("pci_ids", "8086:10de", ["8086:10de", "8086:3a22"], True),
        ("pci_ids", ["8086:10de", "14e4:*"], ["8086:10de"], False),
        ("pci_ids", "!10de:*", ["8086:10de"], True),
        ("disk_transport", "nvme", ["sata"], False),
        ("disk_transport", "nvme", None, False),
    ],
)
def test_condition_forms(fact, spec, value, expected):
    cond = compile_condition(fact, spec)
    assert cond.evaluate({fact: value}).matched is expected


@pytest.mark.parametrize(
    ("fact", "spec", "message"),
    [
        ("colour", "red", "unknown fact 'colour'"),
        ("ram_mb", "lots", "is not a number"),
        ("ram_mb", "4096..2048", "is empty"),
        ("ram_mb", True, "is not a number"),
        ("uefi_capable", "yes please", "true or false"),
        ("vendor", {"a": 1}, "glob"),
        ("pci_ids", 8086, "glob"),
    ],
)
def test_bad_conditions(fact, spec, message):
    with pytest.raises(ConditionError, match=message):
        compile_condition(fact, spec)


# --------------------------------------------------------------------------------------------- loading
def test_sample_recipes_are_valid():
    recipes, problems = check_dir(REPO / "recipes")
    assert problems == []
    assert recipes.default is not None
    names = {r.name for r in recipes.recipes}
    assert {"legacy-bios-desktop", "uefi-desktop", "laptop", "low-ram", "repair-low-ram"} <= names


def test_every_problem_is_reported_with_file_line_and_key(tmp_path):
    write(tmp_path, "a-syntax.yaml", "name: a\nmatch: [unclosed\n")
    write(tmp_path, "b-unknown-key.yaml", "name: b\nimage: educ\nmatch:\n  maker: dell\ncolour: red\n")
    write(tmp_path, "c-wrong-type.yaml", "name: c\nimage: educ\npriority: high\nmatch:\n  maker: dell\n")
    write(
        tmp_path,
        "d-bad-template.yaml",
        "name: d\nimage: educ\nmatch:\n  maker: dell\nhostname: 'x-{{ serial[ }}'\n",
    )
    write(tmp_path, "e-unknown-fact.yaml", "name: e\nimage: educ\nmatch:\n  maker: dell\n  colour: red\n")
    write(tmp_path, "f-dup1.yaml", BASIC.format(name="same"))
    write(tmp_path, "g-dup2.yaml", BASIC.format(name="same"))
    write(
        tmp_path,
        "h-template-name.yaml",
        "name: h\nimage: educ\nmatch:\n  maker: dell\nhooks:\n  - name: x\n    params:\n      v: '{{ nope }}'\n",
    )
    write(tmp_path, "i-dup-key.yaml", "name: i\nimage: educ\nimage: other\nmatch:\n  maker: dell\n")
    _, problems = check_dir(tmp_path)
    text = [str(p) for p in problems]
    assert any(t.startswith("a-syntax.yaml") or "a-syntax.yaml:" in t for t in text)
    by_file = {Path(p.file).name: p for p in problems}
    assert by_file["a-syntax.yaml"].line is not None and "YAML syntax error" in by_file["a-syntax.yaml"].message
    assert (by_file["b-unknown-key.yaml"].line, by_file["b-unknown-key.yaml"].key) == (5, "colour")
    assert "unknown key" in by_file["b-unknown-key.yaml"].message
    assert (by_file["c-wrong-type.yaml"].line, by_file["c-wrong-type.yaml"].key) == (3, "priority")
    assert (by_file["d-bad-template.yaml"].line, by_file["d-bad-template.yaml"].key) == (5, "hostname")
    assert "template syntax error" in by_file["d-bad-template.yaml"].message
    assert (by_file["e-unknown-fact.yaml"].line, by_file["e-unknown-fact.yaml"].key) == (5, "match.colour")
    assert by_file["g-dup2.yaml"].key == "name" and "f-dup1.yaml" in by_file["g-dup2.yaml"].message
    assert (by_file["h-template-name.yaml"].line, by_file["h-template-name.yaml"].key) == (
        8,
        "hooks[0].params.v",
    )
    assert "nope" in by_file["h-template-name.yaml"].message
    assert (by_file["i-dup-key.yaml"].line, by_file["i-dup-key.yaml"].key) == (3, "image")
    assert len(problems) == 8
    with pytest.raises(ConfigError) as exc:
        load_dir(tmp_path)
    assert len(exc.value.problems) == 8


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("name: Bad Name\nimage: educ\nmatch: {maker: dell}\n", "name", "should match pattern"),
        ("name: x\nmatch: {maker: dell}\n", "", "needs 'image"),
        ("name: x\nimage: educ\nwipe: shred\nmatch: {maker: dell}\n", "wipe", "Input should be"),
        ("name: x\nimage: educ\n", "match", "must be 'default: true'"),
        ("name: x\nimage: educ\ndefault: true\nmatch: {maker: dell}\n", "", "takes no 'match'"),
        ("- just\n- a list\n", "", "must be a YAML mapping"),
        ("", "", "empty file"),
        ("name: x\nimage: '../etc'\nmatch: {maker: dell}\n", "image", "NAME or NAME@VERSION"),
        (
            "name: x\nimage: educ\nhealth: {max_pending: -1}\nmatch: {maker: dell}\n",
            "health.max_pending",
            "greater than or equal to 0",
        ),
        (
            "name: x\nimage: educ\nhooks: [{name: a, when: never}]\nmatch: {maker: dell}\n",
            "hooks[0].when",
            "unknown",
        ),
    ],
)
def test_single_problems(tmp_path, text, key, message):
    write(tmp_path, "r.yaml", text)
    _, problems = check_dir(tmp_path)
    assert problems, text
    assert any(p.key == key and message in p.message for p in problems), [str(p) for p in problems]


def test_two_defaults_and_empty_dir(tmp_path):
    _, problems = check_dir(tmp_path)
    assert "no recipe files" in problems[0].message
    write(tmp_path, "a.yaml", "name: a\nimage: educ\ndefault: true\n")
    write(tmp_path, "b.yaml", "name: b\nimage: educ\ndefault: true\n")
    _, problems = check_dir(tmp_path)
    assert [p.key for p in problems] == ["default"]


# ------------------------------------------------------------------------------------------- selection
def recipes_in(tmp_path: Path, *texts: str):
    for i, text in enumerate(texts):
        write(tmp_path, f"r{i}.yaml", text)
    return load_dir(tmp_path)


def test_most_specific_then_priority_then_name(tmp_path):
    recipes = recipes_in(
        tmp_path,
        "name: broad\nimage: educ\npriority: 50\nmatch: {maker: dell}\n",
        "name: specific\nimage: educ\nmatch: {maker: dell, ram_mb: '>= 4096'}\n",
        "name: specific-b\nimage: educ\nmatch: {maker: dell, form_factor: tower}\n",
        "name: specific-hi\nimage: educ\npriority: 5\nmatch: {maker: dell, uefi_capable: false}\n",
        "name: fallback\nimage: educ\ndefault: true\n",
    )
    decision = select(recipes, facts())
    assert decision.recipe is not None and decision.recipe.name == "specific-hi"
    assert [c.recipe.name for c in decision.runners_up] == ["specific", "specific-b", "broad"]
    assert decision.action is Action.IMAGE and not decision.via_default
    other = select(recipes, facts(maker="hp"))
    assert other.recipe is not None and other.recipe.name == "fallback" and other.via_default


def test_no_match_and_no_default_waits(tmp_path):
    recipes = recipes_in(tmp_path, "name: a\nimage: educ\nmatch: {maker: hp}\n")
    decision = select(recipes, facts())
    assert decision.action is Action.WAIT and decision.recipe is None
    assert "no recipe matches" in decision.reasons[0]
    assert decision.rejected[0].outcomes[0].matched is False


def test_health_gate_sends_to_repair_with_every_reason(tmp_path):
    recipes = recipes_in(
        tmp_path,
        "name: a\nimage: educ\nmatch: {maker: dell}\nhealth: {max_reallocated: 10, max_pending: 0, min_ram_mb: 4096}\n",
    )
    decision = select(recipes, facts(smart_verdict="failed", smart_reallocated=1975, smart_pending=8, ram_mb=2048))
    assert decision.action is Action.REPAIR
    assert decision.reasons == (
        "SMART overall-health self-assessment FAILED",
        "reallocated sectors 1975 > 10",
        "pending sectors 8 > 0",
        "RAM MiB 2048 < 4096",
    )
    assert decision.plan is None
    healthy = select(recipes, facts(smart_reallocated=0, smart_pending=0))
    assert healthy.action is Action.IMAGE and healthy.plan is not None
    unknown = select(recipes, facts(smart_verdict="unknown"))
    assert unknown.action is Action.IMAGE


def test_smart_failed_can_be_waived(tmp_path):
    recipes = recipes_in(tmp_path, "name: a\nimage: educ\nmatch: {maker: dell}\nhealth: {smart_failed: false}\n")
    assert select(recipes, facts(smart_verdict="failed")).action is Action.IMAGE


def test_repair_recipe(tmp_path):
    recipes = recipes_in(tmp_path, "name: fix\naction: repair\nmatch: {ram_mb: '< 2048'}\n")
    decision = select(recipes, facts(ram_mb=1024))
    assert decision.action is Action.REPAIR and "sends matching machines to repair" in decision.reasons[0]


def test_templates_render_per_machine(tmp_path):
    recipes = recipes_in(
        tmp_path,
        'name: a\nimage: educ\nmatch: {maker: dell}\nhostname: "ecole-{{ serial[-6:] | lower }}"\n'
        "hooks:\n  - name: greet\n    params: {motd: 'Bienvenue {{ model }}', list: ['{{ ram_mb }}', 3]}\n",
    )
    decision = select(recipes, facts(serial="CZC1234ABCD"))
    assert decision.plan is not None
    assert decision.plan.hostname == "ecole-34abcd"
    assert decision.plan.hooks[0]["params"] == {"motd": "Bienvenue OptiPlex 780", "list": ["8192", 3]}


HOSTILE = [
    "$(rm -rf /); `reboot`",
    "line1\nline2\r\nkernel cmdline=evil",
    "'; DROP TABLE machines; --",
    "A" * 10_000,
    "{{ 7*7 }}",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_facts_are_data(tmp_path, hostile):
    recipes = recipes_in(
        tmp_path,
        'name: a\nimage: educ\nmatch: {maker: dell}\nhostname: "ecole-{{ ((serial or mac) | slug)[-6:] }}"\n'
        "hooks:\n  - name: note\n    params: {model: '{{ model }}'}\n",
    )
    decision = select(recipes, facts(serial=hostile, model=hostile))
    assert decision.action is Action.IMAGE
    assert decision.plan is not None
    assert decision.plan.hooks[0]["params"]["model"] == hostile  # carried unchanged, never evaluated
    assert decision.plan.hostname is not None
    assert all(c.isalnum() or c == "-" for c in decision.plan.hostname)


def test_unusable_hostname_waits_with_reason(tmp_path):
    recipes = recipes_in(tmp_path, "name: a\nimage: educ\nmatch: {maker: dell}\nhostname: '{{ model }}'\n")
    decision = select(recipes, facts(model="Not a hostname!"))
    assert decision.action is Action.WAIT
    assert "is not a hostname" in decision.reasons[0]
    missing = recipes_in(
        tmp_path / "m" if (tmp_path / "m").mkdir() is None else tmp_path,
        "name: b\nimage: educ\nmatch: {maker: dell}\nhostname: 'x-{{ (serial or mac) | slug }}'\n",
    )
    gone = select(missing, facts(serial=None, mac=None))
    assert gone.action is Action.WAIT and "unknown value" in gone.reasons[0]
