"""Typed messages from and to JSON with the standard library only: what pydantic does for the server, kept
small enough for the live environment (which has no pydantic).

A message is a frozen dataclass deriving from ``Message``; its annotations are the contract and ``rule(...)``
(``field(metadata=rule(...))``) adds limits. ``Message.from_dict`` checks a decoded JSON object against the
annotations (unknown keys refused, every problem collected with its dotted field path, as pydantic reports
them) and raises ``InvalidPayload`` (HTTP 422); ``to_dict`` gives the JSON object back.

Understood annotations: ``str``, ``int``, ``float``, ``bool``, ``None``, ``X | None``, ``Literal[...]``,
``list[X]``, ``tuple[X, Y]``, ``dict[str, X]``, ``Any`` and nested messages. Integers are JSON integers (not
booleans, not strings) within SQLite's 64 bits; floats accept integers and refuse NaN and infinities; an
``Any`` value is any JSON under the same number rules, nested at most 64 deep.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, Union

from provision.errors import InvalidPayload

INT_LIMIT = 1 << 63  # SQLite stores signed 64-bit integers
MAX_DEPTH = 64  # nesting of a free-form (Any) value
_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Rule:
    """Limits of one field beyond its type."""

    min_length: int | None = None  # str, list, dict
    max_length: int | None = None
    ge: float | None = None  # numbers
    pattern: str | None = None  # str: full match
    item_max_length: int | None = None  # list[str]: each item
    clean_text: bool = False  # str or list[str]: lone surrogates replaced (the text goes to files and SQLite)
    check: Callable[[Any], Any] | None = None  # after the type checks: returns the value kept, ValueError if bad


def rule(**limits: Any) -> dict[str, Rule]:
    """A field's metadata with limits: ``token: str = field(metadata=rule(min_length=8, max_length=128))``."""
    return {"wire": Rule(**limits)}


def clean_text(text: str) -> str:
    """Lone surrogates (valid JSON escapes, not encodable) replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, where: str, message: str) -> None:
        self.items.append({"field": where, "message": message})


_BAD = object()  # a value that did not check (its problem is recorded)


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _check(kind: Any, value: Any, where: str, limits: Rule, problems: _Problems) -> Any:
    """``value`` checked against the annotation ``kind``: the value to keep, or _BAD."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return _json_value(value, where, problems)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _check(inner[0] if len(inner) == 1 else Any, value, where, limits, problems)
    if kind is type(None):
        if value is not None:
            problems.add(where, "Input should be None")
            return _BAD
        return None
    if origin is Literal:
        allowed = typing.get_args(kind)
        if not isinstance(value, str | int | bool | None) or value not in allowed:
            problems.add(where, "Input should be " + " or ".join(repr(a) for a in allowed))
            return _BAD
        return value
    if isinstance(kind, type) and issubclass(kind, Message):
        if not isinstance(value, Mapping):
            problems.add(where, "Input should be an object")
            return _BAD
        return kind._parse(value, where, problems)
    if kind is bool:
        if not isinstance(value, bool):
            problems.add(where, "Input should be a valid boolean")
            return _BAD
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            problems.add(where, "Input should be a valid integer")
            return _BAD
        if not -INT_LIMIT <= value < INT_LIMIT:
            problems.add(where, "Input should be within 64 bits")
            return _BAD
        return _number(value, where, limits, problems)
    if kind is float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            problems.add(where, "Input should be a finite number")
            return _BAD
        return _number(float(value), where, limits, problems)
    if kind is str:
        if not isinstance(value, str):
            problems.add(where, "Input should be a valid string")
            return _BAD
        return _text(value, where, limits, problems)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            problems.add(where, "Input should be a valid list")
            return _BAD
        if not _size_ok(value, where, limits, problems):
            return _BAD
        each = Rule(max_length=limits.item_max_length, clean_text=limits.clean_text)
        items = [_check(item, v, _join(where, i), each, problems) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in items) else items
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            problems.add(where, f"Input should be a list of {len(args)} items")
            return _BAD
        items = [
            _check(a, v, _join(where, i), Rule(), problems) for i, (a, v) in enumerate(zip(args, value, strict=True))
        ]
        return _BAD if any(v is _BAD for v in items) else tuple(items)
    if origin is dict:
        _key, item = typing.get_args(kind)
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            problems.add(where, "Input should be an object")
            return _BAD
        if not _size_ok(value, where, limits, problems):
            return _BAD
        checked = {
            k: _check(item, v, _join(where, k), Rule(clean_text=limits.clean_text), problems) for k, v in value.items()
        }
        return _BAD if any(v is _BAD for v in checked.values()) else checked
    raise TypeError(f"wire schema: annotation {kind!r} of {where} is not understood")


