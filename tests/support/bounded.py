"""Tests bounded in time: the body runs in a forked child that is killed when it runs too long.

A hang that comes back must fail its test fast instead of blocking the suite. Neither a thread nor SIGALRM can
stop ``9 ** (9 ** 9)`` or ``'a' * 10**9``: one C-level operation holds the GIL to its end. A child process can
always be killed.

- ``@bounded(seconds)`` on a test function (fixtures still work): its body runs in the child; an assertion
  failure there fails the test with the child's traceback; a child still running after ``seconds`` is killed
  and the test fails with "still running".
- ``run_bounded(seconds, func, *args)``: the same for one call, returning what ``func`` returned (pickled).
"""

from __future__ import annotations

import functools
import multiprocessing
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])


def _child(writer: Connection, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        result = func(*args, **kwargs)
    except BaseException:  # everything goes back to the parent, assertion details included
        writer.send((False, traceback.format_exc()))
    else:
        writer.send((True, result))
    finally:
        writer.close()


def run_bounded(seconds: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` in a forked child; the test fails if it takes longer than ``seconds``."""
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(writer, func, args, kwargs), daemon=True)
    child.start()
    writer.close()
    try:
        if not reader.poll(seconds):
            pytest.fail(f"{getattr(func, '__name__', func)} still running after {seconds:g} s: a hang came back")
        try:
            ok, payload = reader.recv()
        except EOFError:
            pytest.fail(f"{getattr(func, '__name__', func)} died (exit code {child.exitcode}) without an answer")
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        reader.close()
    if not ok:
        pytest.fail(f"in the bounded child:\n{payload}", pytrace=False)
    return payload


def bounded(seconds: float) -> Callable[[F], F]:
    """Run the decorated test's body in a child process killed after ``seconds``."""

    def decorate(test: F) -> F:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> Any:
            return run_bounded(seconds, test, *args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate
