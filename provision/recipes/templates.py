"""jinja2 templates inside recipe values (``hostname: "ecole-{{ serial[-6:] }}"``).

Rendering is sandboxed and strict: an undefined name is an error, never an empty string. Names must be fact
names (provision.facts.derive.FACT_NAMES); the loader checks that before any machine boots. Rendered values
are data: whoever puts them into a command line, a file or a boot script escapes them there.

Work is bounded (provision.recipes.sandbox): a template is at most :data:`MAX_TEMPLATE` characters, and every
render runs under a :class:`Budget` of time, loop iterations and sizes. :func:`check` also renders each
template for two trial machines (every fact unknown; every fact known), so a template that exceeds a bound
whatever the machine (``range(10**9)``, ``9**(9**9)``) fails ``recipes check``, not a hello. :func:`render`
never raises anything but :class:`TemplateProblem`: the machine then waits with the reason.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import jinja2
from jinja2 import meta

from provision.facts.derive import FACT_KINDS, FACT_NAMES, FactValue
from provision.recipes.limits import MAX_SIZE, TemplateLimit, TemplateProblem
from provision.recipes.sandbox import BoundedSandbox, Budget, bound_ast, charged

__all__ = [
    "MAX_TEMPLATE",
    "Budget",
    "TemplateLimit",
    "TemplateProblem",
    "check",
    "render",
    "render_tree",
    "trial_renders",
]

MAX_TEMPLATE = 64 * 1024  # characters of one template
MAX_OUTPUT = MAX_SIZE  # characters one template renders to

_ENV = BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def slug(value: object) -> str:
    """Lower-case a-z, 0-9 and '-' only: safe in hostnames and file names. Unknown (None) is an error."""
    if value is None:
        raise ValueError("slug of an unknown value (the fact could not be read on this machine)")
    text = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
    if not text:
        raise ValueError(f"slug of {str(value)[:40]!r} is empty")
    return text


_ENV.add_filter("slug", slug)

# Trial machines for check(): every fact unknown, and every fact known with a value of its kind.
_KIND_VALUES: dict[str, FactValue] = {"str": "x", "int": 1, "bool": True, "list": ["x"]}
_TRIALS: tuple[dict[str, FactValue], ...] = (
    dict.fromkeys(FACT_NAMES),
    {name: _KIND_VALUES.get(FACT_KINDS.get(name, "str"), "x") for name in FACT_NAMES},
)


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def _short(source: str) -> str:
    return repr(source) if len(source) <= 80 else f"{source[:60]!r}... ({len(source)} characters)"


def _parse(source: str) -> jinja2.nodes.Template:
    if len(source) > MAX_TEMPLATE:
        raise TemplateLimit(f"template of {len(source)} characters; at most {MAX_TEMPLATE}")
    try:
        return bound_ast(_ENV.parse(source), _ENV)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    except RecursionError:
        raise TemplateLimit("template nested too deeply") from None
    except Exception as exc:  # the lexer's own failures (a 5,000-digit literal ...) are the template's
        raise TemplateProblem(f"template does not parse: {type(exc).__name__}: {str(exc)[:200]}") from None


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    """The template, compiled once per source text (the optimizer cannot fold intercepted operators)."""
    ast = _parse(source)
    try:
        return _ENV.from_string(ast)
    except TemplateProblem:
        raise
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    except (RecursionError, SyntaxError, MemoryError):  # Python's compiler refuses code nested too deeply
        raise TemplateLimit("template nested too deeply") from None


def check(source: str, budget: Budget | None = None) -> None:
    """Compile a template, check that it only names known facts and that it stays within the bounds for the
    trial machines (charged to ``budget``: one per recipe file). Raises TemplateProblem. A string without
    ``{{``, ``{%`` or ``{#`` is data, as render() takes it."""
    if not is_template(source):
        return
    ast = _parse(source)
    try:
        names = meta.find_undeclared_variables(ast)  # compiles the template: unknown filters fail here
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    except RecursionError:
        raise TemplateLimit("template nested too deeply") from None
    except Exception as exc:  # Python's own compiler refusing the generated code, and the like
        raise TemplateProblem(f"template does not compile: {type(exc).__name__}: {str(exc)[:200]}") from None
    unknown = sorted(names - FACT_NAMES)
    if unknown:
        raise TemplateProblem(f"template names unknown fact(s): {', '.join(unknown)}")
    budget = budget or Budget()
    for facts in _TRIALS:
        if budget.spent:
            return  # an earlier template of the file spent it, and was reported
        try:
            _render(source, facts, budget)
        except TemplateLimit as exc:
            raise TemplateLimit(f"template stopped on a trial machine: {exc}") from None
        except TemplateProblem:
            pass  # depends on the machine's facts (an unknown serial ...): the machine waits, with the reason


def render(source: str, facts: dict[str, FactValue], budget: Budget | None = None) -> str:
    """The template rendered for one machine, within ``budget`` (a fresh one by default)."""
    if not is_template(source):
        return source
    try:
        return _render(source, facts, budget or Budget())
    except TemplateLimit as exc:
        raise TemplateLimit(f"template {_short(source)} stopped: {exc}") from None
    except TemplateProblem as exc:
        raise TemplateProblem(f"template {_short(source)} failed: {exc}") from None


def _render(source: str, facts: dict[str, FactValue], budget: Budget) -> str:
    """render() without the template in the messages: TemplateLimit or TemplateProblem, nothing else."""
    try:
        template = _compiled(source)
        out: list[str] = []
        size = 0
        with charged(budget):
            budget.tick()
            for chunk in template.generate(**facts):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise TemplateLimit(f"output over {MAX_OUTPUT} characters")
                budget.tick()
                out.append(chunk)
        return "".join(out)
    except TemplateProblem:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateProblem(str(exc)) from None
    except RecursionError:
        raise TemplateLimit("recursion too deep") from None
    except Exception as exc:  # whatever a template does wrong with a machine's facts is its own failure
        raise TemplateProblem(f"on this machine's facts: {type(exc).__name__}: {exc}") from None


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


def render_tree(value: Any, facts: dict[str, FactValue], budget: Budget | None = None) -> Any:
    """Every string of nested dicts and lists rendered, all within one budget."""
    budget = budget or Budget()
    if isinstance(value, str):
        return render(value, facts, budget)
    if isinstance(value, dict):
        return {key: render_tree(item, facts, budget) for key, item in value.items()}
    if isinstance(value, list):
        return [render_tree(item, facts, budget) for item in value]
    return value


def has_template(value: Any) -> bool:
    """Whether any string inside ``value`` (nested dicts and lists) is a template."""
    return any(is_template(text) for _, text in walk_strings(value))


def trial_renders(value: Any, budget: Budget | None = None) -> list[Any]:
    """``value`` (nested dicts and lists of strings) rendered for each trial machine of :func:`check` that it
    renders for: a template failing on a trial depends on the machine's facts, and that trial is left out."""
    budget = budget or Budget()
    rendered = []
    for facts in _TRIALS:
        if budget.spent:
            break
        try:
            rendered.append(render_tree(value, facts, budget))
        except TemplateProblem:
            continue
    return rendered
