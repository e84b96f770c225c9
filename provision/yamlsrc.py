"""YAML loading that remembers where every value came from, with bounded work.

PyYAML's composer keeps a mark (line, column) on every node; we build plain Python values from the node tree
and keep a map from each value's path (("hooks", 0, "params")) to its 1-based line, so that a schema error
anywhere can be reported as FILE:LINE: key: message. Duplicate mapping keys, which PyYAML silently
accepts, are reported too.

Every file read here is written by a person (recipes, the server configuration, image definitions), yet the
server reads recipes while it serves, so the work is bounded and every excess is a located problem, never an
exception nor a hang:

- a document is at most :data:`MAX_CHARS` characters and :data:`MAX_NODES` values (so reading one takes well
  under a second: PyYAML is pure Python);
- nesting is at most :data:`MAX_DEPTH` levels, counted while composing (a 20,000-deep ``[[[...]]]`` stops at
  level 51, before Python's recursion limit) and again while building (aliases inside aliases nest too);
- aliases expand to at most :data:`MAX_ALIAS_VALUES` values in all: a "billion laughs" document (anchors
  referring to anchors) is refused with "too many aliases"; an alias inside its own anchor is "recursive";
- values are plain JSON data: integers within 64 bits (a 5,000-digit number is refused, not a ValueError),
  finite floats, strings, booleans, null. A timestamp stays the text it was written as (``2024-01-01``),
  because every consumer of these files wants JSON-able data; binary (``!!binary``) is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from provision.errors import Problem

Path_ = tuple[str | int, ...]

MAX_CHARS = 256 * 1024  # characters in one document (PyYAML reads ~1 MB/s of the worst kind)
MAX_NODES = 20_000  # values written in one document (composing costs ~30 us each)
MAX_DEPTH = 50  # nested mappings and sequences
MAX_ALIAS_VALUES = 10_000  # values produced by expanding aliases, in one document
_INT_RANGE = range(-(1 << 63), 1 << 63)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


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


def _shown(path: Path_) -> str:
    """The dotted key, shortened when very deep (a problem line stays readable)."""
    text = dotted(path)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-37:]}"


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


class _Refused(Exception):
    """A bound of this module exceeded: the whole document is refused with one located problem."""

    def __init__(self, line: int | None, path: Path_, message: str) -> None:
        super().__init__(message)
        self.line, self.path, self.message = line, path, message


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than MAX_DEPTH while composing (the composer recurses)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._path: list[str | int] = []
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if parent is not None:
            self._path.append(index if isinstance(index, int) else _key_text(index))
        try:
            if not self.check_event(yaml.AliasEvent):
                self._nodes += 1
                if len(self._path) > MAX_DEPTH:
                    self._refuse(f"nested deeper than {MAX_DEPTH} levels")
                if self._nodes > MAX_NODES:
                    self._refuse(f"more than {MAX_NODES} values in one file")
            return super().compose_node(parent, index)
        finally:
            if parent is not None:
                self._path.pop()

    def _refuse(self, message: str) -> None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        line = event.start_mark.line + 1 if event.start_mark else None
        raise _Refused(line, tuple(self._path), message)


def _key_text(index: object) -> str:
    if isinstance(index, yaml.ScalarNode):
        return str(index.value)[:40]
    return "<key>"


def load(text: str, file: str, max_chars: int = MAX_CHARS) -> Located:
    """Parse one YAML document; syntax errors and exceeded bounds become problems, never exceptions."""
    doc = Located(file=file, data=None)
    if len(text) > max_chars:
        doc.problems.append(Problem(file, None, "", f"file is {len(text)} characters; at most {max_chars}"))
        return doc
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader refuses unprintable characters here
        node = loader.get_single_node()
    except _Refused as exc:
        doc.problems.append(Problem(file, exc.line, _shown(exc.path), exc.message))
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or exc.context or "invalid YAML"
        doc.problems.append(Problem(file, line, "", f"YAML syntax error: {reason}"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(file, None, "", f"YAML error: {exc}"))
        return doc
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return doc
    try:
        doc.data = _Builder(doc).build(node, ())
    except _Refused as exc:
        doc.data = None
        doc.problems.append(Problem(file, exc.line, _shown(exc.path), exc.message))
    return doc


def _scalar(node: yaml.ScalarNode, path: Path_) -> Any:
    """The plain value of a scalar: JSON data only (see the module docstring)."""
    line = node.start_mark.line + 1
    if node.tag == _TIMESTAMP:
        return node.value
    constructor = yaml.SafeLoader("")
    try:
        value = constructor.construct_object(node, deep=True)
    except ValueError as exc:  # e.g. Python refuses to read an integer of more than 4,300 digits
        if "digits" in str(exc):
            raise _Refused(line, path, f"number of {len(node.value)} characters is too large") from None
        raise _Refused(line, path, f"{node.value[:40]!r} cannot be read as {node.tag.rpartition(':')[2]}") from None
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or str(exc)
        raise _Refused(line, path, f"value cannot be read: {reason}") from None
    except Exception:  # PyYAML's constructors fail in their own ways (``!!int`` alone: IndexError)
        raise _Refused(line, path, f"{node.value[:40]!r} cannot be read as {node.tag.rpartition(':')[2]}") from None
    finally:
        constructor.dispose()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if value not in _INT_RANGE:
            raise _Refused(line, path, "integer outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(line, path, f"{node.value!r} is not a finite number")
        return value
    raise _Refused(line, path, f"{type(value).__name__} values ({node.tag}) are not supported")


class _Builder:
    """Plain values from a node tree, counting what aliases expand to and refusing recursive aliases."""

    def __init__(self, doc: Located) -> None:
        self.doc = doc
        self.seen: set[int] = set()  # nodes built once: meeting one again means an alias
        self.open: set[int] = set()  # nodes being built: meeting one of these is a recursive alias
        self.inside_alias = 0
        self.alias_values = 0
        self.alias_at: Path_ = ()  # where the outermost alias being expanded is used

    def build(self, node: yaml.Node, path: Path_) -> Any:
        line = node.start_mark.line + 1
        if len(path) > MAX_DEPTH:
            raise _Refused(self.doc.line_of(path), path, f"nested deeper than {MAX_DEPTH} levels (through aliases)")
        if id(node) in self.open:
            raise _Refused(self.doc.line_of(path), path, "recursive alias: the value contains itself")
        alias = id(node) in self.seen
        self.seen.add(id(node))
        if alias and not self.inside_alias:
            self.alias_at = path
        self.inside_alias += alias
        try:
            if self.inside_alias:
                self.alias_values += 1
                if self.alias_values > MAX_ALIAS_VALUES:
                    at = self.alias_at
                    message = f"too many aliases: they expand to over {MAX_ALIAS_VALUES} values"
                    raise _Refused(self.doc.line_of(at), at, message)
            # an alias has no line of its own (PyYAML keeps none): its place is its key's or its parent's line
            self.doc.lines.setdefault(path, self.doc.line_of(path) or line if alias else line)
            if isinstance(node, yaml.ScalarNode):
                return _scalar(node, path)
            self.open.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self.open.discard(id(node))
        finally:
            self.inside_alias -= alias

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        doc = self.doc
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                doc.problems.append(Problem(doc.file, key_line, dotted(path), "YAML merge keys (<<) are not supported"))
                continue
            key = self.build(key_node, (*path, "<key>"))
            if not isinstance(key, str | int | bool | float) or key is None:
                doc.problems.append(Problem(doc.file, key_line, dotted(path), "mapping keys must be plain scalars"))
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            if key in out:
                first = doc.lines.get(child)
                doc.problems.append(
                    Problem(doc.file, key_line, dotted(child), f"duplicate key (first set on line {first})")
                )
                continue
            doc.lines[child] = key_line
            out[key] = self.build(value_node, child)
        doc.lines.pop((*path, "<key>"), None)
        return out
