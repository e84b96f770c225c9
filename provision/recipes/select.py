"""Choose a recipe for a machine and explain the choice.

Ranking among matching recipes: erase-only recipes first (a PC the workshop decided leaves as parts is never
imaged because an image recipe is more specific), then most specific (number of match conditions), then
higher ``priority``, then name. The ``default`` recipe is used only when nothing else matches. The chosen
recipe's health gate may turn an imaging decision into ``repair``, with every failed limit as a reason.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from provision.facts.derive import FactValue
from provision.hooks import Header, ParamProblem
from provision.recipes import templates
from provision.recipes.conditions import Outcome, show
from provision.recipes.loader import LoadedRecipe, RecipeSet
from provision.recipes.schema import Action, Health, Hook

_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._-]*(@[A-Za-z0-9._-]+)?$")


@dataclass(frozen=True)
class Candidate:
    recipe: LoadedRecipe
    outcomes: tuple[Outcome, ...]

    @property
    def matched(self) -> bool:
        return all(o.matched for o in self.outcomes)

    @property
    def rank(self) -> tuple[bool, int, int, str]:
        erase_only = self.recipe.recipe.action is Action.ERASE
        return (not erase_only, -self.recipe.specificity, -self.recipe.recipe.priority, self.recipe.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name,
            "file": self.recipe.file,
            "specificity": self.recipe.specificity,
            "priority": self.recipe.recipe.priority,
            "matched": self.matched,
            "conditions": [
                {"fact": o.fact, "expected": o.expected, "actual": o.actual, "matched": o.matched}
                for o in self.outcomes
            ],
        }


@dataclass(frozen=True)
class Plan:
    """The recipe's values rendered for one machine."""

    image: str | None
    hostname: str | None
    target_disk: dict[str, Any]
    wipe: str
    grow_root: bool
    hooks: list[dict[str, Any]]  # the recipe's hooks, then one ``bundle`` entry per bundle (bundleplan.py)
    bundles: list[str] = field(default_factory=list)  # the recipe's bundles, in order
    erase: dict[str, Any] | None = None  # the recipe's ``erase:``, its ``lot`` rendered (None: no erasure)
    capture: str | None = None  # the image the machine is captured as (the recipe's ``capture:``)


@dataclass(frozen=True)
class Decision:
    action: Action
    recipe: LoadedRecipe | None
    chosen: Candidate | None
    runners_up: tuple[Candidate, ...]
    rejected: tuple[Candidate, ...]
    reasons: tuple[str, ...]
    facts: dict[str, FactValue]
    plan: Plan | None = None
    via_default: bool = False
    health_checks: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "recipe": self.recipe.name if self.recipe else None,
            "file": self.recipe.file if self.recipe else None,
            "via_default": self.via_default,
            "reasons": list(self.reasons),
            "health_checks": list(self.health_checks),
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "runners_up": [c.to_dict() for c in self.runners_up],
            "rejected": [c.to_dict() for c in self.rejected],
            "plan": None if self.plan is None else self.plan.__dict__,
            "facts": self.facts,
        }


def health_failures(health: Health, facts: dict[str, FactValue]) -> tuple[list[str], list[str]]:
    """(failures, checks made). Unknown values are not failures."""
    failures: list[str] = []
    checks: list[str] = []
    if health.smart_failed:
        checks.append(f"SMART verdict: {show(facts.get('smart_verdict'))}")
        if facts.get("smart_verdict") == "failed":
            failures.append("SMART overall-health self-assessment FAILED")
    limits = (
        ("smart_reallocated", health.max_reallocated, "reallocated sectors", "max"),
        ("smart_pending", health.max_pending, "pending sectors", "max"),
        ("smart_media_errors", health.max_media_errors, "NVMe media errors", "max"),
        ("smart_power_on_hours", health.max_power_on_hours, "power-on hours", "max"),
        ("ram_mb", health.min_ram_mb, "RAM MiB", "min"),
        ("disk_gb", health.min_disk_gb, "largest disk GB", "min"),
    )
    for fact, limit, label, kind in limits:
        if limit is None:
            continue
        value = facts.get(fact)
        checks.append(f"{label} {show(value)} ({kind} {limit})")
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if kind == "max" and value > limit:
            failures.append(f"{label} {value} > {limit}")
        if kind == "min" and value < limit:
            failures.append(f"{label} {value} < {limit}")
    return failures, checks


