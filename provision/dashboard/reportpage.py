"""The city's report on the dashboard, behind a login (docs/reports.md):

- ``GET /report?from=DATE&to=DATE&by=class|recipe|destination|month``: the figures of ``provision report``
  for the period ``[from, to)`` (default: this year up to today), in tables and bar charts drawn on the
  server as SVG (``provision.dashboard.charts``; no script), with a form (GET) to choose the period and the
  grouping;
- ``GET /report.csv`` and ``/report.json`` with the same query: the report as a file (``provision.reports``).

A report counts the workshop's machines, failures and donors' drives: it needs a login, like the lots (the 401
page says to log in). A date that does not read, a period that ends before it starts or an unknown grouping is
a 400 page naming it. The routes' names start with "dashboard": their errors are pages (provision.web.errors).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlencode

from aiohttp import web

from provision.dashboard.charts import LABEL_CHARS, Chart, bar_chart
from provision.dashboard.i18n import Formats
from provision.dashboard.reasons import N_
from provision.dashboard.render import DASHBOARD, SESSION_KEY, language, page
from provision.errors import NotFound, RequestError, Unauthorized
from provision.reports import GROUPINGS, Figures, Period, Report, read_report, report_csv, report_json

log = logging.getLogger(__name__)

REPORT = "/report"
REPORT_FILE = "/report.{format}"
FORMATS = {"csv": "text/csv", "json": "application/json"}
GROUPING_WORDS = {  # the form's choices (msgids)
    "": N_("no grouping"),
    "class": N_("hardware class"),
    "recipe": N_("recipe"),
    "destination": N_("destination"),
    "month": N_("month"),
}
OUTCOMES = (  # the outcome chart's bars: (Figures field, msgid)
    ("imaged", N_("imaged")),
    ("erased_only", N_("erased only")),
    ("failed", N_("failed")),
    ("repair", N_("repair")),
    ("set_aside", N_("set aside at start")),
)


@dataclass(frozen=True)
class ReportView:
    report: Report
    charts: tuple[Chart, ...]
    query: str  # the period and grouping as a query string, for the download links
    start: str  # the form's values
    end: str
    by: str

    @property
    def rows(self) -> tuple[tuple[str | None, Figures], ...]:
        """The figures table's rows: the totals (key None), then each group."""
        return ((None, self.report.total), *((g.key, g.figures) for g in self.report.groups))


def _logged_in(request: web.Request) -> None:
    if request.get(SESSION_KEY) is None:
        raise Unauthorized("log in to see the report")


def _asked(request: web.Request) -> tuple[Period, str | None]:
    """The period and grouping of the query; RequestError (400) naming what does not read."""
    by = request.query.get("by", "") or None
    if by is not None and by not in GROUPINGS:
        raise RequestError(f"grouping {by[:40]!r} is none of {', '.join(GROUPINGS)}")
    return Period.parse(request.query.get("from"), request.query.get("to"), date.today()), by


def charts(report: Report, fmt: Formats) -> tuple[Chart, ...]:
    """The page's charts: the outcomes, machines imaged by group (grouped), failures and repairs by reason and
    drives erased by method (when there are some)."""
    total = report.total

    def count(n: int) -> str:
        return fmt.number(n)

    found = [bar_chart("outcomes", N_("Outcomes"), [(word, getattr(total, name), count(getattr(total, name)))
                                                    for name, word in OUTCOMES], translate=True)]  # fmt: skip
    if report.groups:
        imaged = [(g.key, g.figures.imaged, count(g.figures.imaged)) for g in report.groups]
        found.append(bar_chart("groups", N_("Machines imaged by group"), imaged))
    if total.failures:
        found.append(bar_chart("failures", N_("Failures by reason"),
                               [(r.reason, r.count, count(r.count)) for r in total.failures]))  # fmt: skip
    if total.repairs:
        found.append(bar_chart("repairs", N_("Repairs by reason"),
                               [(r.reason, r.count, count(r.count)) for r in total.repairs]))  # fmt: skip
    if total.erasures:
        found.append(bar_chart("erasures", N_("Drives erased by method"),
                               [(m.method, m.drives, count(m.drives)) for m in total.erasures]))  # fmt: skip
    return tuple(found)


async def report_page(request: web.Request) -> web.Response:
    _logged_in(request)
    period, by = _asked(request)
    store = request.app[DASHBOARD].views.store
    found = await asyncio.to_thread(read_report, store.path, period, by)
    query = urlencode({"from": period.start.isoformat(), "to": period.end.isoformat(), **({"by": by} if by else {})})
    view = ReportView(found, charts(found, Formats(language(request))), query, period.start.isoformat(),
                      period.end.isoformat(), by or "")  # fmt: skip
    return page(request, "report.html", {"r": view, "groupings": GROUPING_WORDS, "label_chars": LABEL_CHARS})


async def report_file(request: web.Request) -> web.Response:
    _logged_in(request)
    form = request.match_info["format"]
    if form not in FORMATS:
        raise NotFound(f"the report is .csv or .json, not .{form[:16]}")
    period, by = _asked(request)
    found = await asyncio.to_thread(read_report, request.app[DASHBOARD].views.store.path, period, by)
    text = report_csv(found) if form == "csv" else json.dumps(report_json(found), indent=2, ensure_ascii=False)
    log.info("report %s..%s (%s, by %s) downloaded from the dashboard by %s", period.start, period.end, form, by,
             request.remote)  # fmt: skip
    response = web.Response(text=text, content_type=FORMATS[form], charset="utf-8")
    name = f"report-{period.start.isoformat()}-{period.end.isoformat()}{'-' + by if by else ''}.{form}"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def add_report(app: web.Application) -> None:
    """The report's routes on the dashboard's ``app``."""
    app.router.add_get(REPORT, report_page, name="dashboard-report")
    app.router.add_get(REPORT_FILE, report_file, name="dashboard-report-file")
