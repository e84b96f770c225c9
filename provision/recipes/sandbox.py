"""A jinja2 sandbox whose work is bounded: time, loop iterations, the size of every value and of the output.

jinja2's sandbox stops attribute escapes but not work: ``range(10**9)``, nested loops, ``9**(9**9)``,
``'a' * 10**9`` ... and a recipe's templates are rendered inside the server for each machine. Here every
render runs under a :class:`Budget` (one per plan at hello time, one per recipe file at check time), and any
excess raises :class:`TemplateLimit` naming it:

- time: the budget's seconds (:data:`RENDER_SECONDS`), checked at every call, filter, attribute or item
  access, operator, concatenation, loop iteration and output. A Python thread cannot be interrupted, so each
  single step is kept small by the size rules below, and the checks between steps end the render;
- loops: :data:`MAX_ITERATIONS` iterations in all (every ``{% for %}`` is wrapped, see :func:`bound_ast`),
  ``range()`` of at most :data:`MAX_ITEMS` items;
- sizes: no string, list or other value over :data:`MAX_SIZE` (items counted deep) is passed to a call or a
  filter, made by one, by an operator or a concatenation, or output; the operations that multiply sizes in
  one step (repetition, power, padding widths, format widths, ``join``, ``replace``, ``indent`` ...) are
  checked before they run; integers made by ``*`` and ``**`` have at most :data:`MAX_INT_BITS` bits;
- output: the ``{{ }}`` of one budget evaluate to at most :data:`MAX_PRODUCED` characters in all (blocks,
  macros and loops included), and a block is joined only when its size is known (:meth:`BoundedSandbox.concat`);
- lists and dicts cannot be changed (the immutable sandbox); ``lipsum`` is gone.

The constants and the size rules are in provision.recipes.limits.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import nodes
from jinja2.environment import Environment
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from provision.recipes.limits import (
    MAX_ITERATIONS,
    MAX_PRODUCED,
    RENDER_SECONDS,
    TemplateLimit,
    bounded_range,
    check_binop,
    check_filter,
    check_method,
    check_str_format,
    checked,
    deep_size,
    refuse_over,
)


@dataclass
class Budget:
    """The work one render (or a set of renders) may do; shared by every template rendered under it."""

    seconds: float = RENDER_SECONDS
    iterations: int = 0
    produced: int = 0  # characters (or items) of every {{ }} evaluated, inside blocks and loops too
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    @property
    def spent(self) -> bool:
        """Whether a bound of the budget itself (time, iterations, output) was reached."""
        over = self.iterations > MAX_ITERATIONS or self.produced > MAX_PRODUCED
        return over or time.monotonic() > self.deadline

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering took longer than {self.seconds:g} s")

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise TemplateLimit(f"loops ran more than {MAX_ITERATIONS} iterations")
        self.tick()

    def produce(self, size: int) -> None:
        self.produced += size
        if self.produced > MAX_PRODUCED:
            raise TemplateLimit(f"expressions produced more than {MAX_PRODUCED} characters in all")
        self.tick()


_CURRENT: ContextVar[Budget | None] = ContextVar("provision_template_budget", default=None)


def _tick() -> None:
    budget = _CURRENT.get()
    if budget is not None:
        budget.tick()


# ------------------------------------------------------------------------------------- the environment
_PASSED = (Context, EvalContext, Environment)


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps jinja2's pass_context/pass_environment marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        lead = 0
        while lead < len(args) and isinstance(args[lead], _PASSED):
            lead += 1
        plain = list(args[lead:])
        for value in (*plain, *kwargs.values()):
            checked(value, f"the input of |{name}")
        check_filter(name, plain, kwargs)
        return checked(func(*args[:lead], *plain, **kwargs), f"|{name}")

    return guarded


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the bounds of this module; templates must be compiled from
    :func:`bound_ast` so that loops and ``~`` come through :meth:`bounded_iter` and :meth:`bounded_concat`."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.globals["range"] = bounded_range
        self.globals.pop("lipsum", None)
        self.filters = {name: _guard_filter(name, func) for name, func in self.filters.items()}

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        self.filters[name] = _guard_filter(name, func)

    @staticmethod
    def _finalize(value: Any) -> Any:
        checked(value, "an output")
        budget = _CURRENT.get()
        if budget is not None:  # None only while jinja2's optimizer folds constants, at compile time
            budget.produce(deep_size(value))
        return value

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        check_binop(operator, left, right)
        return checked(super().call_binop(context, operator, left, right), f"'{operator}'")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def guarded(*args: Any, **kwargs: Any) -> str:
            _tick()
            check_str_format(fmt)
            return checked(wrapped(*args, **kwargs), ".format()")  # type: ignore[no-any-return]

        return guarded

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        plain = list(args)
        name = getattr(__obj, "__name__", "a function")
        for value in (*plain, *kwargs.values()):
            checked(value, f"an argument of {name}()")
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes | int | float) and not isinstance(owner, bool):
            checked(owner, f".{name}()")
            check_method(owner, name, plain, kwargs)
        if isinstance(__obj, LoopContext) and plain:  # loop(children) of a recursive loop
            plain[0] = __self.bounded_iter(plain[0])
        return checked(super().call(__context, __obj, *plain, **kwargs), f"{name}()")

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every ``{% for %}`` iterates: counts each iteration against the budget."""
        budget = _CURRENT.get()
        for item in iterable:
            if budget is not None:
                budget.iterate()
            yield item

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """The output of a block (a macro, ``{% set %}...{% endset %}``, ``{% filter %}``), joined once its
        size is known: a loop can append the same large string many times without copying it."""
        _tick()
        pieces = list(parts)
        refuse_over("a block's output", sum(len(p) for p in pieces))
        return "".join(pieces)

    def bounded_concat(self, *parts: Any) -> str:
        """``a ~ b``: sizes checked before the strings are made."""
        _tick()
        for part in parts:
            checked(part, "'~'")
        pieces = [str(part) for part in parts]
        refuse_over("'~'", sum(len(p) for p in pieces))
        return "".join(pieces)


def bound_ast(ast: nodes.Template, env: BoundedSandbox) -> nodes.Template:
    """Route every loop through ``bounded_iter`` and every ``~`` through ``bounded_concat``."""
    for loop in list(ast.find_all(nodes.For)):
        loop.iter = nodes.Call(
            nodes.EnvironmentAttribute("bounded_iter"), [loop.iter], [], None, None, lineno=loop.lineno
        )
    for concat in list(ast.find_all(nodes.Concat)):
        concat.nodes = [
            nodes.Call(nodes.EnvironmentAttribute("bounded_concat"), concat.nodes, [], None, None, lineno=concat.lineno)
        ]
    ast.set_environment(env)
    return ast


class _Scope:
    """``with _Scope(budget):`` makes ``budget`` the one the sandbox's hooks charge (per thread / context)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __enter__(self) -> Budget:
        self.token = _CURRENT.set(self.budget)
        return self.budget

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self.token)


def charged(budget: Budget) -> _Scope:
    return _Scope(budget)
