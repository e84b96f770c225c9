"""The fuzz harness: how many cases each fuzz target runs, how long it may take, what it ran; hostile inputs.

- ``target(name, examples=, budget=, deadline=, hang=)``: the ``Target`` of one fuzz test, registered so the
  terminal summary (``tests/conftest.py``) prints ``fuzz: <name>: N cases, F failures (S s)``.
- ``Target.given(*strategies)``: hypothesis' ``given`` with the target's settings (max_examples, deadline, no
  example database, seed), each example run inside ``Target.case()``. Call the decorated function inside the
  pytest test, then ``Target.done()``. Draw everything through ``given``'s arguments (``flatmap`` for what
  depends on a draw), not ``st.data()`` in the body: stopping at the budget needs it.
- ``Target.case()``: one case (for a loop that is not hypothesis'): counted, a failure counted, interrupted
  after ``hang`` seconds (SIGALRM, main thread), skipped once the budget is spent. ``Target.tally`` counts what
  the cases met (HTTP statuses, answers), printed with the counts.
- Strategies for hostile input: ``bodies(MessageClass)`` (request bodies derived from a ``provision.wire``
  message class: its fields, annotations and ``rule`` limits, valid-shaped, at the limits, mutated, any JSON,
  not JSON), ``json_bodies``, ``message``, ``edges``, ``mutated``, ``json_values``, ``odd_text``, ``deep``,
  ``macs``, ``probes``; ``encode`` and ``Raw`` write JSON with NaN, 1e400, deep nesting and lone surrogates as
  raw escapes.

Environment (docs/reliability.md, "Fuzzing"):

- ``PROVISION_FUZZ_EXAMPLES``: cases per target (default: each target's CI figure, sized so the whole fuzz suite
  stays well under a minute on 2 cores).
- ``PROVISION_FUZZ_BUDGET``: seconds per target. Unset, each target's CI budget scaled by the examples asked
  for, and reaching it FAILS the test (something went slow). Set, reaching it stops the target early without
  failing it, and the summary says so (a long run that does what fits in the time).
- ``PROVISION_FUZZ_SEED``: hypothesis' seed (an integer). Unset, hypothesis runs derandomized: the same cases on
  every run, so a CI failure reproduces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
import types
import typing
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.errors import UnsatisfiedAssumption

from provision.macaddr import normalize_mac
from provision.wire import api, probe
from provision.wire.api import PROBE_NAME
from provision.wire.schema import INT_LIMIT, Message, Rule
from tests.support.paths import SAMPLE_PROBE

ENV_EXAMPLES = "PROVISION_FUZZ_EXAMPLES"
ENV_BUDGET = "PROVISION_FUZZ_BUDGET"
ENV_SEED = "PROVISION_FUZZ_SEED"


class _BudgetSpent(BaseException):
    """Raised in a hypothesis example once the target's budget is spent: hypothesis stops, no shrinking."""


class FuzzHang(Exception):
    """One case ran past the target's ``hang`` bound (raised in the main thread by SIGALRM)."""


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r} is not an integer") from None
    if value <= 0 and name != ENV_SEED:
        raise pytest.UsageError(f"{name}={raw!r} must be positive")
    return value


