"""The machine a log line is about: its MAC and run id in context variables, and the handler that prints them.

Where a request for one machine is handled (a boot script, an agent API call, a DHCP packet, a TFTP transfer,
a run's hooks), the code binds the MAC and/or the run id (``bound(mac=..., run=...)``); every line logged inside,
by any module, then carries ``mac=.. run=..`` without passing them along. Context variables follow the code into
``asyncio.to_thread`` and into tasks made inside; ``bound`` resets them on the way out (an aiohttp connection
handles its keep-alive requests one after the other in one task: nothing leaks to the next request). A log call
may also give them itself: ``log.info(..., extra={"mac": mac})``.

``configure(level, stream, style)`` sets up the root logger for the CLI (as ``logging.basicConfig`` did):

- ``text`` (the default on a terminal): ``2026-12-07 03:12:40,123 INFO provision.runs: mac=.. run=.. message``;
- ``journal`` (the default under systemd, when ``JOURNAL_STREAM`` is set): no time stamp (journald adds its own)
  and each line prefixed with its syslog priority, ``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug
  (systemd's SyslogLevelPrefix), so ``journalctl -p warning`` filters on it; a traceback's lines get the prefix
  too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, TextIO

__all__ = ["STYLES", "ContextFilter", "JournalFormatter", "Style", "bound", "configure", "context", "default_style"]

Style = Literal["text", "journal"]
STYLES: tuple[Style, ...] = ("text", "journal")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(context)s%(message)s"
JOURNAL_FORMAT = "%(name)s: %(context)s%(message)s"
FIELD_MAX = 64  # a MAC is 17 characters, a run id 32

_MAC: ContextVar[str | None] = ContextVar("provision_log_mac", default=None)
_RUN: ContextVar[str | None] = ContextVar("provision_log_run", default=None)


@contextmanager
def bound(*, mac: str | None = None, run: str | None = None, keep: bool = False) -> Iterator[None]:
    """Lines logged inside carry ``mac`` and ``run``; a None one is cleared, unless ``keep`` (then an outer
    binding stays: a call about a run inside a request bound to its MAC)."""
    mac_token = _MAC.set(mac) if mac is not None or not keep else None
    run_token = _RUN.set(run) if run is not None or not keep else None
    try:
        yield
    finally:
        if run_token is not None:
            _RUN.reset(run_token)
        if mac_token is not None:
            _MAC.reset(mac_token)


def context() -> dict[str, str]:
    """The bound MAC and run id (only those set)."""
    found = {"mac": _MAC.get(), "run": _RUN.get()}
    return {k: v for k, v in found.items() if v is not None}


def _field(value: object) -> str:
    """A context value as one token of the line: a run id comes from a request's path (URL-decoded), so a
    newline, a space or a control character in it could forge a line or a field; each becomes ``?``."""
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in str(value)[:FIELD_MAX])


class ContextFilter(logging.Filter):
    """Gives every record ``mac`` and ``run`` (its own ``extra``, else the bound ones, else None) and
    ``context``: ``"mac=.. run=.. "`` with those set, or ``""`` (each value one token: see ``_field``). On the
    handler: every logger's lines pass it."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound_now = context()
        fields: dict[str, str] = {}
        for key in ("mac", "run"):
            value = getattr(record, key, None) or bound_now.get(key)
            setattr(record, key, value)
            if value:
                fields[key] = _field(value)
        record.context = "".join(f"{k}={v} " for k, v in fields.items())
        return True


PRIORITIES: Mapping[int, int] = {
    logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7,
}  # fmt: skip


def priority(level: int) -> int:
    """The syslog priority of a logging level (a level between two takes the more urgent)."""
    return next((p for lvl, p in sorted(PRIORITIES.items()) if level <= lvl), 2)


class JournalFormatter(logging.Formatter):
    """Every line of the formatted record prefixed with ``<N>``, its syslog priority (SyslogLevelPrefix)."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def default_style(environ: Mapping[str, str] | None = None) -> Style:
    """``journal`` when systemd connected stderr to the journal (``JOURNAL_STREAM`` set), else ``text``."""
    return "journal" if (os.environ if environ is None else environ).get("JOURNAL_STREAM") else "text"


def configure(level: int, stream: TextIO, style: Style | None = None) -> logging.Handler | None:
    """The root logger writes to ``stream`` in ``style`` (None: ``default_style()``), every line with its
    context; as ``logging.basicConfig``, nothing is done when the root logger has a handler already (a test
    runner's, an embedding program's): None then."""
    root = logging.getLogger()
    if root.handlers:
        return None
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    chosen = style or default_style()
    handler.setFormatter(JournalFormatter() if chosen == "journal" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
