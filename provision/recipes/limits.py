"""Size rules for templates: what one operation of a template may make, checked before and after it runs.

Used by provision.recipes.sandbox, whose docstring gives the whole set of bounds. Sizes count characters of
strings and items of containers, through nested containers (``deep_size``), so ``[[1] * 60000] * 60000``
is as large as it prints. The operations that can multiply sizes in one step (``*``, ``**``, padding and
format widths, ``join``, ``replace``, ``indent``, ``wordwrap``, ``translate``, ``expandtabs``, ``to_bytes``
...) are estimated before they run, because a Python thread cannot be stopped in the middle of one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any

from jinja2.utils import Namespace

RENDER_SECONDS = 2.0  # one plan (every template of a recipe for one machine), or one recipe file's check
MAX_ITEMS = 10_000  # items of one range()
MAX_ITERATIONS = 100_000  # loop iterations in one budget
MAX_SIZE = 64 * 1024  # characters of a string, items of a list (deep), characters of one output
MAX_PRODUCED = 16 * MAX_SIZE  # characters all the {{ }} of one budget evaluate to, blocks and loops included
MAX_INT_BITS = 4096  # integers made by * and **
MAX_JSON_INDENT = 16


class TemplateProblem(ValueError):
    """A template that does not compile, names an unknown fact, or fails to render for a machine."""


class TemplateLimit(TemplateProblem):
    """A template that does more work than a recipe may (time, iterations, sizes): see provision.recipes.sandbox."""


def deep_size(value: object, limit: int = MAX_SIZE) -> int:
    """Characters of a string, or items of a container counted through nested containers; stops past limit."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
            continue
        if isinstance(item, Namespace):
            item = item._Namespace__attrs  # its attributes are its size
        if isinstance(item, dict):
            total += len(item)
            if total <= limit:
                stack.extend(item.values())
                stack.extend(item.keys())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, range):
            total += limit + 1 if _range_length(item) is None else len(item)
        else:
            total += 1
    return total


