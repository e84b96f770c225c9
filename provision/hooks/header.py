"""The header of a post-install hook: the YAML in comment lines near the top of the hook file.

A hook is an executable (any interpreter its ``#!`` line names) whose header sits between the lines
``# --- provision hook`` and ``# ---``, within the first :data:`MAX_START_LINE` lines::

    #!/bin/sh
    # --- provision hook
    # name: hostname
    # description: Set the hostname
    # where: target            # target | live | server
    # timeout: 60              # seconds, 1..21600
    # on_failure: fail         # fail | warn
    # params:
    #   hostname: {type: str, required: true, description: the machine's name}
    # needs: [serial]          # facts the hook reads as PROVISION_FACT_<NAME>
    # ---

Each header line is a comment: ``#`` and one optional space are removed and the rest is YAML, read by
provision.yamlsrc (bounded work, the line of every value) and checked by pydantic as the recipes are (unknown
keys refused, strict types). Every problem is ``FILE:LINE: key: message`` with the line in the hook file.

Parameters are typed (:class:`ParamType`); :meth:`Param.convert` turns a value from a recipe, once its
templates are rendered, into the parameter's type (text ``"42"`` into an int ``42`` for an int parameter,
``"True"`` into ``True`` for a bool), or raises :class:`ParamProblem` saying why not.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from provision import yamlsrc
from provision.errors import Problem
from provision.facts.derive import FACT_NAMES
from provision.wire.hooks import MAX_TIMEOUT

START = "# --- provision hook"
END = "# ---"
MAX_START_LINE = 10  # the start marker is on one of the first lines (after the #! line)
MAX_HEADER_LINES = 200  # lines between the markers
MAX_HEADER_CHARS = 64 * 1024
MAX_PARAMS = 64
MAX_NEEDS = 64
MAX_VALUE_BYTES = 64 * 1024  # one parameter as text (UTF-8); Linux refuses an environment string over 128 KiB
HOOK_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # the wire's HookJob.name
PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")  # PROVISION_PARAM_<NAME> fits provision.wire.hooks.ENV_NAME
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_INT_RANGE = range(-(1 << 63), 1 << 63)

ParamValue = str | int | bool | list[str]


class ParamProblem(ValueError):
    """A parameter value that is not of its parameter's type (the message says what it is instead)."""


class Where(enum.StrEnum):
    TARGET = "target"  # in a chroot of the written root file system
    LIVE = "live"  # in the live environment; PROVISION_ROOT is the mounted target root
    SERVER = "server"  # on the server, the machine's record as JSON on stdin


class OnFailure(enum.StrEnum):
    FAIL = "fail"  # the run fails
    WARN = "warn"  # the run ends done, with a warning


class ParamType(enum.StrEnum):
    STR = "str"
    INT = "int"
    BOOL = "bool"
    LIST = "list[str]"


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a yes/no value"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:50] + "..."
        return f"{shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "nothing" if value is None else type(value).__name__


def _text(value: str, what: str) -> str:
    if "\0" in value:
        raise ParamProblem(f"{what} holds a NUL character, which no environment can carry")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ParamProblem(f"{what} is not valid text (a lone surrogate)") from None
    if size > MAX_VALUE_BYTES:
        raise ParamProblem(f"{what} is {size} bytes; at most {MAX_VALUE_BYTES}")
    return value


def convert(kind: ParamType, value: object) -> ParamValue:
    """``value`` (from YAML, or a rendered template: text) as a value of ``kind``; ParamProblem if it is not.

    str: text. int: an integer, or text of one (decimal, spaces around ignored). bool: true/false, or the
    text ``true``/``false`` in any case. list[str]: a list of non-empty texts without a line break (the
    environment gives them one per line)."""
    if kind is ParamType.STR:
        if not isinstance(value, str):
            raise ParamProblem(f"expected text, got {_kind(value)} (quote it)")
        return _text(value, "the text")
    if kind is ParamType.INT:
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool):
            raise ParamProblem(f"expected an integer, got {_kind(value)}")
        if value not in _INT_RANGE:
            raise ParamProblem("integer outside the 64-bit range")
        return value
    if kind is ParamType.BOOL:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ParamProblem(f"expected true or false, got {_kind(value)}")
        return value
    if not isinstance(value, list):
        raise ParamProblem(f"expected a list of texts, got {_kind(value)}")
    items: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ParamProblem(f"item {i}: expected text, got {_kind(item)}")
        if not item or "\n" in item or "\r" in item:
            raise ParamProblem(f"item {i}: {_kind(item)} is empty or holds a line break (one item per line)")
        items.append(_text(item, f"item {i}"))
    _text("\n".join(items), "the list")
    return items


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(Strict):
    """One parameter a hook takes: PROVISION_PARAM_<NAME> in its environment."""

    type: ParamType = ParamType.STR
    required: StrictBool = False
    default: Any = None  # JSON data from YAML; checked against ``type`` below
    description: StrictStr = ""

    @model_validator(mode="after")
    def _default_fits(self) -> Param:
        if self.default is not None:
            if self.required:
                raise ValueError("a required parameter takes no default")
            try:
                strict = convert(self.type, self.default)
            except ParamProblem as exc:
                raise ValueError(f"default: {exc}") from None
            if type(strict) is not type(self.default):  # "42" for an int: the header says what it means
                raise ValueError(f"default: {_kind(self.default)} is not of type {self.type.value}")
        return self

    def convert(self, value: object) -> ParamValue:
        return convert(self.type, value)


