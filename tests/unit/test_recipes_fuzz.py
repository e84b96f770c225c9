"""Fuzz the recipe loader and the templates (issue 12): no unhandled exception, no hang, bounded time per case.

- ``recipe-loader``: the shipped recipes (recipes/*.yaml) and a few hostile ones, mutated with YAML and jinja2
  tokens (anchors, aliases, brackets, tags, huge numbers, loops), and random text, through
  ``provision.recipes.loader.load_text``; whatever loads is selected and rendered for a real machine's facts.
  load_text may only return problems, each naming the file; select may only decide.
- ``recipe-templates``: templates built from jinja2 fragments (loops, ranges, operators, filters, methods,
  macros, sets, big numbers) and random text, through ``templates.check`` and ``templates.render`` for two
  machines: only TemplateProblem may come out, within the render budget.

Counts are printed in the terminal summary (tests/support/fuzz.py); PROVISION_FUZZ_EXAMPLES=100000 runs the
long version (docs/recipes.md, "Fuzzing").
"""

from __future__ import annotations

import json
import logging
import random
import time

import pytest
from hypothesis import strategies as st

from provision.errors import Problem
from provision.facts import load_probe
from provision.facts.derive import FACT_NAMES, FactValue, derive
from provision.recipes import RecipeSet, select
from provision.recipes import templates as T
from provision.recipes.limits import RENDER_SECONDS
from provision.recipes.loader import load_text
from tests.support import fuzz
from tests.support.mutate import mutate
from tests.support.paths import REPO, SAMPLE_PROBE

CASE_SECONDS = RENDER_SECONDS + 1.5  # one render budget, plus reading the YAML (bounded by yamlsrc)

HOSTILE = [
    "name: a\nimage: educ\nmatch: {maker: dell}\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a]\n",
    "name: b\nimage: educ\nmatch: {maker: dell}\nhooks: &h\n  - name: h\n    params: {x: *h}\n",
    "name: c\nimage: educ\nmatch: {maker: dell}\npriority: 99999999999999999999999\nhostname: '{{ 9 ** 99 }}'\n",
    "name: d\nimage: educ\nmatch: {maker: dell}\nhooks:\n  - name: h\n"
    "    params: {p: '{% for x in range(9999) %}{% for y in range(99) %}{{ x }}{% endfor %}{% endfor %}'}\n",
]
YAML_TOKENS = [
    "&a ", "*a", "&b [*a, *a, *a, *a, *a, *a, *a, *a]", "[", "]", "{", "}", "- ", ": ", "\n", "\n  ", "\t", "'",
    '"', "#", "? ", "|\n", ">-\n", "!!binary ", "!!python/object:os.system ", "!!int ", "!!set ", "<<: *a\n", "~",
    "null", "9" * 30, "9" * 5000, "-1", ".inf", ".nan", "2024-01-01", "0x1F", "1e400", "yes", "\\u0000", "%TAG",
    "---\n", "...\n", "hooks:\n  - name: h\n    params: {p: x}\n", "match: {maker: dell}\n", "priority: 5\n",
    "default: true\n", "action: repair\n", "{{ ", " }}", "{% ", " %}", "{{ serial | slug }}", "{{ 9 ** 999 }}",
    "{% for x in range(9999) %}", "{% endfor %}", "{{ 'a' * 70000 }}", "{{ range(10**9) | list }}",
]  # fmt: skip
JINJA_FRAGMENTS = [
    "{{ ", " }}", "{% ", " %}", "{# ", " #}", "for x in ", "range(", ")", "(", "[", "]", "10**9", "9999", "99",
    "endfor", "if ", "else", "endif", "set ns = namespace(s='ab')", "set ns.s = ns.s ~ ns.s", "ns.s", "macro m(n)",
    "endmacro", "m(n - 1)", "m(20)", " ~ ", " + ", " * ", " ** ", " % ", " // ", "'a'", "'%0999d'", "'{:>99}'",
    ".format(1)", ".join(", ".replace('', 'xx')", ".center(99999)", "|join(','", "|list", "|indent(999)",
    "|center(99999)", "|batch(9999, 'x')", "|sum", "|tojson", "|slug", "|replace('-', '')", "|lower", "[-6:]",
    "serial", "mac", "model", "ram_mb", "pci_ids", "uefi_capable", "loop.index", "lipsum(", "cycler(1, 2)",
    "''.__class__", "x", "y", "7", "-1", ",", "\n",
]  # fmt: skip