def _json_value(value: Any, where: str, problems: _Problems, depth: int = 0) -> Any:
    """A free-form value (an ``Any`` field): JSON as the wire carries it, numbers finite and within 64 bits,
    object keys text, nested at most MAX_DEPTH: what the server can store and answer again as JSON."""
    if depth > MAX_DEPTH:
        problems.add(where, f"nested deeper than {MAX_DEPTH}")
        return _BAD
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if -INT_LIMIT <= value < INT_LIMIT:
            return value
        problems.add(where, "Input should be within 64 bits")
        return _BAD
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        problems.add(where, "Input should be a finite number")
        return _BAD
    if isinstance(value, list | tuple):
        items = [_json_value(v, _join(where, i), problems, depth + 1) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in items) else items
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        checked = {k: _json_value(v, _join(where, k), problems, depth + 1) for k, v in value.items()}
        return _BAD if any(v is _BAD for v in checked.values()) else checked
    problems.add(where, "Input should be JSON (an object with text keys, a list, text, a number, a boolean or null)")
    return _BAD


def _size_ok(value: list[Any] | Mapping[str, Any], where: str, limits: Rule, problems: _Problems) -> bool:
    if limits.max_length is not None and len(value) > limits.max_length:
        problems.add(where, f"should have at most {limits.max_length} items")
        return False
    if limits.min_length is not None and len(value) < limits.min_length:
        problems.add(where, f"should have at least {limits.min_length} items")
        return False
    return True


def _number(value: float, where: str, limits: Rule, problems: _Problems) -> Any:
    if limits.ge is not None and value < limits.ge:
        problems.add(where, f"Input should be greater than or equal to {limits.ge:g}")
        return _BAD
    return value


def _text(value: str, where: str, limits: Rule, problems: _Problems) -> Any:
    if limits.min_length is not None and len(value) < limits.min_length:
        problems.add(where, f"String should have at least {limits.min_length} characters")
        return _BAD
    if limits.max_length is not None and len(value) > limits.max_length:
        problems.add(where, f"String should have at most {limits.max_length} characters")
        return _BAD
    if limits.pattern is not None and not re.fullmatch(limits.pattern, value):
        problems.add(where, f"String should match pattern '{limits.pattern}'")
        return _BAD
    return clean_text(value) if limits.clean_text else value


class Message:
    """Base of the wire's dataclasses: ``from_dict`` (checked) and ``to_dict`` (JSON-ready)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    omit_none: ClassVar[bool] = False  # to_dict leaves out optional fields that are None (what agents send)

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """The message in ``data`` (a decoded JSON object); InvalidPayload lists every problem."""
        problems = _Problems()
        if not isinstance(data, Mapping):
            raise InvalidPayload("invalid payload", [{"field": "", "message": "Input should be an object"}])
        found = cls._parse(data, "", problems)
        if problems.items or found is _BAD:
            raise InvalidPayload("invalid payload", problems.items)
        return typing.cast(Self, found)

    @classmethod
    def _parse(cls, data: Mapping[str, Any], where: str, problems: _Problems) -> Self | object:
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        bad = False
        for f in dataclasses.fields(cls):
            path = _join(where, f.name)
            if f.name not in data:
                if f.default is _MISSING and f.default_factory is _MISSING:
                    problems.add(path, "Field required")
                    bad = True
                continue
            limits: Rule = f.metadata.get("wire", Rule())
            value = _check(hints[f.name], data[f.name], path, limits, problems)
            if value is not _BAD and limits.check is not None and value is not None:
                try:
                    value = limits.check(value)
                except ValueError as exc:
                    problems.add(path, f"Value error, {exc}")
                    value = _BAD
            bad = bad or value is _BAD
            values[f.name] = value
        for key in data:
            if key not in cls.__dataclass_fields__:
                problems.add(_join(where, key), "Extra inputs are not permitted")
                bad = True
        if bad:
            return _BAD
        try:
            return cls(**values)
        except ValueError as exc:  # a check across fields (__post_init__)
            problems.add(where, f"Value error, {exc}")
            return _BAD

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.omit_none:
            values = {k: v for k, v in values.items() if v is not None}
        return {k: _dump(v) for k, v in values.items()}


def _dump(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value
