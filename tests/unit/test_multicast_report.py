"""The report's bytes by transfer (provision.reports.aggregate): a run's transfer report gives its bytes by
HTTP and by multicast; a run without one counts its bytes written as HTTP."""

from __future__ import annotations

from provision.reports.aggregate import figures
from provision.reports.model import BY_TRANSFER, Ended, Report

DAY = 1_780_000_000.0


def ended(run: str, written: int, http: int | None = None, multicast: int = 0) -> Ended:
    return Ended(run=run, mac=f"52:54:00:00:00:{run}", state="done", reason=None, started=DAY, finished=DAY + 600,
                 bytes_written=written, bytes_http=http, bytes_multicast=multicast)  # fmt: skip


def test_bytes_by_transfer() -> None:
    found = figures([ended("01", 1000), ended("02", 1000, http=30, multicast=400), ended("03", 1000, 0, 410)], [])
    assert (found.bytes_written, found.bytes_http, found.bytes_multicast) == (3000, 1030, 810)


def test_no_transfer_at_all_is_all_http() -> None:
    found = figures([ended("01", 500), ended("02", 700)], [])
    assert (found.bytes_http, found.bytes_multicast) == (1200, 0)
    assert Report.__dataclass_fields__["notes"].default == (BY_TRANSFER,)
