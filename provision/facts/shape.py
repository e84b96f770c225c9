"""Read :class:`Facts` back from the JSON of :meth:`Facts.to_dict`, refusing anything of another shape.

Facts given as JSON come from outside (a hello's ``facts``, a ``facts.json`` file), and a recipe decides
how to image a machine from them, so a value of the wrong type is refused, naming its key
(``disks: expected a list, got a string``), rather than read as "unknown" and given a plan. The shape is
the model's own (provision/facts/model.py): the reader walks the dataclasses' type hints, so a field added
to the model is read without a change here.

- a missing key is the field's default, or unknown (``None``); a field that cannot be unknown (a PCI
  device's ``slot``, a disk's ``name``, a memory device's ``size_mb``) is required;
- ``None`` stands for unknown wherever the model allows it; enums take their values only (``"uefi"``);
- an unknown key is refused (a typo must not drop a fact silently);
- integers are 0 <= n < 2**63 (what a probe can report, and what SQLite can store); booleans are not numbers.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar, Union

from provision.errors import ProbeError
from provision.facts.model import MAX_FACT_INT, Facts

__all__ = ["MAX_FACT_INT", "FactsInvalid", "facts_from_dict"]

_T = TypeVar("_T")


class FactsInvalid(ProbeError, ValueError):
    """Facts that are not the shape of ``Facts.to_dict()``: ``key`` names the first offending value (HTTP 422).

    Also a ValueError, so that code reading untrusted facts catches it with the other bad-input errors."""

    public_facts = ("key",)

    def __init__(self, key: str, message: str, *, path: str = "facts") -> None:
        super().__init__(f"{key}: {message}" if key else message, path=path)
        self.key, self.reason = key, message
        self.facts["key"] = key


def _kind(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """The type hints and fields of a model class (get_type_hints evaluates annotations: slow, so once)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _object(cls: type[_T], data: object, where: str) -> _T:
    if not isinstance(data, dict):
        raise FactsInvalid(where, f"expected an object, got {_kind(data)}")
    model: type = cls
    hints, fields = _shape(model)
    for name in data:
        if name not in fields:
            raise FactsInvalid(_key(where, str(name)[:60]), "unknown key")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name in data:
            values[name] = _value(hints[name], data[name], _key(where, name))
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            if type(None) not in typing.get_args(hints[name]):
                raise FactsInvalid(_key(where, name), "required key is missing")
            values[name] = None  # unknown
    return cls(**values)


def _value(hint: Any, value: object, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return _value(inner, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise FactsInvalid(where, f"expected a list, got {_kind(value)}")
        item = typing.get_args(hint)[0]
        return tuple(_value(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise FactsInvalid(where, f"expected a boolean, got {_kind(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise FactsInvalid(where, f"expected a whole number, got {_kind(value)}")
        if not 0 <= value <= MAX_FACT_INT:
            raise FactsInvalid(where, f"number out of range (0 .. {MAX_FACT_INT})")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise FactsInvalid(where, f"expected a string, got {_kind(value)}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if not isinstance(value, str) or value not in allowed:
            raise FactsInvalid(where, f"expected one of {', '.join(map(str, allowed))}, got {_kind(value)}")
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _object(hint, value, where)
    raise TypeError(f"{where}: the facts model has a field of type {hint!r} this reader does not know")


def facts_from_dict(data: dict[str, Any]) -> Facts:
    """The inverse of :meth:`Facts.to_dict`. Missing keys are unknown; anything else that is not the model's
    shape raises :class:`FactsInvalid` naming the key."""
    return _object(Facts, data, "")
