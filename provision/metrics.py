"""Prometheus figures of the server (``GET /metrics``, docs/service.md), read from the store at each scrape.

``StoreCollector`` keeps no counter of its own: every figure is counted from the records (``Store.stats``), so a
restart, a second server process or a restored backup gives the same numbers, and a counter only goes down when
records are removed. ``registry(store)`` is a fresh ``CollectorRegistry`` per application (never the global one:
two apps in one process, as the tests run them, each expose their own store). The exposition is the text format of
``prometheus_client``; its content type is ``CONTENT_TYPE``.

What it exposes (every state of ``provision.states`` appears, 0 when none):

- ``provision_machines{state}``: machines in each state (gauge; forgotten machines left out);
- ``provision_runs{state}``: runs in each state (gauge: a run leaves ``writing`` for ``done``);
- ``provision_written_bytes_total``, ``provision_verified_chunks_total``: bytes the agents reported written, chunks
  read back right (counters);
- ``provision_run_duration_seconds{state}``: start to end of every run that ended, by its final state (histogram);
- ``provision_hook_results_total{hook}``, ``provision_hook_failures_total{hook}``: hook results, and those not ok;
- ``provision_erasures_total{method,result}``, ``provision_erased_bytes_total{method}``: drive erasures by method;
- ``provision_transfer_bytes_total{transfer}``: image bytes the runs' transfer reports say came by ``multicast``,
  by ``http``, and of those by HTTP, ``repair`` (byte ranges completing frames the carousel missed);
- ``provision_delta_bytes_total{kind}``: runs planned over a version their machine held (docs/delta.md): their
  ``predicted`` downloads, the bytes they ``fetched`` and the data bytes they ``verified``;
- ``provision_build_info{version,python}``: 1.

Nothing secret is in it: counts, states, hook and method names, the version (no MAC, token, path or address).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from provision import __version__
from provision.states import FINAL_RUN_STATES, MachineState, RunState
from provision.store.stats import StoreStats

__all__ = ["BUCKETS", "CONTENT_TYPE", "StatsSource", "StoreCollector", "exposition", "registry"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds: an erase-only run of a quick NVMe drive takes a minute, a rack imaged over a busy switch hours
BUCKETS: tuple[float, ...] = (60, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 14400, 28800)


class StatsSource(Protocol):
    def stats(self) -> StoreStats: ...


def histogram(seconds: Sequence[float], buckets: Iterable[float] = BUCKETS) -> list[tuple[str, float]]:
    """The cumulative buckets of ``seconds`` (``le`` as prometheus_client's own histograms write it: 60.0), +Inf
    last."""
    bounds = [*sorted(buckets), float("inf")]
    return [("+Inf" if math.isinf(b) else repr(float(b)), float(sum(1 for s in seconds if s <= b))) for b in bounds]


class StoreCollector(Collector):
    """The store's figures as Prometheus metric families, read at each ``collect`` (each scrape)."""

    def __init__(self, store: StatsSource) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        stats = self.store.stats()
        yield from self._states(stats)
        yield CounterMetricFamily(
            "provision_written_bytes", "Bytes the agents reported written to disks, every run.",
            value=stats.bytes_written,
        )  # fmt: skip
        yield CounterMetricFamily(
            "provision_verified_chunks", "Image chunks read back right after writing, every verification record.",
            value=stats.verified_chunks,
        )  # fmt: skip
        yield self._durations(stats)
        yield from self._hooks(stats)
        yield from self._erasures(stats)
        moved = CounterMetricFamily(
            "provision_transfer_bytes", "Image bytes by transfer (multicast, http; repair: of http), per the runs' "
            "transfer reports.", labels=["transfer"],
        )  # fmt: skip
        for transfer in ("multicast", "http", "repair"):
            moved.add_metric([transfer], stats.transfer_bytes.get(transfer, 0))
        yield moved
        delta = CounterMetricFamily("provision_delta_bytes", "Runs over a version their machine held: predicted "
                                    "download, bytes fetched, data bytes verified.", labels=["kind"])  # fmt: skip
        for kind in ("predicted", "fetched", "verified"):
            delta.add_metric([kind], stats.delta_bytes.get(kind, 0))
        yield delta
        info = InfoMetricFamily("provision_build", "The server's version.")
        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info

    @staticmethod
    def _states(stats: StoreStats) -> Iterator[Metric]:
        machines = GaugeMetricFamily("provision_machines", "Machines in each state.", labels=["state"])
        for m in MachineState:
            machines.add_metric([m.value], stats.machines.get(m.value, 0))
        yield machines
        runs = GaugeMetricFamily("provision_runs", "Runs in each state.", labels=["state"])
        for r in RunState:
            runs.add_metric([r.value], stats.runs.get(r.value, 0))
        yield runs

    @staticmethod
    def _durations(stats: StoreStats) -> Metric:
        family = HistogramMetricFamily(
            "provision_run_duration_seconds", "Start to end of the runs that ended, by final state.", labels=["state"]
        )
        for state in sorted(FINAL_RUN_STATES):
            seconds = [s for st, s in stats.durations if st == state.value]
            family.add_metric([state.value], histogram(seconds), sum_value=sum(seconds))
        return family

    @staticmethod
    def _hooks(stats: StoreStats) -> Iterator[Metric]:
        results = CounterMetricFamily("provision_hook_results", "Hook results recorded, by hook.", labels=["hook"])
        failures = CounterMetricFamily(
            "provision_hook_failures", "Hook results not ok (exit code, time-out or error), by hook.", labels=["hook"]
        )
        for name in sorted({hook for hook, _ in stats.hooks}):
            failed = stats.hooks.get((name, False), 0)
            results.add_metric([name], stats.hooks.get((name, True), 0) + failed)
            failures.add_metric([name], failed)
        yield results
        yield failures

    @staticmethod
    def _erasures(stats: StoreStats) -> Iterator[Metric]:
        erasures = CounterMetricFamily(
            "provision_erasures", "Drive erasures recorded, by method and result.", labels=["method", "result"]
        )
        for (method, ok), count in sorted(stats.erasures.items()):
            erasures.add_metric([method, "ok" if ok else "failed"], count)
        yield erasures
        erased = CounterMetricFamily(
            "provision_erased_bytes", "Bytes of drives erased ok, by method.", labels=["method"]
        )
        for method, size in sorted(stats.erased_bytes.items()):
            erased.add_metric([method], size)
        yield erased


def registry(store: StatsSource) -> CollectorRegistry:
    """A registry of its own with the store's collector only."""
    found = CollectorRegistry(auto_describe=False)
    found.register(StoreCollector(store))
    return found


def exposition(reg: CollectorRegistry) -> bytes:
    """The text exposition of ``reg`` (reads the store: call it off the event loop)."""
    return generate_latest(reg)
