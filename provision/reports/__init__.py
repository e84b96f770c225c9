"""The city's report (issue 18): what the workshop did over a period ``[from, to)`` of dates, in total and by
hardware class, recipe, destination or month: machines imaged, success rate, failures and repairs by reason,
drives erased by method, mean imaging time and rate, bytes written.

- ``model``: the typed values (``Period``, the rows read, ``Figures``, ``Report``);
- ``query``: the only module that reads the store (SQL, its own read-only connection);
- ``aggregate``: the figures from the rows (pure);
- ``output``: the report as JSON and CSV (the CLI's text table is ``provision.cli.report``'s).

``provision report`` and the dashboard's ``/report`` page show it (docs/reports.md).
"""

from provision.reports.aggregate import build_report
from provision.reports.model import GROUPINGS, Figures, Group, Period, Report
from provision.reports.output import report_csv, report_json
from provision.reports.query import read_report

__all__ = ["GROUPINGS", "Figures", "Group", "Period", "Report", "build_report", "read_report", "report_csv",
           "report_json"]  # fmt: skip
