"""A store filled for the report's tests through the Store's own methods (``fill``): two machines imaged (desktop
for a school, laptop for a family that an operator turned into an association), one failed write, an erase-only
PC done (two drives) and one in repair (a drive not erased), a machine set aside at hello by the real recipe
selection (its health gate), a run still open. tests/unit/test_store_report.py checks ``provision report``'s
numbers over it; tests/functional/test_dashboard_report.py the /report page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provision.facts import load_probe
from provision.runs import Runs
from provision.states import Destination, RunState
from provision.store import Run, Store
from provision.wire.api import Hello, VerificationReport
from tests.support.erasures import drive, report
from tests.support.paths import SAMPLE_PROBE

DIGEST = "d" * 64
GB = 10**9
ERASE = {"erase": {"method": "auto", "verify": "sample", "only": True}}


def image_run(store: Store, mac: str, recipe: str, destination: str, form: str) -> Run:
    store.seen(mac)
    return store.create_run(mac, recipe=recipe, image="educ", label="L", digest=DIGEST, destination=destination,
                            facts={"form_factor": form, "ram_mb": 8192})  # fmt: skip


def imaged(store: Store, run: Run, written: int) -> Run:
    store.set_run_state(run.id, RunState.WRITING)
    store.set_run_state(run.id, RunState.VERIFYING)
    store.record_verification(run.id, VerificationReport(DIGEST, 10, 10, True, written, 60.0, written / 60))
    return store.set_run_state(run.id, RunState.DONE, bytes_written=written, mean_rate=written / 60)


def erase_run(store: Store, mac: str, *drives: Any) -> Run:
    store.seen(mac)
    run = store.create_run(mac, recipe="parts", image="", label="", digest="", plan=ERASE, erase_only=True,
                           destination="recycling", facts={"form_factor": "tower"})  # fmt: skip
    store.record_erasure(run.id, report("t" * 32, *drives), "atelier")
    store.set_run_state(run.id, RunState.ERASING)
    return run


def fill(store: Store, recipes: Path, probes: Path) -> list[float]:
    """Fill ``store``; ``recipes``: a folder made for the recipe of the machine set aside. The imaging times
    (seconds) of the two machines imaged."""
    first = imaged(store, image_run(store, "52:54:00:00:00:01", "desk", "school", "desktop"), 8 * GB)
    second = imaged(store, image_run(store, "52:54:00:00:00:02", "laptop", "family", "laptop"), 6 * GB)
    store.set_destination("52:54:00:00:00:02", Destination.ASSOCIATION, "paul")  # the operator's wins
    failing = image_run(store, "52:54:00:00:00:03", "desk", "school", "desktop")
    store.set_run_state(failing.id, RunState.WRITING)
    store.set_run_state(failing.id, RunState.FAILED, "write failed: I/O error on /dev/sda", bytes_written=GB)
    parts = erase_run(store, "52:54:00:00:00:04", drive("sda"), drive("nvme0n1", method="nvme-sanitize-crypto"))
    store.set_run_state(parts.id, RunState.DONE)
    bad = erase_run(store, "52:54:00:00:00:05", drive("sda", ok=False, verified=False))
    store.set_run_state(bad.id, RunState.REPAIR, "sda: 3 of 25600 sampled blocks still hold data")
    recipes.mkdir(exist_ok=True)  # the real selection sets a machine aside at hello: no run
    (recipes / "desk.yaml").write_text("name: desk\ndefault: true\nimage: educ\ndestination: school\n"
                                       "health: {min_ram_mb: 999999}\n")  # fmt: skip
    runs = Runs(store, None, recipes, probes)
    aside = "52:54:00:00:00:06"
    hello = Hello(aside, store.issue_token(aside, "ipxe", ttl=60), facts=load_probe(SAMPLE_PROBE).to_dict())
    assert runs.hello(hello, None).action == "repair"
    runs.hello(Hello(aside, store.issue_token(aside, "ipxe", ttl=60), facts=hello.facts), None)  # counted once
    store.seen("52:54:00:00:00:07")  # a run still open: not in the report
    store.create_run("52:54:00:00:00:07", recipe="desk", image="educ", label="L", digest=DIGEST)
    return [r.finished - r.started for r in (first, second) if r.finished is not None]