@dataclass
class Target:
    """One fuzz target: its limits and what it ran."""

    name: str
    examples: int  # cases asked for
    budget: float  # seconds for the whole target
    strict_budget: bool  # reaching the budget fails the test (CI) rather than stopping it early (long runs)
    deadline: float  # seconds per case, hypothesis' deadline (a case that slow is a failure)
    hang: float  # seconds per case after which it is interrupted (a hang becomes a failure, not a stuck CI)
    cases: int = 0
    failures: int = 0
    skipped: int = 0  # cases not run because the budget was spent
    seconds: float = 0.0
    started: float | None = None
    tally: Counter[str] = field(default_factory=Counter)  # what the cases met (e.g. HTTP statuses)

    @property
    def spent(self) -> bool:
        return self.started is not None and time.monotonic() - self.started > self.budget

    def settings(self) -> hypothesis.settings:
        seed = _env_int(ENV_SEED)
        return hypothesis.settings(
            max_examples=self.examples,
            deadline=self.deadline * 1000,  # milliseconds
            database=None,
            derandomize=seed is None,
            print_blob=True,
            suppress_health_check=list(HealthCheck),  # generation speed and sizes are the fuzzer's own business
        )

    def given(self, *strategies: Any, **named: Any) -> Callable[[Callable[..., None]], Callable[[], None]]:
        """hypothesis' ``given`` under this target's settings; each example is a ``case()``."""

        def decorate(fn: Callable[..., None]) -> Callable[[], None]:
            @functools.wraps(fn)
            def body(*args: Any, **kwargs: Any) -> None:
                with self.case() as run:
                    if not run:
                        raise _BudgetSpent  # stops hypothesis at once (it lets BaseExceptions through)
                    fn(*args, **kwargs)

            test = self.settings()(hypothesis.given(*strategies, **named)(body))
            seed = _env_int(ENV_SEED)
            if seed is not None:
                test = hypothesis.seed(seed)(test)

            def run() -> None:
                try:
                    with warnings.catch_warnings():  # a huge failing example: keep its failure, not this warning
                        warnings.filterwarnings(
                            "ignore", "Generating overly large repr", hypothesis.errors.HypothesisWarning
                        )
                        test()
                except _BudgetSpent:
                    self.skipped = max(self.skipped, self.examples - self.cases)

            return run

        return decorate

    @contextlib.contextmanager
    def case(self) -> Iterator[bool]:
        """One case: yields False (skip it) once the budget is spent, else True; counts it, and its failure."""
        if self.started is None:
            self.started = time.monotonic()
        if self.spent:
            self.skipped += 1
            yield False
            return
        try:
            with _alarm(self.hang, self.name):
                yield True
        except UnsatisfiedAssumption:
            raise
        except Exception:
            self.failures += 1
            raise
        finally:
            self.cases += 1
            self.seconds = time.monotonic() - self.started

    def done(self) -> None:
        """At the end of the test: fails it if the budget was reached under a CI budget."""
        if self.skipped and self.strict_budget:
            pytest.fail(
                f"fuzz target {self.name}: its {self.budget:.0f} s budget was spent after {self.cases} of "
                f"{self.examples} cases (set {ENV_BUDGET} to stop early instead of failing)"
            )

    def line(self) -> str:
        text = f"fuzz: {self.name}: {self.cases} cases, {self.failures} failures ({self.seconds:.1f} s)"
        if self.tally:
            text += "; " + ", ".join(f"{k}: {n}" for k, n in sorted(self.tally.items()))
        if self.skipped:
            text += f"; stopped by the {self.budget:.0f} s budget ({self.skipped} of {self.examples} not run)"
        return text


TARGETS: dict[str, Target] = {}


def target(name: str, *, examples: int, budget: float, deadline: float = 5.0, hang: float = 30.0) -> Target:
    """The target ``name`` with its CI figures: ``examples`` cases within ``budget`` seconds (both overridden by
    the environment, see the module docstring), ``deadline`` and ``hang`` seconds per case."""
    asked = _env_int(ENV_EXAMPLES)
    chosen_budget = _env_int(ENV_BUDGET)
    count = asked or examples
    limit = budget * max(1.0, count / examples) if chosen_budget is None else float(chosen_budget)
    found = Target(name, count, limit, chosen_budget is None, deadline, hang)
    TARGETS[name] = found
    return found


def summary() -> list[str]:
    """One line per target that ran, for the terminal summary."""
    return [t.line() for t in TARGETS.values() if t.cases or t.skipped]


