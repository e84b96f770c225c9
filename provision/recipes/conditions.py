"""Match conditions: one recipe ``match:`` entry compiled into a test over the derived facts.

The form of a condition depends on the kind of the fact it names (see provision.facts.derive.FACT_DOCS):

- text facts: a glob (``"OptiPlex 7*"``, case-insensitive) or a list of globs, any of which may match;
  a glob starting with ``!`` must NOT match. ``unknown`` matches a fact that could not be read.
- number facts: a number (equal), a comparison string (``">= 4096"``, ``"< 8"``, ``"!= 0"``) or an inclusive
  range ``"2048..4096"``; a list means any of them. An unknown number never matches.
- yes/no facts: ``true`` or ``false``. An unknown value never matches.
- list facts (``pci_ids``, ``disk_transport`` ...): a glob or list of globs; EACH must match at least one
  element (``pci_ids: ["8086:10de", "14e4:*"]`` needs both). ``"!glob"`` requires that no element matches.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from provision.facts.derive import FACT_KINDS, FactValue

_CMP: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
_CMP_RE = re.compile(r"^\s*(>=|<=|!=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_RANGE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\.\.\s*(-?\d+(?:\.\d+)?)\s*$")


class ConditionError(ValueError):
    """A condition that cannot be compiled; the message is meant for the recipe author."""


@dataclass(frozen=True)
class Outcome:
    fact: str
    expected: str
    actual: FactValue
    matched: bool

    def describe(self) -> str:
        mark = "yes" if self.matched else "no "
        return f"[{mark}] {self.fact} {self.expected}  (machine: {show(self.actual)})"


def show(value: FactValue) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]" if value else "[]"
    return str(value)


@dataclass(frozen=True)
class Condition:
    fact: str
    expected: str  # human form, for explanations
    test: Callable[[FactValue], bool]

    def evaluate(self, facts: dict[str, FactValue]) -> Outcome:
        actual = facts.get(self.fact)
        return Outcome(self.fact, self.expected, actual, bool(self.test(actual)))


def _as_list(spec: object) -> list[object]:
    return list(spec) if isinstance(spec, list) else [spec]


def _glob(pattern: str) -> Callable[[str | None], bool]:
    pat = pattern.lower()
    if pat == "unknown":
        return lambda v: v is None or v.lower() == "unknown"
    return lambda v: v is not None and fnmatch.fnmatchcase(v.lower(), pat)


def _text(fact: str, spec: object) -> Condition:
    items = _as_list(spec)
    if not items or not all(isinstance(i, str | int | float) and not isinstance(i, bool) for i in items):
        raise ConditionError("expected a text glob or a list of globs")
    positive = [_glob(str(i)) for i in items if not str(i).startswith("!")]
    negative = [_glob(str(i)[1:]) for i in items if str(i).startswith("!")]

    def test(value: FactValue) -> bool:
        text = value if isinstance(value, str) else None
        if any(n(text) for n in negative):
            return False
        return any(p(text) for p in positive) if positive else True

    return Condition(fact, "matches " + " | ".join(str(i) for i in items), test)


def _number_test(item: object) -> tuple[str, Callable[[float], bool]]:
    if isinstance(item, bool):
        raise ConditionError(f"{item!r} is not a number, a comparison like '>= 4096' or a range like '2048..4096'")
    if isinstance(item, int | float):
        return f"== {item}", lambda v: v == item
    if isinstance(item, str):
        m = _CMP_RE.match(item)
        if m:
            op, bound = _CMP[m.group(1)], float(m.group(2))
            return f"{m.group(1)} {m.group(2)}", lambda v: op(v, bound)
        m = _RANGE_RE.match(item)
        if m:
            low, high = float(m.group(1)), float(m.group(2))
            if low > high:
                raise ConditionError(f"range {item!r} is empty (low end above high end)")
            return f"in {m.group(1)}..{m.group(2)}", lambda v: low <= v <= high
    raise ConditionError(f"{item!r} is not a number, a comparison like '>= 4096' or a range like '2048..4096'")


def _number(fact: str, spec: object) -> Condition:
    parts = [_number_test(i) for i in _as_list(spec)]
    if not parts:
        raise ConditionError("expected at least one number condition")

    def test(value: FactValue) -> bool:
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        return any(check(value) for _, check in parts)

    return Condition(fact, " or ".join(text for text, _ in parts), test)


def _boolean(fact: str, spec: object) -> Condition:
    if not isinstance(spec, bool):
        raise ConditionError("expected true or false")
    return Condition(fact, f"is {show(spec)}", lambda v: v is spec)


def _members(fact: str, spec: object) -> Condition:
    items = _as_list(spec)
    if not items or not all(isinstance(i, str) for i in items):
        raise ConditionError("expected a glob or a list of globs that must all be present")
    checks: list[tuple[bool, Callable[[str | None], bool]]] = []
    for item in items:
        assert isinstance(item, str)
        if item.startswith("!"):
            checks.append((False, _glob(item[1:])))
        else:
            checks.append((True, _glob(item)))

    def test(value: FactValue) -> bool:
        if not isinstance(value, list):
            return False
        for wanted, check in checks:
            present = any(check(v) for v in value)
            if present != wanted:
                return False
        return True

    return Condition(fact, "has " + " and ".join(str(i) for i in items), test)


_BUILDERS: dict[str, Callable[[str, object], Condition]] = {
    "str": _text,
    "int": _number,
    "bool": _boolean,
    "list": _members,
}


def compile_condition(fact: str, spec: object) -> Condition:
    """Compile one ``fact: spec`` entry; raises ConditionError with a message for the author."""
    kind = FACT_KINDS.get(fact)
    if kind is None:
        raise ConditionError(f"unknown fact {fact!r}; known facts: {', '.join(sorted(FACT_KINDS))}")
    return _BUILDERS[kind](fact, spec)
