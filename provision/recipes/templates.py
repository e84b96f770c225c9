"""jinja2 templates inside recipe values (``hostname: "ecole-{{ serial[-6:] }}"``).

Rendering is sandboxed and strict: an undefined name is an error, never an empty string. Names must be fact
names (provision.facts.derive.FACT_NAMES); the loader checks that before any machine boots. Rendered values
are data: whoever puts them into a command line, a file or a boot script escapes them there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from provision.facts.derive import FACT_NAMES, FactValue

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def slug(value: object) -> str:
    """Lower-case a-z, 0-9 and '-' only: safe in hostnames and file names. Unknown (None) is an error."""
    if value is None:
        raise ValueError("slug of an unknown value (the fact could not be read on this machine)")
    text = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
    if not text:
        raise ValueError(f"slug of {str(value)[:40]!r} is empty")
    return text


_ENV.filters["slug"] = slug


class TemplateProblem(ValueError):
    """A template that does not compile, names an unknown fact, or fails to render for a machine."""


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def check(source: str) -> None:
    """Compile a template and check that it only names known facts."""
    try:
        ast = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    unknown = sorted(meta.find_undeclared_variables(ast) - FACT_NAMES)
    if unknown:
        raise TemplateProblem(f"template names unknown fact(s): {', '.join(unknown)}")


def render(source: str, facts: dict[str, FactValue]) -> str:
    if not is_template(source):
        return source
    try:
        return _ENV.from_string(source).render(**facts)
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"template {source!r} failed: {exc}") from None
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
        raise TemplateProblem(f"template {source!r} failed on this machine's facts: {exc}") from None


def walk_strings(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string inside nested dicts and lists, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from walk_strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk_strings(item, (*path, i))


def render_tree(value: Any, facts: dict[str, FactValue]) -> Any:
    if isinstance(value, str):
        return render(value, facts)
    if isinstance(value, dict):
        return {key: render_tree(item, facts) for key, item in value.items()}
    if isinstance(value, list):
        return [render_tree(item, facts) for item in value]
    return value