WITH_TEMPLATE = "name: t\nimage: educ\nmatch: {{maker: dell}}\nhooks:\n  - name: h\n    params: {{p: {}}}\n"
TEMPLATES = [
    "ecole-{{ ((serial or mac) | slug | replace('-', ''))[-6:] }}",
    "{% for x in range(10**9) %}{{ x }}{% endfor %}",
    "{% for x in range(999) %}{% for y in range(999) %}{{ x * y }}{% endfor %}{% endfor %}",
    "{{ 9**(9**9) }}{{ 'a' * 10**9 }}{{ 'a' | center(10**9) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(12) }}",
    "{{ pci_ids | join(',') }} {{ '%-10s' % model }} {{ '{:>8}'.format(ram_mb) }}",
]


def shipped() -> list[str]:
    return [p.read_text() for p in sorted((REPO / "recipes").glob("*.yaml"))]


def machines() -> list[dict[str, FactValue]]:
    real = derive(load_probe(SAMPLE_PROBE))
    dell: dict[str, FactValue] = dict.fromkeys(FACT_NAMES)
    dell.update(maker="dell", vendor="Dell Inc.", serial="CZC1234ABCD", ram_mb=8192, form_factor="desktop")
    dell.update(uefi_capable=False, disk_gb=250, pci_ids=["8086:10de"], smart_verdict="passed")
    return [real, dell]


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="provision")


def test_fuzz_recipe_loader(quiet: None) -> None:
    target = fuzz.target("recipe-loader", examples=700, budget=60, deadline=CASE_SECONDS, hang=30)
    seeds = shipped() + HOSTILE
    every = machines()
    outcomes = {"loaded": 0, "problems": 0}

    mutants = st.tuples(st.sampled_from(seeds), st.randoms(use_true_random=False)).map(
        lambda s: mutate(s[1], s[0], YAML_TOKENS)
    )
    with_template = st.tuples(st.sampled_from(TEMPLATES), st.randoms(use_true_random=False)).map(
        lambda s: WITH_TEMPLATE.format(json.dumps(mutate(s[1], s[0], JINJA_FRAGMENTS)))
    )

    @target.given(
        st.one_of(
            mutants,
            mutants,
            with_template,
            with_template,
            st.sampled_from(seeds),
            st.text(max_size=300),
            st.lists(st.sampled_from(YAML_TOKENS), max_size=30).map("".join),
        ),
        st.sampled_from(range(len(every))),
    )
    def case(text: str, which: int) -> None:
        started = time.monotonic()
        loaded, problems = load_text(text, "fuzz.yaml")
        assert all(isinstance(p, Problem) and p.file == "fuzz.yaml" for p in problems), problems
        if loaded is None:
            outcomes["problems"] += 1
            assert problems, "a recipe that does not load must say why"
            return
        outcomes["loaded"] += 1
        decision = select(RecipeSet("fuzz", (loaded,)), every[which])  # renders the plan: never raises
        assert decision.action is not None
        assert time.monotonic() - started < CASE_SECONDS

    case()
    target.done()
    if target.examples >= 500:
        assert outcomes["loaded"] > target.cases // 50, outcomes  # mutants reach selection and rendering too
    print(f"recipe-loader outcomes: {outcomes}")


def test_fuzz_templates(quiet: None) -> None:
    target = fuzz.target("recipe-templates", examples=800, budget=60, deadline=CASE_SECONDS * 2, hang=30)
    every = machines()
    outcomes = {"rendered": 0, "limits": 0, "problems": 0}

    @target.given(
        st.one_of(
            st.tuples(st.sampled_from(TEMPLATES), st.randoms(use_true_random=False)).map(
                lambda s: mutate(s[1], s[0], JINJA_FRAGMENTS)
            ),
            st.lists(st.sampled_from(JINJA_FRAGMENTS), max_size=25).map("".join),
            st.lists(st.sampled_from(JINJA_FRAGMENTS), max_size=25).map(lambda f: "{{ " + "".join(f) + " }}"),
            st.text(max_size=200),
        ),
        st.randoms(use_true_random=False),
    )
    def case(source: str, rng: random.Random) -> None:
        try:
            T.check(source)
        except T.TemplateLimit:
            outcomes["limits"] += 1
        except T.TemplateProblem:
            outcomes["problems"] += 1
        facts = rng.choice(every)
        try:
            out = T.render(source, facts)
        except T.TemplateProblem:
            return
        assert isinstance(out, str) and len(out) <= T.MAX_OUTPUT
        outcomes["rendered"] += 1

    case()
    target.done()
    print(f"recipe-templates outcomes: {outcomes}")
