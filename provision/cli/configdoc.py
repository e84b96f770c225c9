"""The configuration reference, made from the model itself (``provision.config``): every key's dotted name, type,
bounds, default and description (its ``Field(description=...)``).

docs/configuration.md holds the Markdown table between two markers; ``provision config reference --write FILE``
rewrites it and tests/unit/test_config_docs.py checks the checked-in file equals the output, so the documentation
cannot drift from the model. ``provision config defaults`` prints the same keys as a YAML file with comments.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from provision.config import ServerConfig

BEGIN = "<!-- provision config reference: begin (generated: provision config reference --write FILE) -->"
END = "<!-- provision config reference: end -->"
_NAMES = {IPv4Address: "IPv4 address", IPv4Network: "IPv4 network", Path: "path", int: "integer", float: "number",
          str: "text", bool: "boolean"}  # fmt: skip


@dataclass(frozen=True)
class KeyDoc:
    """One configuration key: ``dhcp.mode``, ``proxy, full or off``, ``proxy``, what it means."""

    key: str
    type: str
    default: str
    description: str
    bounds: str
    section: str  # the dotted key of the mapping it is in ("" at the top)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A person's words for a field's type: ``IPv4 address or null``, ``list of IPv4 address``, ``one of ...``."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [str(m.value) for m in annotation]
        return "one of " + ", ".join(values)
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def value_text(value: Any) -> str:
    """A default as it is written in YAML."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, IPv4Address | IPv4Network | Path):
        value = str(value)
    text: str = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("default_text"), str):
        return str(extra["default_text"])
    if info.default is not PydanticUndefined:
        return value_text(info.default)
    if info.default_factory is not None:
        return value_text(info.default_factory())  # type: ignore[call-arg]  # no-argument factories only
    return "(required)"


def _bounds(info: FieldInfo) -> str:
    out = []
    for item in info.metadata:
        for name, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                out.append(f"{word} {getattr(item, name)}")
        if isinstance(item, annotated_types.MaxLen):
            low = next((m.min_length for m in info.metadata if isinstance(m, annotated_types.MinLen)), 0)
            out.append(f"{low} to {item.max_length} characters")
        if getattr(item, "pattern", None):
            out.append("no control characters" if "x00-\\x1f" in str(item.pattern) else f"matches {item.pattern}")
    return ", ".join(out)


def config_keys(model: type[BaseModel] = ServerConfig, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key of ``model``, depth first in the model's order (nested mappings expanded)."""
    found: list[KeyDoc] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if _is_model(info.annotation):
            found += config_keys(info.annotation, key)  # type: ignore[arg-type]  # _is_model checked it
            continue
        found.append(KeyDoc(key, type_name(info.annotation), _default(info), info.description or "", _bounds(info),
                            prefix))  # fmt: skip
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference() -> str:
    """The Markdown table of every key, between BEGIN and END (the markers included)."""
    lines = [BEGIN, "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for doc in config_keys():
        kind = f"{doc.type} ({doc.bounds})" if doc.bounds else doc.type
        default = _cell(doc.default) if "default_text" in _extra(doc.key) else f"`{_cell(doc.default)}`"
        lines.append(f"| `{doc.key}` | {_cell(kind)} | {default} | {_cell(doc.description)} |")
    return "\n".join([*lines, "", END]) + "\n"


def replace_reference(text: str) -> str:
    """``text`` (docs/configuration.md) with its generated section replaced by ``reference()``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers are missing: {BEGIN!r} ... {END!r}")
    return text[:start] + reference() + text[end + len(END) :].removeprefix("\n")


def defaults_yaml() -> str:
    """Every key with its default, as a configuration file with each key's meaning as a comment."""
    lines = ["# provision serve --config FILE: every key with its default (docs/configuration.md)"]
    section = ""
    for doc in config_keys():
        parts = doc.key.split(".")
        if doc.section != section:
            section = doc.section
            if section:
                lines.append(f"{'  ' * (len(parts) - 2)}{parts[-2]}:")
        indent = "  " * (len(parts) - 1)
        lines.append(f"{indent}# {doc.description}" + (f" ({doc.bounds})" if doc.bounds else ""))
        default = value_text(_live_default(doc.key)) if "default_text" in _extra(doc.key) else doc.default
        lines.append(f"{indent}{parts[-1]}: {default}")
    return "\n".join(lines) + "\n"


def _field(key: str) -> FieldInfo:
    model: type[BaseModel] = ServerConfig
    *path, last = key.split(".")
    for part in path:
        model = model.model_fields[part].annotation  # type: ignore[assignment]  # a nested model
    return model.model_fields[last]


def _extra(key: str) -> dict[str, Any]:
    extra = _field(key).json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def _live_default(key: str) -> Any:
    """The default this installation really uses (a path of the installed package)."""
    info = _field(key)
    return info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