@contextlib.contextmanager
def _alarm(seconds: float, name: str) -> Iterator[None]:
    """FuzzHang raised in the main thread after ``seconds`` (nothing outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        raise FuzzHang(f"fuzz target {name}: one case ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- JSON that is meant to hurt -----------------------------------------------------------------------------


class Raw(str):
    """JSON text put as is into an encoded body: NaN, 1e400, a 5,000-digit number, deep nesting."""


def dumps(value: Any, *, ensure_ascii: bool = True) -> str:
    """``value`` as JSON text, ``Raw`` pieces as they are; NaN and infinities as Python writes them; strings
    with lone surrogates as ``\\udXXX`` escapes (``ensure_ascii``) or raw (then the body is not UTF-8)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = (
            dumps(str(k), ensure_ascii=ensure_ascii) + ":" + dumps(v, ensure_ascii=ensure_ascii)
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v, ensure_ascii=ensure_ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def encode(value: Any, *, ensure_ascii: bool = True) -> bytes:
    """The bytes of a body: JSON text (``dumps``) in UTF-8, lone surrogates passed through as they are."""
    return dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


NESTING = [10, 100, 500, 900, 950, 990, 1000, 1100, 5000, 100_000]
HOSTILE_NUMBERS: list[Any] = [
    Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e400"), Raw("1" * 5000), Raw("-0"),
    Raw("1E-400"), Raw("0.1e+999999999"), float("nan"), float("inf"), 2**63, 2**63 - 1, -(2**63), -(2**63) - 1,
    2**64, 10**30, -1, 0, 1, -0.0, 0.5, -0.5, 1e308, -1e308, 5e-324, 2**53 + 1, True, False,
]  # fmt: skip
ODD_TEXT = [
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff\ud800", "x\udc80y", "\u202e\u2066", "\ufeff", "\uffff", "\U0010ffff",
    "e\u0301" * 50, "\U0001f600" * 10, "../../../etc/passwd", "%2e%2e%2f", "%00", "{{ 7 * 7 }}", "${mac}",
    "{% for x in range(10**9) %}{% endfor %}", "\r\nX-Injected: 1", "'; DROP TABLE runs; --", "\\", "\t\n\v\f\r",
    "null", "true", "0", "-1", "NaN", "52:54:00:12:34:56", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00",
]  # fmt: skip


@functools.cache
def odd_text() -> st.SearchStrategy[str]:
    """Strings that break things: odd code points (lone surrogates included), fixed nasties, long ones."""
    any_char = st.characters(exclude_categories=())  # surrogates too
    return st.one_of(
        st.sampled_from(ODD_TEXT),
        st.text(any_char, max_size=40),
        st.builds(lambda s, n: s * n, st.text(any_char, min_size=1, max_size=3), st.sampled_from([256, 4097, 70_000])),
    )


@functools.cache
def hostile_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(HOSTILE_NUMBERS), odd_text(), st.none(), st.booleans())


@functools.cache
def deep() -> st.SearchStrategy[Raw]:
    """Nesting past any parser's comfort, closed or not."""

    def make(kind: int, depth: int) -> Raw:
        if kind == 0:
            return Raw("[" * depth + "]" * depth)
        if kind == 1:
            return Raw('{"a":' * depth + "1" + "}" * depth)
        if kind == 2:
            return Raw("[" * depth)
        return Raw('[{"a":' * depth + "null" + "}]" * depth)

    return st.builds(make, st.integers(0, 3), st.sampled_from(NESTING))


