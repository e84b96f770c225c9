"""e2e helpers: boot timings collected by tests and shown at the end of the run."""

from __future__ import annotations

import pytest

TIMINGS: list[tuple[str, str, float]] = []  # (test, milestone, seconds since QEMU start)


@pytest.fixture
def timing(request: pytest.FixtureRequest):
    """``timing(milestone, seconds)`` records one boot milestone of the current test."""

    def record(milestone: str, seconds: float) -> None:
        TIMINGS.append((request.node.name, milestone, seconds))
        request.node.user_properties.append((milestone, round(seconds, 1)))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("lab boot timings (seconds since QEMU start)")
    for test, milestone, seconds in TIMINGS:
        terminalreporter.write_line(f"{test:<45} {milestone:<38} {seconds:6.1f}")
