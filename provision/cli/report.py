"""`provision report [--from DATE] [--to DATE] [--by class|recipe|destination|month] [--csv|--json]`: the
city's report over the dates ``[from, to)`` (default: this year up to today included), in total and by group
(``provision.reports``; docs/reports.md). A readable table by default; ``--csv`` one row per figure; ``--json``.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from typing import Any, TextIO

from provision.cli.common import DEFAULT_STATE, Parser, UsageError, state_dir_of

GROUPINGS = ("class", "recipe", "destination", "month")  # provision.reports.GROUPINGS (imported late)
COLUMNS = (("GROUP", 20), ("ENDED", 6), ("IMAGED", 6), ("MACHINES", 8), ("ERASED", 6), ("FAILED", 6),
           ("REPAIR", 6), ("SET ASIDE", 9), ("SUCCESS", 7), ("MEAN TIME", 9), ("PER DAY", 7), ("PER HOUR", 8),
           ("BYTES (HTTP)", 12), ("MULTICAST", 9), ("DRIVES", 6))  # fmt: skip


def _cell(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    return "".join(c if c.isprintable() else "?" for c in text)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def _row(key: str, f: Any) -> list[str]:
    rate = "-" if f.success_rate is None else f"{f.success_rate * 100:.1f} %"
    per = ["-" if v is None else f"{v:.1f}" for v in (f.per_day, f.per_hour)]
    return [key, str(f.runs_ended), str(f.imaged), str(f.machines_imaged), str(f.erased_only), str(f.failed),
            str(f.repair), str(f.set_aside), rate, _minutes(f.mean_imaging_seconds), *per, _size(f.bytes_http),
            _size(f.bytes_multicast), str(f.drives_erased)]  # fmt: skip


def table(report: Any) -> str:
    """The report as a terminal reads it: the figures' table, then reasons and erasure methods per group."""
    from provision.reports.output import TOTAL

    by = f", by {report.by}" if report.by else ""
    lines = [f"Report {report.period.start} to {report.period.end} (excluded){by}", ""]
    rows = [_row(TOTAL, report.total), *(_row(_cell(g.key), g.figures) for g in report.groups)]
    widths = [max(w, *(len(r[i]) for r in rows)) for i, (_, w) in enumerate(COLUMNS)]
    for cells in ([name for name, _ in COLUMNS], *rows):
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        )
    sections = [(TOTAL, report.total), *((g.key, g.figures) for g in report.groups)]
    for title, attr in (("Failures by reason", "failures"), ("Repairs by reason", "repairs")):
        found = [(key, r) for key, f in sections for r in getattr(f, attr)]
        if found:
            lines += ["", title]
            lines += [f"  {_cell(key)[:20]:20}  {r.count:>5}  {_cell(r.reason)}" for key, r in found]
    erased = [(key, m) for key, f in sections for m in f.erasures]
    if erased:
        lines += ["", "Drives erased by method"]
        lines += [f"  {_cell(key)[:20]:20}  {_cell(m.method):28}  {m.drives:>5} drives, {m.ok} ok, "
                  f"{_size(m.size_bytes)}" for key, m in erased]  # fmt: skip
    if report.total.delta_runs:
        lines += ["", f"bytes saved by delta: {_size(report.total.bytes_delta_saved)} already right on the disks of "
                      f"{report.total.delta_runs} runs over a version their machine held (not fetched)"]  # fmt: skip
    lines += ["", *(f"note: {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from provision.errors import FatalError, RequestError
    from provision.reports import Period, read_report, report_csv, report_json
    from provision.store import Store

    try:
        period = Period.parse(args.start, args.end, date.today())
    except RequestError as exc:
        raise UsageError(str(exc)) from None
    db = state_dir_of(args) / "provision.db"
    if not db.is_file():
        raise FatalError(f"no server database at {db} (has provision serve run with this state directory?)")
    with Store(db):  # brings an older store's schema up to date (the report reads its newest columns)
        pass
    report = read_report(db, period, args.by)
    if args.json:
        json.dump(report_json(report), out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif args.csv:
        out.write(report_csv(report))
    else:
        out.write(table(report))
    return 0


def add_commands(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "report", help="the city's report: machines imaged, failures, erasures ... over a period"
    )
    p.add_argument("--from", dest="start", metavar="DATE", help="first day (YYYY-MM-DD; default: the 1st of January)")
    p.add_argument("--to", dest="end", metavar="DATE", help="the day after the last (default: tomorrow)")
    p.add_argument(
        "--by", choices=GROUPINGS, help="also each group's figures: hardware class, recipe, destination, month"
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="CSV: one row per figure (group, section, item, value)")
    form.add_argument("--json", action="store_true", help="JSON output")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", metavar="DIR", help=f"the server's state directory (default: {DEFAULT_STATE})")
    where.add_argument("--config", metavar="FILE", help="the server's YAML configuration (for its state_dir)")
    p.set_defaults(func=cmd_report)
