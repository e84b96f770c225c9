"""The report's typed values: the period, the rows ``query`` reads from the store, the figures ``aggregate``
makes of them.

Times are seconds since the epoch; dates, days, hours and months are the server's local time (what the
workshop's calendar says).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from provision.errors import RequestError

GROUPINGS = ("class", "recipe", "destination", "month")  # --by
FIRST_YEAR = 1970  # the epoch: no record is older
UNKNOWN = "unknown"  # the group of a row without the grouping's value (no class recorded, no destination ...)
BY_TRANSFER = (
    "bytes by HTTP and by multicast: as each run's agent reported them (compressed, on the wire); a run "
    "that reported no transfer counts its bytes written as HTTP"
)


@dataclass(frozen=True)
class Period:
    """The dates ``[start, end)``: from ``start`` at midnight to ``end`` at midnight, local time."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise RequestError(f"the period ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})")

    @classmethod
    def of(cls, start: date | None, end: date | None, today: date) -> Period:
        """The period the options say; by default up to today included, from the 1st of January of its year."""
        end = end or today + timedelta(days=1)
        start = start or date((end - timedelta(days=1)).year, 1, 1)
        return cls(start, end)

    @classmethod
    def parse(cls, start: str | None, end: str | None, today: date) -> Period:
        """``of`` with ISO dates (YYYY-MM-DD) as typed; RequestError naming the one that does not read."""
        return cls.of(_date("from", start), _date("to", end), today)

    @property
    def first(self) -> float:
        return datetime.combine(self.start, time.min).timestamp()

    @property
    def last(self) -> float:
        """The end, excluded."""
        return datetime.combine(self.end, time.min).timestamp()

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def _date(name: str, text: str | None) -> date | None:
    if not text:
        return None
    try:
        found = date.fromisoformat(text)
    except ValueError:
        raise RequestError(f"{name} {text[:40]!r} is not a date (YYYY-MM-DD)") from None
    if found.year < FIRST_YEAR:  # year 1's midnight has no time stamp: a 500 and a traceback, not a report
        raise RequestError(f"{name} {found.isoformat()} is before {FIRST_YEAR}: nothing was recorded then")
    return found


@dataclass(frozen=True)
class Ended:
    """An attempt that ended in the period: a run (``done``, ``failed`` or ``repair``), or a machine set aside
    at hello by its recipe's health gate (``run`` None, state ``repair``: no run was made)."""

    run: str | None
    mac: str
    state: str  # done | failed | repair
    reason: str | None
    started: float | None
    finished: float
    bytes_written: int = 0
    erase_only: bool = False
    recipe: str | None = None
    destination: str | None = None  # the machine's own, else its recipe's
    hw_class: str | None = None  # the form factor the recipe selection saw (laptop, desktop, tower, mini ...)
    bytes_http: int | None = None  # its report's transfer (docs/multicast.md); None: it reported none
    bytes_multicast: int = 0
    held: bool = False  # its machine held a version when it was planned (docs/delta.md)
    verified_bytes: int | None = None  # plain data bytes it read back right (None: not recorded)


@dataclass(frozen=True)
class Erased:
    """One drive's erasure recorded in the period, with what its run says for the grouping."""

    run: str
    mac: str
    method: str
    ok: bool
    size_bytes: int
    recorded: float
    recipe: str | None = None
    destination: str | None = None
    hw_class: str | None = None


@dataclass(frozen=True)
class ReasonCount:
    reason: str
    count: int


@dataclass(frozen=True)
class MethodCount:
    """Drives erased by one method: how many, how many ok, their bytes."""

    method: str
    drives: int
    ok: int
    size_bytes: int


@dataclass(frozen=True)
class Figures:
    """The figures of a set of rows (the whole period, or one group).

    ``success_rate``: runs done / runs ended (done, failed, repair), None when none ended; machines set aside
    at hello are no run: they are counted in ``set_aside`` and in ``repairs``, not in the rate. ``per_day`` and
    ``per_hour``: machines imaged per day, and per hour, in which at least one was (the workshop's working
    days and hours, not the calendar's). ``bytes_http`` and ``bytes_multicast``: the runs' transfer reports
    (compressed bytes on the wire); a run that reported none counts its ``bytes_written`` as HTTP."""

    runs_ended: int = 0
    done: int = 0
    imaged: int = 0  # runs done that wrote an image
    machines_imaged: int = 0  # distinct machines among them
    erased_only: int = 0  # runs done that erased every drive and wrote nothing
    failed: int = 0
    repair: int = 0  # runs ended in repair
    set_aside: int = 0  # machines set aside at hello (no run), each once
    success_rate: float | None = None
    failures: tuple[ReasonCount, ...] = ()
    repairs: tuple[ReasonCount, ...] = ()
    erasures: tuple[MethodCount, ...] = ()
    mean_imaging_seconds: float | None = None
    per_day: float | None = None
    per_hour: float | None = None
    bytes_written: int = 0
    bytes_http: int = 0
    bytes_multicast: int = 0
    # delta re-imaging (docs/delta.md): runs done over a held version, and the plain bytes they found already right
    # on the disk (verified - written): what they did not fetch
    delta_runs: int = 0
    bytes_delta_saved: int = 0

    @property
    def drives_erased(self) -> int:
        return sum(m.drives for m in self.erasures)


@dataclass(frozen=True)
class Group:
    key: str
    figures: Figures


@dataclass(frozen=True)
class Report:
    period: Period
    by: str | None
    total: Figures
    groups: tuple[Group, ...] = field(default=())
    notes: tuple[str, ...] = (BY_TRANSFER,)