def _plan_hook(i: int, hook: Hook, params: dict[str, Any], header: Header | None) -> dict[str, Any]:
    """One hook of the plan: ``{"name", "where", "params", "timeout", "on_failure"}``. With the hook's header
    (the recipe was loaded with a hook catalog), the rendered parameters are converted to their types and the
    defaults filled in (a value of the wrong type raises TemplateProblem: the machine waits), and ``where``,
    ``timeout`` and ``on_failure`` are the header's unless the recipe overrides them; without, they are the
    recipe's (None where it says nothing)."""
    if header is None:
        return {
            "name": hook.name,
            "where": None,
            "params": params,
            "timeout": hook.timeout,
            "on_failure": hook.on_failure,
        }
    try:
        values = header.resolve(params)
    except ParamProblem as exc:
        raise templates.TemplateProblem(f"hooks[{i}].params.{exc}") from None
    return {
        "name": hook.name,
        "where": header.where.value,
        "params": values,
        "timeout": hook.timeout or header.timeout,
        "on_failure": hook.on_failure or header.on_failure.value,
    }


def render_plan(recipe: LoadedRecipe, facts: dict[str, FactValue]) -> Plan:
    """Render the recipe's templates, all within one budget of work (provision.recipes.sandbox); raises
    TemplateProblem naming the key on any failure."""
    r = recipe.recipe
    budget = templates.Budget()
    image = templates.render(r.image, facts, budget) if r.image else None
    if image is not None and not _IMAGE.match(image):
        raise templates.TemplateProblem(f"image: rendered to {image!r}, which is not NAME[@VERSION]")
    hostname = templates.render(r.hostname, facts, budget) if r.hostname else None
    if hostname is not None and not _HOSTNAME.match(hostname):
        raise templates.TemplateProblem(
            f"hostname: rendered to {hostname[:80]!r}, which is not a hostname (a-z, 0-9, '-', at most 63)"
        )
    hooks = []
    headers = recipe.hooks if len(recipe.hooks) == len(r.hooks) else ()
    for i, hook in enumerate(r.hooks):
        try:
            params = templates.render_tree(hook.params, facts, budget)
        except templates.TemplateProblem as exc:
            raise templates.TemplateProblem(f"hooks[{i}].params: {exc}") from None
        hooks.append(_plan_hook(i, hook, params, headers[i] if headers else None))
    hooks.extend(copy.deepcopy(list(recipe.bundle_hooks)))  # no templates: the same for every machine
    erase = None if r.erase is None else r.erase.model_dump(mode="json", exclude_none=True)
    if erase is not None and r.erase is not None and r.erase.lot is not None:
        lot = " ".join(templates.render(r.erase.lot, facts, budget).split())
        if not lot or len(lot) > 128 or not lot.isprintable():
            raise templates.TemplateProblem(f"erase.lot: rendered to {lot[:80]!r}: a lot is 1-128 printable characters")
        erase["lot"] = lot
    return Plan(
        image=image,
        hostname=hostname,
        target_disk=r.target_disk.model_dump(mode="json", exclude_none=True),
        wipe=r.wipe.value,
        grow_root=r.grow_root,
        hooks=hooks,
        bundles=list(r.bundles),
        erase=erase,
        capture=r.capture,
    )


def select(recipes: RecipeSet, facts: dict[str, FactValue]) -> Decision:
    candidates = [
        Candidate(rec, tuple(c.evaluate(facts) for c in rec.conditions))
        for rec in recipes.recipes
        if not rec.recipe.default
    ]
    matching = sorted((c for c in candidates if c.matched), key=lambda c: c.rank)
    rejected = tuple(sorted((c for c in candidates if not c.matched), key=lambda c: c.rank))
    via_default = False
    if matching:
        chosen: Candidate | None = matching[0]
        runners_up = tuple(matching[1:])
    elif recipes.default is not None:
        chosen, runners_up, via_default = Candidate(recipes.default, ()), (), True
    else:
        return Decision(Action.WAIT, None, None, (), rejected, ("no recipe matches and there is no default",), facts)

    assert chosen is not None
    recipe = chosen.recipe
    action = recipe.recipe.action
    reasons: list[str] = []
    failures, checks = health_failures(recipe.recipe.health, facts)
    if action is Action.IMAGE and failures:
        action = Action.REPAIR
        reasons.extend(failures)
    elif action is Action.REPAIR:
        reasons.append(f"recipe {recipe.name!r} sends matching machines to repair")
        reasons.extend(failures)
    plan = None
    if action in (Action.IMAGE, Action.ERASE):
        try:
            plan = render_plan(recipe, facts)
        except templates.TemplateProblem as exc:
            action = Action.WAIT
            reasons.append(f"recipe {recipe.name!r} ({recipe.file}): {exc}")
    return Decision(
        action, recipe, chosen, runners_up, rejected, tuple(reasons), facts, plan, via_default, tuple(checks)
    )