def _fact(name: str) -> str:
    if name not in FACT_NAMES:
        raise ValueError(f"{name[:40]!r} is not a fact name (provision facts lists them)")
    return name


FactName = Annotated[StrictStr, AfterValidator(_fact)]


class Header(Strict):
    name: Annotated[StrictStr, StringConstraints(pattern=HOOK_NAME)]
    description: Annotated[StrictStr, StringConstraints(min_length=1, max_length=500)]
    where: Where
    timeout: StrictInt = Field(default=600, ge=1, le=MAX_TIMEOUT)
    on_failure: OnFailure = OnFailure.FAIL
    params: dict[str, Param] = Field(default_factory=dict, max_length=MAX_PARAMS)
    needs: list[FactName] = Field(default_factory=list, max_length=MAX_NEEDS)

    def resolve(self, given: Mapping[str, object]) -> dict[str, ParamValue]:
        """The values the hook runs with: ``given`` converted to each parameter's type, defaults filled in.
        Raises ParamProblem naming the parameter (unknown, missing although required, wrong type)."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise ParamProblem(f"{unknown[0]}: hook {self.name!r} takes no such parameter{_takes(self)}")
        values: dict[str, ParamValue] = {}
        for name, param in self.params.items():
            if name in given:
                try:
                    values[name] = param.convert(given[name])
                except ParamProblem as exc:
                    raise ParamProblem(f"{name}: {exc}") from None
            elif param.required:
                raise ParamProblem(f"{name}: hook {self.name!r} requires this parameter")
            elif param.default is not None:
                values[name] = param.default
        return values


def _takes(header: Header) -> str:
    return f" (it takes: {', '.join(header.params)})" if header.params else " (it takes none)"


def _header_lines(text: str, file: str) -> tuple[int, list[str], list[Problem]]:
    """(index of the start marker, the header's lines without their '#', problems)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#!"):
        return -1, [], [Problem(file, 1, "", "a hook starts with a #! line naming its interpreter")]
    start = next((i for i, line in enumerate(lines[:MAX_START_LINE]) if line.rstrip() == START), None)
    if start is None:
        message = f"no header: {START!r} must be one of the first {MAX_START_LINE} lines"
        return -1, [], [Problem(file, None, "", message)]
    body: list[str] = []
    for i in range(start + 1, min(len(lines), start + 2 + MAX_HEADER_LINES)):
        line = lines[i]
        if line.rstrip() == END:
            return start, body, []
        if not line.startswith("#"):
            message = f"the header is not closed: every line up to {END!r} is a comment"
            return start, body, [Problem(file, i + 1, "", message)]
        body.append(line[2:] if line.startswith("# ") else line[1:])
    message = f"the header is not closed by {END!r} within {MAX_HEADER_LINES} lines"
    return start, body, [Problem(file, start + 1, "", message)]


def _param_names(data: Mapping[str, Any], doc: yamlsrc.Located, file: str) -> list[Problem]:
    params = data.get("params")
    if not isinstance(params, dict):
        return []
    message = "a parameter name is lower-case letters, digits and '_', starting with a letter, at most 48"
    return [
        Problem(file, doc.line_of(("params", name)), f"params.{name[:40]}", message)
        for name in params
        if not PARAM_NAME.fullmatch(name)
    ]


def parse(text: str, file: str) -> tuple[Header | None, yamlsrc.Located | None, list[Problem]]:
    """The header of a hook's text (``file``: the name problems show). Never raises: problems are returned,
    every one located in the hook file. The Located document gives the line of each header key."""
    start, body, problems = _header_lines(text, file)
    if problems:
        return None, None, problems
    yaml_text = "\n" * (start + 1) + "\n".join(body)  # leading blank lines: YAML lines are the file's lines
    doc = yamlsrc.load(yaml_text, file, max_chars=start + 1 + MAX_HEADER_CHARS)
    problems = list(doc.problems)
    if doc.data is None and not problems:
        problems.append(Problem(file, start + 1, "", "the header is empty: it needs name, description, where"))
    if doc.data is not None and not isinstance(doc.data, dict):
        problems.append(Problem(file, start + 2, "", "the header must be a YAML mapping"))
    if problems:
        return None, doc, problems
    problems = _param_names(doc.data, doc, file)
    try:
        header = Header.model_validate(doc.data)
    except ValidationError as exc:
        return None, doc, problems + yamlsrc.validation_problems(file, doc, exc)
    if problems:
        return None, doc, problems
    return header, doc, []
