"""The store's figures as Prometheus families (``provision.metrics``), from a fake stats source: every state present,
histogram buckets cumulative, one registry per source."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from provision.metrics import exposition, histogram, registry
from provision.store.stats import StoreStats

STATS = StoreStats(
    machines={"done": 2},
    runs={"done": 2, "failed": 1},
    bytes_written=10,
    verified_chunks=4,
    durations=[("done", 30.0), ("done", 400.0), ("failed", 90_000.0)],
    hooks={("hostname", True): 2, ("hostname", False): 1},
    erasures={("nvme-format-crypto", True): 1},
    erased_bytes={"nvme-format-crypto": 512},
)


class FakeStore:
    def __init__(self, stats: StoreStats) -> None:
        self.calls = 0
        self.figures = stats

    def stats(self) -> StoreStats:
        self.calls += 1
        return self.figures


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_buckets_are_cumulative_with_inf_last() -> None:
    assert histogram([30.0, 400.0, 90_000.0], buckets=(60, 600)) == [("60.0", 1.0), ("600.0", 2.0), ("+Inf", 3.0)]
    assert histogram([], buckets=(60,)) == [("60.0", 0.0), ("+Inf", 0.0)]


def test_the_collector_reads_the_store_at_each_scrape() -> None:
    store = FakeStore(STATS)
    reg = registry(store)
    assert store.calls == 0  # registering reads nothing
    got = samples(exposition(reg).decode())
    assert store.calls == 1
    assert got["provision_machines", (("state", "ignored"),)] == 0
    assert got["provision_machines", (("state", "done"),)] == 2
    assert got["provision_runs", (("state", "hooks"),)] == 0
    assert got["provision_run_duration_seconds_bucket", (("le", "300.0"), ("state", "done"))] == 1
    assert got["provision_run_duration_seconds_bucket", (("le", "+Inf"), ("state", "failed"))] == 1
    assert got["provision_run_duration_seconds_bucket", (("le", "28800.0"), ("state", "failed"))] == 0
    assert got["provision_run_duration_seconds_sum", (("state", "done"),)] == 430
    assert got["provision_run_duration_seconds_count", (("state", "repair"),)] == 0
    assert got["provision_hook_results_total", (("hook", "hostname"),)] == 3
    assert got["provision_hook_failures_total", (("hook", "hostname"),)] == 1
    assert got["provision_erased_bytes_total", (("method", "nvme-format-crypto"),)] == 512
    store.figures = StoreStats({}, {}, 11, 4, [], {}, {}, {})
    again = samples(exposition(reg).decode())
    assert again["provision_written_bytes_total", ()] == 11 and store.calls == 2


def test_each_registry_exposes_its_own_store() -> None:
    one = samples(exposition(registry(FakeStore(STATS))).decode())
    other = samples(exposition(registry(FakeStore(StoreStats({}, {}, 99, 0, [], {}, {}, {})))).decode())
    assert one["provision_written_bytes_total", ()] == 10 and other["provision_written_bytes_total", ()] == 99
    assert not any(name.startswith(("python_", "process_")) for name, _ in one)  # not the global registry