def checked(value: Any, what: str) -> Any:
    """``value``, or TemplateLimit when it is over the size rules (what: the operation that made it)."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimit(f"{what} makes an integer of {value.bit_length()} bits; at most {MAX_INT_BITS}")
    size = deep_size(value)
    if size > MAX_SIZE:
        raise TemplateLimit(f"{what} makes a value of over {MAX_SIZE} characters or items")
    return value


def refuse_over(what: str, size: int) -> None:
    if size > MAX_SIZE:
        raise TemplateLimit(f"{what} would make {size} characters or items; at most {MAX_SIZE}")


def _range_length(rng: range) -> int | None:
    try:
        return len(rng)
    except OverflowError:
        return None


def bounded_range(*args: int) -> range:
    """``range`` for templates: at most MAX_ITEMS items."""
    rng = range(*args)
    length = _range_length(rng)
    if length is None or length > MAX_ITEMS:
        shown = ", ".join(str(a) for a in args)
        raise TemplateLimit(f"range({shown}) has {length or 'too many'} items; templates may use at most {MAX_ITEMS}")
    return rng


# ------------------------------------------------------------------------------ sizes before the work
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _widths(numbers: Iterable[str], what: str) -> None:
    total = 0
    for digits in numbers:
        if digits == "*" or len(digits) > 6:
            raise TemplateLimit(f"{what}: a width or precision of {digits[:12]!r} is not allowed")
        total += int(digits)
    refuse_over(what, total)


def check_percent_format(fmt: str) -> None:
    """``'%10s' % x`` and ``|format``: the widths and precisions of all fields add up to at most MAX_SIZE."""
    _widths((g for m in _PERCENT_SPEC.finditer(fmt) for g in m.groups() if g), "%-format")


def check_str_format(fmt: str) -> None:
    """``'{:>10}'.format(x)``: no nested field in a spec, widths adding up to at most MAX_SIZE."""
    try:
        specs = [spec for _, _, spec, _ in string.Formatter().parse(fmt) if spec]
    except ValueError:
        return  # the call itself will fail on it
    if any("{" in spec for spec in specs):
        raise TemplateLimit("str.format: nested fields in a format spec are not allowed")
    _widths((d for spec in specs for d in re.findall(r"\d+", spec)), "str.format")


def _replace_size(text: str | bytes, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _arg(args: list[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _width(value: object, what: str) -> None:
    if isinstance(value, int) and abs(value) > MAX_SIZE:
        raise TemplateLimit(f"{what}: {value} is over {MAX_SIZE}")


def _materialized(args: list[Any], index: int = 0) -> list[Any]:
    """The iterable at args[index] as a list (so its length is known), put back in args."""
    items = args[index] if isinstance(args[index], list | tuple) else list(args[index])
    args[index] = items
    return list(items)


def check_filter(name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Sizes before a built-in filter that may multiply them; ``args`` starts with the filtered value."""
    value = args[0] if args else None
    text = value if isinstance(value, str) else ""
    if name == "center":
        _width(_arg(args, kwargs, 1, "width", 80), "|center")
    elif name in ("batch", "slice"):
        _width(_arg(args, kwargs, 1, "linecount" if name == "batch" else "slices", 0), f"|{name}")
    elif name == "indent":
        width = _arg(args, kwargs, 1, "width", 4)
        each = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        refuse_over("|indent", len(text) + (text.count("\n") + 1) * max(each, 0))
    elif name == "join" and args and not isinstance(value, str):
        sep = _arg(args, kwargs, 1, "d", "")
        items = _materialized(args)
        refuse_over("|join", len(str(sep)) * len(items) + sum(len(i) for i in items if isinstance(i, str)))
    elif name == "replace":
        old, new, count = (_arg(args, kwargs, i, n, None) for i, n in ((1, "old"), (2, "new"), (3, "count")))
        refuse_over("|replace", _replace_size(text, old, new, count))
    elif name == "wordwrap":
        wrap = _arg(args, kwargs, 4, "wrapstring", None) or "\n"
        width = _arg(args, kwargs, 1, "width", 79)
        lines = len(text) // max(width if isinstance(width, int) else 1, 1) + len(text.split()) + 1
        refuse_over("|wordwrap", len(text) + lines * len(str(wrap)))
    elif name == "format":
        check_percent_format(text)
    elif name == "sum":
        start = _arg(args, kwargs, 2, "start", 0)
        if not isinstance(start, int | float):
            raise TemplateLimit("|sum adds numbers only")
    elif name == "tojson":
        indent = _arg(args, kwargs, 1, "indent", None)
        if isinstance(indent, int) and indent > MAX_JSON_INDENT:
            raise TemplateLimit(f"|tojson: indent {indent} is over {MAX_JSON_INDENT}")


def check_method(owner: str | bytes | int | float, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Sizes before a method of a string or number (``center``, ``join``, ``replace``, ``to_bytes`` ...)."""
    for value in (*args, *kwargs.values()):
        _width(value, f".{name}()")
    if isinstance(owner, str | bytes):
        if name == "join" and args:
            items = _materialized(args)
            refuse_over(".join()", len(owner) * len(items) + sum(len(i) for i in items if isinstance(i, str | bytes)))
        elif name == "replace" and len(args) >= 2:
            refuse_over(".replace()", _replace_size(owner, args[0], args[1], args[2] if len(args) > 2 else -1))
        elif name == "expandtabs":
            tab = _arg(args, kwargs, 0, "tabsize", 8)
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            refuse_over(".expandtabs()", len(owner) + tabs * (tab if isinstance(tab, int) else 0))
        elif name == "translate":
            table = args[0] if args else None
            longest = (
                max((len(v) for v in table.values() if isinstance(v, str)), default=1) if isinstance(table, dict) else 1
            )
            refuse_over(".translate()", len(owner) * longest)


def check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if left.bit_length() * right > MAX_INT_BITS:
            raise TemplateLimit(f"{left} ** {right} would have over {MAX_INT_BITS} bits")
    elif operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimit(f"a product of over {MAX_INT_BITS} bits")
        elif isinstance(right, int) and not isinstance(left, int | float):
            refuse_over("repetition with *", deep_size(left) * max(right, 0))
        elif isinstance(left, int) and not isinstance(right, int | float):
            refuse_over("repetition with *", deep_size(right) * max(left, 0))
    elif operator == "+" and not isinstance(left, int | float):
        refuse_over("+", deep_size(left) + deep_size(right))
    elif operator == "%" and isinstance(left, str | bytes):
        check_percent_format(left if isinstance(left, str) else left.decode("latin-1"))
