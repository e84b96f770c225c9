"""The report's figures from the rows ``query`` read (pure: no store, no clock; unit-tested).

A failure or a repair is grouped by its reason text as recorded, a run id in it (``superseded by run ...``)
left out so that the same cause counts once; a group is the row's hardware class, recipe, destination or
month (of its end; of its record for an erasure), ``unknown`` when the row has none.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

from provision.reports.model import (
    UNKNOWN,
    Ended,
    Erased,
    Figures,
    Group,
    MethodCount,
    Period,
    ReasonCount,
    Report,
)

_RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
NO_REASON = "no reason recorded"


def reason_key(reason: str | None) -> str:
    """A reason as it is grouped: its text, spaces collapsed, run ids left out."""
    text = " ".join(_RUN_ID.sub("…", reason or "").split())
    return text or NO_REASON


def _by_reason(rows: Iterable[Ended]) -> tuple[ReasonCount, ...]:
    counts = Counter(reason_key(r.reason) for r in rows)
    return tuple(ReasonCount(reason, n) for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _by_method(drives: Iterable[Erased]) -> tuple[MethodCount, ...]:
    found: dict[str, list[Erased]] = {}
    for d in drives:
        found.setdefault(d.method, []).append(d)
    rows = (MethodCount(m, len(ds), sum(d.ok for d in ds), sum(d.size_bytes for d in ds)) for m, ds in found.items())
    return tuple(sorted(rows, key=lambda m: (-m.drives, m.method)))


def _hour(ts: float) -> datetime:
    return datetime.fromtimestamp(ts).replace(minute=0, second=0, microsecond=0)


def figures(ended: Iterable[Ended], erased: Iterable[Erased]) -> Figures:
    """The figures of these rows."""
    rows, drives = list(ended), list(erased)
    runs = [r for r in rows if r.run is not None]
    done = [r for r in runs if r.state == "done"]
    imaged = [r for r in done if not r.erase_only]
    failed = [r for r in runs if r.state == "failed"]
    repairs = [r for r in rows if r.state == "repair"]
    times = [r.finished - r.started for r in imaged if r.started is not None]
    days = {datetime.fromtimestamp(r.finished).date() for r in imaged}
    hours = {_hour(r.finished) for r in imaged}
    written = sum(r.bytes_written for r in runs)
    http = sum(r.bytes_written if r.bytes_http is None else r.bytes_http for r in runs)
    delta = [r for r in imaged if r.held and r.verified_bytes is not None]
    return Figures(
        runs_ended=len(runs), done=len(done), imaged=len(imaged), machines_imaged=len({r.mac for r in imaged}),
        erased_only=len(done) - len(imaged), failed=len(failed), repair=sum(r.run is not None for r in repairs),
        set_aside=sum(r.run is None for r in repairs), success_rate=len(done) / len(runs) if runs else None,
        failures=_by_reason(failed), repairs=_by_reason(repairs), erasures=_by_method(drives),
        mean_imaging_seconds=sum(times) / len(times) if times else None,
        per_day=len(imaged) / len(days) if days else None, per_hour=len(imaged) / len(hours) if hours else None,
        bytes_written=written, bytes_http=http, bytes_multicast=sum(r.bytes_multicast for r in runs),
        delta_runs=len(delta), bytes_delta_saved=sum(max(0, (r.verified_bytes or 0) - r.bytes_written) for r in delta),
    )  # fmt: skip


def _month(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m")


KEYS: dict[str, tuple[Callable[[Ended], str | None], Callable[[Erased], str | None]]] = {
    "class": (lambda r: r.hw_class, lambda d: d.hw_class),
    "recipe": (lambda r: r.recipe, lambda d: d.recipe),
    "destination": (lambda r: r.destination, lambda d: d.destination),
    "month": (lambda r: _month(r.finished), lambda d: _month(d.recorded)),
}


def build_report(period: Period, ended: Iterable[Ended], erased: Iterable[Erased], by: str | None = None) -> Report:
    """The report of the period: its figures, and with ``by`` (``GROUPINGS``) each group's, sorted by key
    (``unknown`` last)."""
    rows, drives = list(ended), list(erased)
    groups: tuple[Group, ...] = ()
    if by is not None:
        if by not in KEYS:
            raise ValueError(f"unknown grouping {by!r}: one of {', '.join(KEYS)}")
        of_run, of_drive = KEYS[by]
        keys = {of_run(r) or UNKNOWN for r in rows} | {of_drive(d) or UNKNOWN for d in drives}
        groups = tuple(
            Group(k, figures([r for r in rows if (of_run(r) or UNKNOWN) == k],
                             [d for d in drives if (of_drive(d) or UNKNOWN) == k]))
            for k in sorted(keys, key=lambda k: (k == UNKNOWN, k))
        )  # fmt: skip
    return Report(period, by, figures(rows, drives), groups)
