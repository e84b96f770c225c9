"""Measurements: latency and answers per request kind, a server process's CPU and memory from ``/proc``, and
the client loop's own lag (so that a late client is not taken for a slow server).

Percentiles are nearest rank over every request of a kind (no sampling, no histogram buckets).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def nearest_rank(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list by nearest rank (the value of a real request)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max of ``values`` (seconds) in milliseconds; None for an empty list."""
    if not values:
        return {**{name: None for name, _ in QUANTILES}, "max": None}
    ordered = sorted(values)
    out: dict[str, float | None] = {name: round(nearest_rank(ordered, q) * 1000, 2) for name, q in QUANTILES}
    out["max"] = round(ordered[-1] * 1000, 2)
    return out


def is_ok(outcome: str) -> bool:
    """An HTTP 2xx, or a datagram answered (a netboot)."""
    return outcome.startswith("2") or outcome == "answered"


@dataclass
class KindStats:
    """Every answer of one kind of request: the latency of each (seconds) and the count of each outcome (an
    HTTP status, or the exception's type name when there was no answer)."""

    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


class Recorder:
    """Latency and outcome per request kind (``boot``, ``hello``, ``index``, ``progress``, ``report`` ...)."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindStats] = {}

    def add(self, kind: str, seconds: float, outcome: str) -> None:
        stats = self.kinds.setdefault(kind, KindStats())
        stats.latencies.append(seconds)
        stats.outcomes[outcome] += 1

    def summary(self, wall: float, http_kinds: tuple[str, ...]) -> dict[str, Any]:
        """Per kind and for all HTTP kinds pooled (``all``): requests, per second, errors by outcome, spread."""
        out: dict[str, Any] = {}
        pooled: list[float] = []
        errors: Counter[str] = Counter()
        for kind in sorted(self.kinds):
            stats = self.kinds[kind]
            bad = {k: n for k, n in stats.outcomes.items() if not is_ok(k)}
            out[kind] = {"requests": len(stats.latencies), "per_s": round(len(stats.latencies) / wall, 2),
                         "errors": bad, **spread(stats.latencies)}  # fmt: skip
            if kind in http_kinds:
                pooled += stats.latencies
                errors.update(bad)
        out["all"] = {"requests": len(pooled), "per_s": round(len(pooled) / wall, 2), "errors": dict(errors),
                      **spread(pooled)}  # fmt: skip
        return out


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()  # [0] is field 3 (state)


def _tree(root: int) -> list[int]:
    """``root`` and its live descendants (nginx's worker is a child of its master)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    tree = [root]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


class ProcWatch:
    """One live server process and its live children: CPU seconds (utime+stime+cutime+cstime), RSS now and
    at its peak, threads, open descriptors. ``sample`` keeps the highest RSS seen; read before it ends."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_max_kib = 0

    def cpu(self) -> float:
        ticks = 0
        for pid in _tree(self.pid):
            try:
                fields = _stat_fields(pid)
            except OSError:
                continue  # exited since the listing
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
        return ticks / CLK_TCK

    def status(self) -> dict[str, int]:
        """VmRSS, VmHWM (KiB) and Threads from /proc/PID/status, and open descriptors, summed over the tree."""
        found = {"VmRSS": 0, "VmHWM": 0, "Threads": 0, "fds": 0}
        for pid in _tree(self.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in found:
                        found[key] += int(value.split()[0])
                found["fds"] += sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
        return found

    def sample(self) -> dict[str, int]:
        found = self.status()
        self.rss_max_kib = max(self.rss_max_kib, found.get("VmRSS", 0))
        return found


def own_cpu() -> float:
    """CPU seconds of this process (the simulated agents and the bench itself)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoopLag:
    """How late the client's event loop wakes up (a 50 ms ticker): when this is small, the latencies measured
    are the server's, not the client's queueing."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            planned = time.monotonic() + self.every
            await asyncio.sleep(self.every)
            self.lags.append(max(0.0, time.monotonic() - planned))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> dict[str, float | None]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return spread(self.lags)
