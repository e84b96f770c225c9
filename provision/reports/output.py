"""The report as data: JSON (``report_json``, a dict for ``json.dumps``) and CSV (``report_csv``: one row per
figure, ``group, section, item, value``, which a spreadsheet filters and pivots).

In the CSV, ``group`` is ``(all)`` for the period's totals, else the group's key; ``section`` is ``figures`` (one
row per number of ``Figures``), ``failures`` and ``repairs`` (item: the reason, value: how many) or
``erasures`` (item: the method, one row each for ``drives``, ``ok`` and ``bytes``, as ``METHOD drives``...).
An empty value is a figure that has none (a rate with nothing to divide). A text cell that a spreadsheet would
read as a formula (``=``, ``+``, ``-``, ``@``, tab, carriage return first: a failure reason or a hardware class
comes from a PC's agent) starts with ``'`` (OWASP's CSV injection).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from provision.reports.model import Figures, Report

TOTAL = "(all)"  # no recipe, class or destination is named so
NUMBERS = ("runs_ended", "done", "imaged", "machines_imaged", "erased_only", "failed", "repair", "set_aside",
           "success_rate", "mean_imaging_seconds", "per_day", "per_hour", "bytes_written", "bytes_http",
           "bytes_multicast", "delta_runs", "bytes_delta_saved")  # fmt: skip


def figures_json(found: Figures) -> dict[str, Any]:
    return {
        **{name: getattr(found, name) for name in NUMBERS},
        "drives_erased": found.drives_erased,
        "failures": [{"reason": r.reason, "count": r.count} for r in found.failures],
        "repairs": [{"reason": r.reason, "count": r.count} for r in found.repairs],
        "erasures": [{"method": m.method, "drives": m.drives, "ok": m.ok, "bytes": m.size_bytes}
                     for m in found.erasures],
    }  # fmt: skip


def report_json(report: Report) -> dict[str, Any]:
    return {
        "period": {"from": report.period.start.isoformat(), "to": report.period.end.isoformat()},
        "by": report.by,
        "total": figures_json(report.total),
        "groups": [{"key": g.key, **figures_json(g.figures)} for g in report.groups],
        "notes": list(report.notes),
    }


def _rows(group: str, found: Figures) -> list[list[Any]]:
    rows: list[list[Any]] = [[group, "figures", name, getattr(found, name)] for name in NUMBERS]
    rows.append([group, "figures", "drives_erased", found.drives_erased])
    rows += [[group, "failures", r.reason, r.count] for r in found.failures]
    rows += [[group, "repairs", r.reason, r.count] for r in found.repairs]
    for m in found.erasures:
        rows += [[group, "erasures", f"{m.method} {what}", n] for what, n in
                 (("drives", m.drives), ("ok", m.ok), ("bytes", m.size_bytes))]  # fmt: skip
    return rows


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell: '' for None, a text a spreadsheet would run as a formula quoted with ``'``."""
    if value is None:
        return ""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["group", "section", "item", "value"])
    writer.writerow([TOTAL, "period", "from", report.period.start.isoformat()])
    writer.writerow([TOTAL, "period", "to", report.period.end.isoformat()])
    for row in _rows(TOTAL, report.total):
        writer.writerow([_cell(v) for v in row])
    for g in report.groups:
        for row in _rows(g.key, g.figures):
            writer.writerow([_cell(v) for v in row])
    return out.getvalue()