@functools.cache
def json_values(leaves: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON tree (small), its leaves hostile (one in six deeply nested) unless given."""
    keys = st.one_of(st.sampled_from(["a", "", "token", "mac", "__proto__", "0"]), odd_text())
    return st.recursive(
        leaves if leaves is not None else st.one_of(*[hostile_scalars()] * 5, deep()),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


@functools.cache
def raw_bodies() -> st.SearchStrategy[bytes]:
    """Bodies that are not (quite) JSON: random bytes, truncated objects, duplicate keys, comments, BOMs."""
    fixed = [b"", b" ", b"{", b"}", b"[]", b"null", b"0", b'"x"', b"{}", b'{"a":1,"a":2}', b"{'a': 1}", b"{a:1}",
             b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b'{"a":1}//', b'{"a":1} {"b":2}', b'{"a":"\\u',
             b'{"a":"\\ud800"}', b'{"a":' + b"1" * 5000 + b"}", b"\x00" * 64]  # fmt: skip
    return st.one_of(st.sampled_from(fixed), st.binary(max_size=200), deep().map(lambda r: str(r).encode()))


# --- values that follow the wire contract (provision.wire), and values at or past its limits -------------------

Checks = Mapping[Callable[..., Any], st.SearchStrategy[Any]]  # what a ``rule(check=...)`` accepts, by check


@functools.cache
def macs() -> st.SearchStrategy[str]:
    """MAC addresses in every form ``normalize_mac`` accepts."""
    octets = st.lists(st.integers(0, 255), min_size=6, max_size=6)
    return st.builds(
        lambda o, sep, upper: sep.join(f"{b:02X}" if upper else f"{b:02x}" for b in o),
        octets, st.sampled_from([":", ":", "-", "", "%3A"]), st.booleans(),
    )  # fmt: skip


def _length_bounds(limits: Rule, default_max: int) -> tuple[int, int]:
    low = limits.min_length or 0
    return low, max(low, min(limits.max_length if limits.max_length is not None else default_max, default_max))


def valid(kind: Any, limits: Rule, checks: Checks) -> st.SearchStrategy[Any]:
    """Values the annotation ``kind`` under ``limits`` accepts: read from the contract, not copied from it.
    A field with a ``check`` gets ``checks[check]`` (what that check accepts) when known."""
    if limits.check is not None and limits.check in checks:
        return checks[limits.check]
    origin = typing.get_origin(kind)
    if kind is Any:
        return json_values(st.one_of(st.integers(-5, 10**6), st.text(max_size=20), st.booleans(), st.none()))
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(kind) if o is not type(None)]
        inner = [valid(o, limits, checks) for o in options]
        return st.one_of(st.none(), *inner) if len(options) < len(typing.get_args(kind)) else st.one_of(*inner)
    if kind is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(kind))
    if isinstance(kind, type) and issubclass(kind, Message):
        return message(kind, checks=checks)
    if kind is bool:
        return st.booleans()
    if kind is int:
        low = -INT_LIMIT if limits.ge is None else math.ceil(limits.ge)
        return st.one_of(st.integers(max(low, 0), 10**7), st.integers(low, INT_LIMIT - 1))
    if kind is float:
        floor = -1e308 if limits.ge is None else limits.ge
        return st.floats(min_value=floor, max_value=1e308, allow_nan=False, allow_infinity=False)
    if kind is str:
        if limits.pattern is not None:
            return st.from_regex(limits.pattern, fullmatch=True)
        low, high = _length_bounds(limits, 60)
        return st.text(min_size=low, max_size=high)
    if origin is list:
        (item,) = typing.get_args(kind)
        low, high = _length_bounds(limits, 5)
        each = Rule(max_length=limits.item_max_length, clean_text=limits.clean_text)
        return st.lists(valid(item, each, checks), min_size=low, max_size=high)
    if origin is tuple:
        return st.tuples(*(valid(a, Rule(), checks) for a in typing.get_args(kind))).map(list)
    if origin is dict:
        _, item = typing.get_args(kind)
        low, high = _length_bounds(limits, 5)
        return st.dictionaries(st.text(max_size=20), valid(item, Rule(), checks), min_size=low, max_size=high)
    raise TypeError(f"fuzz: annotation {kind!r} is not understood (provision.wire.schema grew?)")


def edges(kind: Any, limits: Rule) -> st.SearchStrategy[Any]:
    """Values at and just past the limits of ``kind``/``limits``, and values of the wrong type."""
    found: list[Any] = []
    base = typing.get_origin(kind)
    if kind is int or kind is float:
        found += [INT_LIMIT - 1, INT_LIMIT, -INT_LIMIT, -INT_LIMIT - 1, Raw("1e400"), Raw("NaN"), "1"]
        found.append(1.0 if kind is int else 1)
        if limits.ge is not None:
            found += [limits.ge, limits.ge - 1, limits.ge - 1e-9]
    if kind is str or limits.max_length is not None or limits.min_length is not None:
        for n in (limits.min_length, limits.max_length):
            if n is not None:
                found += ["a" * max(n - 1, 0), "a" * n, "a" * (n + 1), "\ud800" * (n + 1)]
    if limits.pattern is not None:
        found += ["0" * 63, "0" * 65, "G" * 64, "A" * 64, "0" * 64 + "\n"]
    if base is list or base is dict:
        size = (limits.max_length or 10) + 1
        found += [[None] * size if base is list else {f"k{i}": None for i in range(size)}, [], {}]
    found += [None, [], {}, "", 0, True]
    return st.sampled_from(found)


def message(
    cls: type[Message], *, hostile: bool = False, checks: Checks | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object shaped by the message class ``cls``: its dataclass fields, their annotations and ``rule``
    limits. Required fields always, optional ones sometimes; with ``hostile``, any field may be an edge
    (``edges``), a hostile scalar or any JSON instead."""
    if checks is not None:
        return _build_message(cls, hostile, checks)
    if (cls, hostile) not in _MESSAGES:  # built once: building strategies costs more than drawing from them
        _MESSAGES[cls, hostile] = _build_message(cls, hostile, CHECKS)
    return _MESSAGES[cls, hostile]


_MESSAGES: dict[tuple[type[Message], bool], st.SearchStrategy[dict[str, Any]]] = {}


def _build_message(cls: type[Message], hostile: bool, known: Checks) -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        limits: Rule = f.metadata.get("wire", Rule())
        values = valid(hints[f.name], limits, known)
        if hostile:
            values = st.one_of(values, edges(hints[f.name], limits), hostile_scalars(), json_values())
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        (required if missing else optional)[f.name] = values
    return st.fixed_dictionaries(required, optional=optional)


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` (a JSON tree) with one change somewhere down it: a key dropped, a key added, a value replaced
    by a hostile one, a list emptied or doubled."""
    path: list[Any] = []
    node = value
    while isinstance(node, dict | list) and node and draw(st.integers(0, 2)):
        step = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append(step)
        node = node[step]
    change = draw(st.integers(0, 4))
    replacement: Any
    if change == 0 and isinstance(node, dict) and node:
        replacement = dict(node)
        del replacement[draw(st.sampled_from(sorted(node)))]
    elif change == 1 and isinstance(node, dict):
        replacement = {
            **node,
            draw(st.sampled_from(["extra", "Token", "token ", "__class__", ""])): draw(json_values()),
        }
    elif change == 2 and isinstance(node, list):
        replacement = draw(st.sampled_from([[], node * 2, [*node, None]]))
    else:
        replacement = draw(st.one_of(*[hostile_scalars()] * 3, json_values(), json_values(), deep()))
    return _replace(value, path, replacement)


def _replace(tree: Any, path: list[Any], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, head: _replace(tree[head], rest, new)}
    copy = list(tree)
    copy[head] = _replace(tree[head], rest, new)
    return copy


@st.composite
def json_bodies(draw: st.DrawFn, cls: type[Message], checks: Checks | None = None) -> Any:
    """A JSON value for the message ``cls``, in tenths: 4 valid-shaped, 2 with hostile fields, 2 with one
    structural mutation (``mutated``), 1 any JSON, 1 deep nesting."""
    kind = draw(st.integers(0, 9))
    if kind < 4:
        return draw(message(cls, checks=checks))
    if kind < 6:
        return draw(message(cls, hostile=True, checks=checks))
    if kind < 8:
        return draw(mutated(draw(message(cls, checks=checks))))
    return draw(json_values() if kind == 8 else deep())


def bodies(cls: type[Message], *, checks: Checks | None = None) -> st.SearchStrategy[bytes]:
    """Request bodies for the message ``cls`` (``json_bodies``, encoded with or without ASCII escapes), one in
    ten not JSON at all."""
    encoded = st.builds(
        lambda v, ascii_only: encode(v, ensure_ascii=ascii_only), json_bodies(cls, checks), st.booleans()
    )
    return st.integers(0, 9).flatmap(lambda n: raw_bodies() if n == 0 else encoded)


@functools.cache
def probes() -> st.SearchStrategy[dict[str, str]]:
    """Probe folders as the agent sends them: known file names with sample contents or junk, other names."""
    names = st.one_of(
        st.sampled_from([probe.DMIDECODE, probe.LSPCI, probe.LSBLK, probe.MEMINFO, probe.CPUINFO, probe.FIRMWARE,
                         probe.MAC, probe.smartctl_name("sda"), "smartctl-sda.txt", "meminfo.txt"]),
        st.from_regex(PROBE_NAME, fullmatch=True),
    )  # fmt: skip
    contents = st.one_of(st.sampled_from(SAMPLE_TEXTS or [""]), odd_text(), deep().map(str))
    return st.dictionaries(names, contents, max_size=6)


SAMPLE_TEXTS = sorted(p.read_text(errors="replace") for p in SAMPLE_PROBE.iterdir() if p.is_file())
CHECKS: dict[Callable[..., Any], st.SearchStrategy[Any]] = {
    normalize_mac: macs(),
    api._probe_files: probes(),  # what the hello's probe check accepts: names of PROBE_NAME, at most 64 files
}
"""What each ``rule(check=...)`` of the wire accepts (a check is code, so what it accepts is said here)."""
