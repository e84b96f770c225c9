"""``provision report`` over a store filled through the Store's own methods (machines, runs moved through their
states to done, failed and repair, verifications, erasures, a machine set aside at hello by the real recipe
selection): its numbers exactly, as a table, as JSON and as CSV (parsed)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.cli import main
from provision.facts import load_probe
from provision.facts.derive import derive
from provision.store import Store
from tests.support.paths import SAMPLE_PROBE
from tests.support.reports import GB, fill


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    with Store(tmp_path / "provision.db") as store:
        times = fill(store, tmp_path / "recipes", tmp_path / "probes")
    (tmp_path / "times.json").write_text(json.dumps(times))
    yield tmp_path


def run_cli(state: Path, *args: str) -> str:
    out = io.StringIO()
    assert main(["report", "--state-dir", str(state), *args], out) == 0
    return out.getvalue()


def aside_class() -> str:
    return str(derive(load_probe(SAMPLE_PROBE))["form_factor"])


def test_the_report_counts_the_store_exactly(state: Path) -> None:
    data = json.loads(run_cli(state, "--json"))
    t = data["total"]
    assert (t["runs_ended"], t["done"], t["imaged"], t["machines_imaged"], t["erased_only"]) == (5, 3, 2, 2, 1)
    assert (t["failed"], t["repair"], t["set_aside"], t["success_rate"]) == (1, 1, 1, 3 / 5)
    assert t["failures"] == [{"reason": "write failed: I/O error on /dev/sda", "count": 1}]
    assert [r["count"] for r in t["repairs"]] == [1, 1]
    assert "sda: 3 of 25600 sampled blocks still hold data" in [r["reason"] for r in t["repairs"]]
    assert any("RAM" in r["reason"] for r in t["repairs"])  # the health gate's reason, as recorded
    assert t["erasures"] == [
        {"method": "ata-security-erase-enhanced", "drives": 2, "ok": 1, "bytes": 2 * 500_107_862_016},
        {"method": "nvme-sanitize-crypto", "drives": 1, "ok": 1, "bytes": 500_107_862_016},
    ]
    assert t["drives_erased"] == 3
    times = json.loads((state / "times.json").read_text())
    assert t["mean_imaging_seconds"] == pytest.approx(sum(times) / 2)
    assert t["per_day"] == 2.0 and t["per_hour"] in (1.0, 2.0)  # two machines today (in one hour, or two)
    assert t["bytes_written"] == t["bytes_http"] == 15 * GB and t["bytes_multicast"] == 0


def test_grouped_by_destination_the_machines_own_wins(state: Path) -> None:
    groups = {g["key"]: g for g in json.loads(run_cli(state, "--json", "--by", "destination"))["groups"]}
    assert list(groups) == ["association", "recycling", "school"]
    assert groups["association"]["imaged"] == 1  # its recipe said family: the operator's destination counts
    assert (groups["school"]["imaged"], groups["school"]["failed"], groups["school"]["set_aside"]) == (1, 1, 1)
    assert (groups["recycling"]["erased_only"], groups["recycling"]["repair"]) == (1, 1)
    assert groups["recycling"]["drives_erased"] == 3


def test_grouped_by_class_recipe_and_month(state: Path) -> None:
    groups = {g["key"]: g for g in json.loads(run_cli(state, "--json", "--by", "class"))["groups"]}
    assert aside_class() == "unknown"  # the sample probe's chassis type says nothing
    assert {k: (g["runs_ended"], g["set_aside"]) for k, g in groups.items()} == {
        "desktop": (2, 0), "laptop": (1, 0), "tower": (2, 0), "unknown": (0, 1)}  # fmt: skip
    by_recipe = {g["key"]: g for g in json.loads(run_cli(state, "--json", "--by", "recipe"))["groups"]}
    assert {k: g["imaged"] for k, g in by_recipe.items()} == {"desk": 1, "laptop": 1, "parts": 0}
    months = json.loads(run_cli(state, "--json", "--by", "month"))["groups"]
    assert len(months) == 1 and months[0]["imaged"] == 2


def test_csv_parses_and_the_table_reads(state: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(run_cli(state, "--csv", "--by", "recipe"))))
    value = {(r["group"], r["section"], r["item"]): r["value"] for r in rows}
    assert value[("(all)", "figures", "imaged")] == "2" and value[("desk", "figures", "failed")] == "1"
    assert value[("(all)", "failures", "write failed: I/O error on /dev/sda")] == "1"
    assert value[("parts", "erasures", "nvme-sanitize-crypto drives")] == "1"
    text = run_cli(state, "--by", "recipe")
    header, total = text.splitlines()[2:4]
    assert header.split()[:3] == ["GROUP", "ENDED", "IMAGED"] and total.split()[:9] == [
        "(all)", "5", "2", "2", "1", "1", "1", "1", "60.0"]  # fmt: skip
    assert "Failures by reason" in text and "write failed: I/O error on /dev/sda" in text
    assert "Drives erased by method" in text and "note: bytes by HTTP and by multicast" in text


def test_a_period_without_runs_and_bad_options(state: Path) -> None:
    empty = json.loads(run_cli(state, "--json", "--from", "2020-01-01", "--to", "2021-01-01"))
    assert empty["period"] == {"from": "2020-01-01", "to": "2021-01-01"} and empty["total"]["runs_ended"] == 0
    err = io.StringIO()
    assert main(["report", "--state-dir", str(state), "--to", "2020-13-01"], io.StringIO(), err) == 2
    assert "is not a date" in err.getvalue()
    assert main(["report", "--state-dir", str(state / "nowhere")], io.StringIO(), err) == 1
    assert "no server database" in err.getvalue()
