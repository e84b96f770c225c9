"""YAML loading that remembers where every value came from.

PyYAML's composer keeps a mark (line, column) on every node; we build plain Python values from the node tree
and keep a map from each value's path (("hooks", 0, "params")) to its 1-based line, so that a schema error
anywhere can be reported as FILE:LINE: key: message. Duplicate mapping keys, which PyYAML silently
accepts, are reported too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from provision.errors import Problem

Path_ = tuple[str | int, ...]


@dataclass
class Located:
    """A YAML document as plain data, with the line of every value and mapping key."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path_) -> int | None:
        """Line of the value at path, or of its nearest known parent."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_problems(file: str, doc: Located | None, exc: ValidationError) -> list[Problem]:
    """A pydantic error as located problems: the line of the offending key (or its nearest parent)."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(Problem(file, doc.line_of(loc) if doc else None, dotted(loc), msg))
    return problems


def load(text: str, file: str) -> Located:
    """Parse one YAML document; syntax errors become problems, never exceptions."""
    doc = Located(file=file, data=None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or exc.context or "invalid YAML"
        doc.problems.append(Problem(file, line, "", f"YAML syntax error: {reason}"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(file, None, "", f"YAML error: {exc}"))
        return doc
    if node is None:
        return doc
    doc.data = _build(node, (), doc)
    return doc


def _scalar(node: yaml.ScalarNode) -> Any:
    constructor = yaml.SafeLoader("")
    try:
        return constructor.construct_object(node, deep=True)
    finally:
        constructor.dispose()


def _build(node: yaml.Node, path: Path_, doc: Located) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                doc.problems.append(
                    Problem(
                        doc.file,
                        key_node.start_mark.line + 1,
                        dotted(path),
                        "YAML merge keys (<<) are not supported",
                    )
                )
                continue
            key = _build(key_node, (*path, "<key>"), doc)
            if not isinstance(key, str | int | bool | float) or key is None:
                doc.problems.append(
                    Problem(
                        doc.file,
                        key_node.start_mark.line + 1,
                        dotted(path),
                        "mapping keys must be plain scalars",
                    )
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            if key in out:
                doc.problems.append(
                    Problem(
                        doc.file,
                        key_node.start_mark.line + 1,
                        dotted(child),
                        f"duplicate key (first set on line {doc.lines.get(child)})",
                    )
                )
                continue
            doc.lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, doc)
        doc.lines.pop((*path, "<key>"), None)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover - composer yields only these
