"""The log context (``provision.logcontext``): the MAC and run id bound where a machine's request is handled, put
in every line by the filter, the journal's priority prefixes, and the context following into worker threads."""

from __future__ import annotations

import asyncio
import io
import logging
import sys

import pytest

from provision.logcontext import (
    TEXT_FORMAT,
    ContextFilter,
    JournalFormatter,
    bound,
    context,
    default_style,
    priority,
)

MAC = "52:54:00:12:34:56"
RUN = "0123456789abcdef0123456789abcdef"


def record(level: int = logging.INFO, msg: str = "hello", **extra: str) -> logging.LogRecord:
    found = logging.LogRecord("provision.runs", level, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(found, key, value)
    ContextFilter().filter(found)
    return found


def text(rec: logging.LogRecord) -> str:
    return logging.Formatter("%(levelname)s %(name)s: %(context)s%(message)s").format(rec)


def test_no_binding_no_context() -> None:
    assert context() == {}
    assert text(record()) == "INFO provision.runs: hello"


def test_bound_mac_and_run_in_the_line_and_reset_after() -> None:
    with bound(mac=MAC):
        assert text(record()) == f"INFO provision.runs: mac={MAC} hello"
        with bound(run=RUN, keep=True):
            assert text(record()) == f"INFO provision.runs: mac={MAC} run={RUN} hello"
        with bound(run=RUN):  # without keep, the MAC is cleared inside
            assert text(record()) == f"INFO provision.runs: run={RUN} hello"
        assert context() == {"mac": MAC}
    assert context() == {}


def test_a_log_call_s_own_extra_wins() -> None:
    with bound(mac=MAC):
        assert text(record(mac="52:54:00:00:00:01")) == "INFO provision.runs: mac=52:54:00:00:00:01 hello"


def test_the_context_follows_into_to_thread_and_not_out_of_it() -> None:
    async def main() -> tuple[dict[str, str], dict[str, str]]:
        with bound(mac=MAC, run=RUN):
            inside = await asyncio.to_thread(context)

        def rebind() -> None:
            with bound(mac="52:54:00:00:00:02"):
                pass

        await asyncio.to_thread(rebind)
        return inside, context()

    assert asyncio.run(main()) == ({"mac": MAC, "run": RUN}, {})


@pytest.mark.parametrize(
    ("level", "prefix"),
    [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3), (logging.CRITICAL, 2), (25, 4)],
)
def test_syslog_priorities(level: int, prefix: int) -> None:
    assert priority(level) == prefix


def test_journal_lines_have_a_priority_prefix_and_no_time_stamp() -> None:
    with bound(mac=MAC):
        line = JournalFormatter().format(record(logging.WARNING, "disk slow"))
    assert line == f"<4>provision.runs: mac={MAC} disk slow"


def test_every_line_of_a_traceback_gets_the_prefix() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("provision.web", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    ContextFilter().filter(rec)
    lines = JournalFormatter().format(rec).split("\n")
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_text_lines_keep_the_time_stamp() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    with bound(run=RUN):
        handler.handle(record(logging.ERROR, "no disk"))
    date, time_, rest = out.getvalue().split(" ", 2)
    assert date.count("-") == 2 and time_.count(":") == 2
    assert rest == f"ERROR provision.runs: run={RUN} no disk\n"


def test_journal_by_default_only_under_systemd() -> None:
    assert default_style({"JOURNAL_STREAM": "8:12345"}) == "journal"
    assert default_style({}) == "text"


def test_a_bound_value_is_one_token_of_one_line() -> None:
    """A run id comes from a request's path, URL-decoded: its newline or space must not forge a line or a field."""
    forged = "x\n<3>provision.runs: mac=52:54:00:00:00:01 run=y"
    with bound(run=forged):
        line = JournalFormatter().format(record(msg="no such run"))
    assert "\n" not in line and " mac=" not in line, line  # one line, no second field
    assert line == "<6>provision.runs: run=x?<3>provision.runs:?mac=52:54:00:00:00:01?run=y no such run"
    with bound(run="r" * 200):
        assert text(record()) == f"INFO provision.runs: run={'r' * 64} hello"
