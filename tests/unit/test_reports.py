"""The city's report from rows (provision.reports: pure aggregation, output as JSON and CSV, the period)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from typing import Any

import pytest

from provision.errors import RequestError
from provision.reports import Period, build_report, report_csv, report_json
from provision.reports.aggregate import reason_key
from provision.reports.model import Ended, Erased

PERIOD = Period(date(2026, 1, 1), date(2027, 1, 1))


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> float:
    return datetime(2026, month, day, hour, minute).timestamp()


def run(run_id: str, state: str, end: float, minutes: float = 10, *, reason: str | None = None, **kw: Any) -> Ended:
    return Ended(run_id, f"52:54:00:00:00:{run_id[-2:]}", state, reason, end - minutes * 60, end, **kw)


ENDED = [
    run("r01", "done", at(2, 9), 10, bytes_written=1000, recipe="desk", destination="school", hw_class="desktop"),
    run("r02", "done", at(2, 9, 30), 20, bytes_written=2000, recipe="desk", destination="school", hw_class="desktop"),
    run("r03", "done", at(3, 14), 30, bytes_written=3000, recipe="laptop", destination="family", hw_class="laptop"),
    run("r04", "done", at(3, 15), 5, erase_only=True, recipe="parts", destination="recycling", hw_class="tower"),
    run(
        "r05",
        "failed",
        at(4, 10, month=4),
        bytes_written=500,
        reason="read-back failed at chunk 12",
        recipe="desk",
        hw_class="desktop",
    ),
    run(
        "r06",
        "failed",
        at(4, 11, month=4),
        reason="superseded by run 0123456789abcdef0123456789abcdef",
        recipe="desk",
        hw_class="desktop",
    ),
    run(
        "r07",
        "failed",
        at(4, 12, month=4),
        reason="superseded by run fedcba9876543210fedcba9876543210",
        recipe="laptop",
        destination="family",
    ),
    run("r08", "repair", at(5, 10, month=4), reason="sdb: 3 blocks still hold data", recipe="parts"),
    Ended(
        None,
        "52:54:00:00:00:99",
        "repair",
        "SMART overall-health self-assessment FAILED",
        None,
        at(6, 10),
        recipe="desk",
        hw_class="desktop",
    ),
]
ERASED = [
    Erased(
        "r04", "52:54:00:00:00:04", "ata-security-erase-enhanced", True, 500, at(3, 15), "parts", "recycling", "tower"
    ),
    Erased("r04", "52:54:00:00:00:04", "nvme-sanitize-crypto", True, 250, at(3, 15), "parts", "recycling", "tower"),
    Erased("r08", "52:54:00:00:00:08", "ata-security-erase-enhanced", False, 500, at(5, 10, month=4), "parts"),
]


def test_totals() -> None:
    t = build_report(PERIOD, ENDED, ERASED).total
    assert (t.runs_ended, t.done, t.imaged, t.machines_imaged, t.erased_only) == (8, 4, 3, 3, 1)
    assert (t.failed, t.repair, t.set_aside) == (3, 1, 1)
    assert t.success_rate == 4 / 8
    assert [(r.reason, r.count) for r in t.failures] == [
        ("superseded by run …", 2), ("read-back failed at chunk 12", 1)]  # fmt: skip
    assert [(r.reason, r.count) for r in t.repairs] == [
        ("SMART overall-health self-assessment FAILED", 1), ("sdb: 3 blocks still hold data", 1)]  # fmt: skip
    assert [(m.method, m.drives, m.ok, m.size_bytes) for m in t.erasures] == [
        ("ata-security-erase-enhanced", 2, 1, 1000), ("nvme-sanitize-crypto", 1, 1, 250)]  # fmt: skip
    assert t.drives_erased == 3
    assert t.mean_imaging_seconds == pytest.approx(20 * 60)  # (10 + 20 + 30) / 3 minutes, erase-only left out
    assert t.per_day == 3 / 2  # imaged on two days
    assert t.per_hour == 3 / 2  # in two clock hours (9 h on the 2nd, 14 h on the 3rd)
    assert t.bytes_written == t.bytes_http == 6500 and t.bytes_multicast == 0


def test_groups_by_recipe_destination_class_and_month() -> None:
    by_recipe = {g.key: g.figures for g in build_report(PERIOD, ENDED, ERASED, "recipe").groups}
    assert list(by_recipe) == ["desk", "laptop", "parts"]
    assert (by_recipe["desk"].imaged, by_recipe["desk"].failed, by_recipe["desk"].set_aside) == (2, 2, 1)
    assert by_recipe["parts"].drives_erased == 3 and by_recipe["parts"].erased_only == 1
    by_dest = {g.key: g.figures for g in build_report(PERIOD, ENDED, ERASED, "destination").groups}
    assert list(by_dest) == ["family", "recycling", "school", "unknown"]  # unknown last
    assert by_dest["school"].imaged == 2 and by_dest["family"].success_rate == 1 / 2
    assert by_dest["unknown"].runs_ended == 3 and by_dest["unknown"].drives_erased == 1
    by_class = {g.key: g.figures.runs_ended for g in build_report(PERIOD, ENDED, ERASED, "class").groups}
    assert by_class == {"desktop": 4, "laptop": 1, "tower": 1, "unknown": 2}
    by_month = {g.key: g.figures for g in build_report(PERIOD, ENDED, ERASED, "month").groups}
    assert list(by_month) == ["2026-03", "2026-04"]
    assert by_month["2026-03"].imaged == 3 and by_month["2026-04"].failed == 3
    assert by_month["2026-03"].drives_erased == 2 and by_month["2026-04"].drives_erased == 1
    with pytest.raises(ValueError, match="unknown grouping"):
        build_report(PERIOD, ENDED, ERASED, "colour")


def test_nothing_ended_has_no_rates() -> None:
    t = build_report(PERIOD, [], []).total
    assert t.runs_ended == 0 and t.success_rate is None and t.mean_imaging_seconds is None and t.per_day is None


def test_reasons_are_grouped_by_their_text() -> None:
    assert reason_key("  disk  too\nsmall ") == "disk too small"
    assert reason_key(None) == reason_key("") == "no reason recorded"


def test_json_and_csv_parse_and_say_the_same() -> None:
    report = build_report(PERIOD, ENDED, ERASED, "destination")
    data = json.loads(json.dumps(report_json(report)))
    assert data["period"] == {"from": "2026-01-01", "to": "2027-01-01"} and data["by"] == "destination"
    assert data["total"]["imaged"] == 3 and data["total"]["bytes_multicast"] == 0
    assert [g["key"] for g in data["groups"]] == ["family", "recycling", "school", "unknown"]
    assert "multicast" in data["notes"][0]
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert set(rows[0]) == {"group", "section", "item", "value"}
    figures = {(r["group"], r["item"]): r["value"] for r in rows if r["section"] == "figures"}
    assert figures[("(all)", "imaged")] == "3" and figures[("school", "imaged")] == "2"
    assert figures[("(all)", "bytes_multicast")] == "0" and figures[("(all)", "success_rate")] == "0.5"
    failures = {r["item"]: r["value"] for r in rows if r["section"] == "failures" and r["group"] == "(all)"}
    assert failures == {"superseded by run …": "2", "read-back failed at chunk 12": "1"}
    erased = {r["item"]: r["value"] for r in rows if r["section"] == "erasures" and r["group"] == "(all)"}
    assert erased["ata-security-erase-enhanced drives"] == "2" and erased["ata-security-erase-enhanced ok"] == "1"


def test_the_period() -> None:
    assert Period.of(None, None, date(2026, 12, 7)) == Period(date(2026, 1, 1), date(2026, 12, 8))
    assert Period.of(None, None, date(2026, 12, 31)) == Period(date(2026, 1, 1), date(2027, 1, 1))
    assert Period.parse("2025-06-01", "2025-07-01", date(2026, 12, 7)).days == 30
    assert Period.parse(None, "2026-01-01", date(2026, 12, 7)) == Period(date(2025, 1, 1), date(2026, 1, 1))
    with pytest.raises(RequestError, match="not a date"):
        Period.parse("yesterday", None, date(2026, 12, 7))
    with pytest.raises(RequestError, match="before it starts"):
        Period.parse("2026-02-01", "2026-02-01", date(2026, 12, 7))
    for start, end in ((None, "0001-01-01"), ("0001-01-01", "0001-01-02"), ("1969-12-31", None)):
        with pytest.raises(RequestError, match="is before 1970: nothing was recorded then"):
            Period.parse(start, end, date(2026, 12, 7))
    assert Period.parse("1970-01-01", "9999-12-31", date(2026, 12, 7)).last > 0
    assert PERIOD.last - PERIOD.first == pytest.approx(365 * 86400, abs=3600)  # a DST change may shift an hour


def test_a_csv_cell_is_never_a_formula() -> None:
    """A failure reason and a hardware class come from a PC's agent: a spreadsheet must not run them."""
    evil = [run("r11", "failed", at(2, 9), reason='=HYPERLINK("http://127.0.0.1/x","y")', hw_class="@SUM(1)"),
            run("r12", "failed", at(2, 10), reason="-2+3", hw_class="desktop")]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(report_csv(build_report(PERIOD, evil, [], "class")))))
    assert {r["item"] for r in rows if r["section"] == "failures"} == {"'=HYPERLINK(\"http://127.0.0.1/x\",\"y\")",
                                                                        "'-2+3"}  # fmt: skip
    assert {r["group"] for r in rows} == {"(all)", "'@SUM(1)", "desktop"}
    assert {r["value"] for r in rows if r["item"] == "failed"} == {"2", "1"}
