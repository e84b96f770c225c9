"""The store after the load, read with ``provision.store.Store`` once the server has stopped, against the
agents' ledger: events by kind, runs created and how they ended, verification records, runs left open,
machines, and the progress events of every single run.

``check`` returns every figure and a list of mismatches (empty: the store holds exactly what the agents
were promised). The headline, "events sent = events stored", counts the events the agents' own calls make:
``hello``, ``progress`` (the ones the server promised to keep), ``write``, ``grow`` and ``run-failed``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.agents.ledger import Ledger
from provision.store import Store

SENT_KINDS = ("hello", "progress", "write", "grow", "run-failed")


def check(db: Path, ledger: Ledger) -> dict[str, Any]:
    """Every consistency figure of the store at ``db`` against ``ledger``; ``mismatches`` lists what differs."""
    with Store(db) as store:
        events = store.events(limit=1 << 40)
        runs = {r.id: r for r in store.runs()}
        verifications = {run_id: store.verifications(run_id) for run_id in runs}
        machines = {m.mac: m for m in store.machines()}
    stored = Counter(e.kind for e in events)
    want = ledger.expected_events()
    maybe = ledger.progress_maybe()
    mismatches: list[str] = []

    by_kind: dict[str, dict[str, int]] = {}
    for kind in sorted(set(stored) | set(want)):
        by_kind[kind] = {"expected": want[kind], "stored": stored[kind]}
        slack = maybe if kind == "progress" else 0
        if not want[kind] <= stored[kind] <= want[kind] + slack:
            mismatches.append(f"{kind} events: expected {want[kind]}{f' (+{slack} maybe)' if slack else ''}, "
                              f"stored {stored[kind]}")  # fmt: skip
    sent = sum(want[k] for k in SENT_KINDS)
    kept = sum(stored[k] for k in SENT_KINDS)

    progress_per_run = Counter(str(e.detail.get("run")) for e in events if e.kind == "progress")
    runs_off = [
        run_id
        for run_id, log in ledger.runs.items()
        if not log.progress_must <= progress_per_run[run_id] <= log.progress_must + log.progress_maybe
    ]
    if runs_off:
        mismatches.append(f"{len(runs_off)} runs with another count of progress events, e.g. {runs_off[:3]}")

    ends = Counter(log.end for log in ledger.runs.values())
    states = Counter(r.state.value for r in runs.values())
    if set(runs) != set(ledger.runs):
        mismatches.append(f"runs: {len(ledger.runs)} created by hellos, {len(runs)} in the store "
                          f"({len(set(runs) ^ set(ledger.runs))} differ)")  # fmt: skip
    for run_id, log in ledger.runs.items():
        run = runs.get(run_id)
        if run is None:
            continue
        expected_state = {"superseded": "failed", "abandoned": None}.get(str(log.end), log.end)
        if run.state.value != expected_state:
            mismatches.append(f"run {run_id} ({log.mac}): the agent saw {log.end}, the store says {run.state.value}")
        if log.end == "superseded" and not (run.reason or "").startswith("superseded by run"):
            mismatches.append(f"run {run_id}: superseded without saying so ({run.reason})")
    open_runs = [r.id for r in runs.values() if r.finished is None]
    if open_runs:
        mismatches.append(f"{len(open_runs)} runs left open: {open_runs[:3]}")

    records = sum(len(v) for v in verifications.values())
    if records != ledger.counts["verifications_sent"]:
        mismatches.append(f"verification records: {records}, reports with a verification: "
                          f"{ledger.counts['verifications_sent']}")  # fmt: skip
    done_without = [r.id for r in runs.values() if r.state.value == "done"
                    and not any(v.complete and v.digest == r.digest for v in verifications[r.id])]  # fmt: skip
    if done_without:
        mismatches.append(f"{len(done_without)} done runs without a complete verification of their digest")

    last_end: dict[str, str | None] = {}
    for log in ledger.runs.values():  # runs in creation order: the last one per MAC wins
        last_end[log.mac] = log.end
    machines_off = [mac for mac, end in last_end.items()
                    if end == "done" and (mac not in machines or machines[mac].state.value != "done")]  # fmt: skip
    if machines_off:
        mismatches.append(f"{len(machines_off)} machines whose last run is done are not done: {machines_off[:3]}")

    return {
        "events": by_kind,
        "events_sent": sent,
        "events_stored": kept,
        "progress_maybe": maybe,
        "progress_posts": sum(log.progress_sent for log in ledger.runs.values()),
        "runs_created": len(ledger.runs),
        "runs_stored": len(runs),
        "runs_by_state": dict(states),
        "agent_ends": {str(k): v for k, v in ends.items()},
        "runs_open": len(open_runs),
        "verification_records": records,
        "reports_with_verification": ledger.counts["verifications_sent"],
        "machines": len(machines),
        "agent_counts": dict(ledger.counts),
        "problems": ledger.problems,
        "mismatches": mismatches,
    }
