"""``GET /metrics`` of a real ``provision serve`` (127.0.0.1, port 0) over a store filled through the Store's own
methods, scraped with requests and read back with prometheus_client's parser: every figure exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from provision import __version__
from provision.metrics import CONTENT_TYPE
from provision.states import MachineState, RunState
from provision.store import Store
from provision.wire.api import VerificationReport
from provision.wire.hooks import HookResult
from tests.support.erasures import drive, report
from tests.support.serve import Running, start, stop

DONE, FAILED, PARTS, FRESH, GONE = (f"52:54:00:00:00:0{n}" for n in range(1, 6))
DIGEST = "d" * 64
TOKEN = "t" * 32
WRITTEN = 3_221_225_472


def fill(store: Store) -> None:
    """One machine imaged (done, a hook ok), one failed by a hook, one erase-only with a drive not erased (repair),
    one only seen, one seen and forgotten."""
    for mac in (DONE, FAILED, PARTS, FRESH, GONE):
        store.seen(mac)
    store.operator_action(GONE, "forget", "marie")
    run = store.create_run(DONE, recipe="default", image="educ", label="L1", digest=DIGEST)
    store.set_run_state(run.id, RunState.WRITING)
    store.record_verification(run.id, VerificationReport(DIGEST, 40, 40, True, WRITTEN, 60.0, 5e7))
    store.set_run_state(run.id, RunState.VERIFYING)
    store.record_hook(run.id, 0, "target", "fail", HookResult("hostname", 0, False, 0.2))
    store.set_run_state(run.id, RunState.DONE, bytes_written=WRITTEN, mean_rate=5e7)
    run = store.create_run(FAILED, recipe="default", image="educ", label="L1", digest=DIGEST)
    store.set_run_state(run.id, RunState.WRITING)
    store.record_verification(run.id, VerificationReport(DIGEST, 40, 38, False, 1000, 1.0, 1000.0))
    store.set_run_state(run.id, RunState.VERIFYING)
    store.record_hook(run.id, 0, "target", "fail", HookResult("hostname", 0, False, 0.1))
    store.record_hook(run.id, 1, "target", "fail", HookResult("bundle", 1, False, 3.0, error=None))
    store.set_run_state(run.id, RunState.FAILED, "hook bundle failed", bytes_written=1000)
    plan = {"erase": {"method": "auto", "verify": "sample", "only": True}}
    run = store.create_run(PARTS, recipe="parts", image="", label="", digest="", plan=plan, erase_only=True)
    store.set_run_state(run.id, RunState.ERASING)
    sent = report(TOKEN, drive("sda", size=1000), drive("sdb", ok=False, verified=False, size=2000),
                  drive("nvme0n1", method="nvme-format-crypto", size=4000))  # fmt: skip
    store.record_erasure(run.id, sent, "atelier")
    store.set_run_state(run.id, RunState.REPAIR, "sdb not erased")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Running, list[float]]]:
    with Store(tmp_path / "state" / "provision.db") as store:
        fill(store)
        durations = sorted(r.finished - r.started for r in store.runs() if r.finished is not None)
    run = start(tmp_path)
    try:
        yield run, durations
    finally:
        if run.proc.poll() is None:
            stop(run)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = requests.get(f"{url}/metrics", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def test_the_store_s_figures_scraped_and_parsed(served: tuple[Running, list[float]]) -> None:
    running, durations = served
    got = scrape(running.url)
    machines = {state.value: 0.0 for state in MachineState} | {"done": 1, "failed": 1, "repair": 1, "new": 1}
    assert {k[1][0][1]: v for k, v in got.items() if k[0] == "provision_machines"} == machines
    runs = {state.value: 0.0 for state in RunState} | {"done": 1, "failed": 1, "repair": 1}
    assert {k[1][0][1]: v for k, v in got.items() if k[0] == "provision_runs"} == runs
    assert got["provision_written_bytes_total", ()] == WRITTEN + 1000
    assert got["provision_verified_chunks_total", ()] == 78
    for state in ("done", "failed", "repair"):
        assert got["provision_run_duration_seconds_count", (("state", state),)] == 1
        assert got["provision_run_duration_seconds_bucket", (("le", "60.0"), ("state", state))] == 1
    total = sum(v for k, v in got.items() if k[0] == "provision_run_duration_seconds_sum")
    assert total == pytest.approx(sum(durations))
    assert got["provision_hook_results_total", (("hook", "hostname"),)] == 2
    assert got["provision_hook_failures_total", (("hook", "hostname"),)] == 0
    assert got["provision_hook_results_total", (("hook", "bundle"),)] == 1
    assert got["provision_hook_failures_total", (("hook", "bundle"),)] == 1
    erasures = {k[1]: v for k, v in got.items() if k[0] == "provision_erasures_total"}
    assert erasures == {
        (("method", "ata-security-erase-enhanced"), ("result", "ok")): 1,
        (("method", "ata-security-erase-enhanced"), ("result", "failed")): 1,
        (("method", "nvme-format-crypto"), ("result", "ok")): 1,
    }
    erased = {k[1][0][1]: v for k, v in got.items() if k[0] == "provision_erased_bytes_total"}
    assert erased == {"ata-security-erase-enhanced": 1000, "nvme-format-crypto": 4000}
    info = [k[1] for k in got if k[0] == "provision_build_info"]
    assert len(info) == 1 and ("version", __version__) in info[0]


def test_figures_follow_the_store_and_survive_a_restart(tmp_path: Path) -> None:
    """Counted from the records: a machine seen by the running server shows at the next scrape, and a new
    process over the same state gives the same figures (no counter lives in memory)."""
    running = start(tmp_path)
    try:
        assert scrape(running.url)["provision_machines", (("state", "new"),)] == 0
        assert requests.get(f"{running.url}/boot/{FRESH}.ipxe", timeout=5).status_code == 200
        before = scrape(running.url)
        assert before["provision_machines", (("state", "new"),)] == 1
    finally:
        stop(running)
    again = start(tmp_path)
    try:
        after = scrape(again.url)
    finally:
        stop(again)
    assert {k: v for k, v in after.items() if k[0] != "provision_build_info"} == {
        k: v for k, v in before.items() if k[0] != "provision_build_info"
    }


def test_no_secret_in_the_exposition(served: tuple[Running, list[float]]) -> None:
    running, _ = served
    text = requests.get(f"{running.url}/metrics", timeout=5).text
    for needle in (DONE, TOKEN, DIGEST, str(running.state), "WD-WCC4N1234567", "atelier", "127.0.0.1"):
        assert needle not in text
