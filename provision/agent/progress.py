"""Progress of a write, reported about every 2 s: stage, bytes done of total, rate."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STAGES = ("checking", "writing", "wiping", "verifying")


@dataclass(frozen=True)
class Progress:
    """One progress report.

    ``stage`` is ``checking`` (hashing what the target already holds), ``writing`` (fetching and writing
    the chunks that differ), ``wiping`` (the holes, per the wipe policy) or ``verifying`` (the read-back).
    ``rate`` is bytes/s since the previous report of the stage; ``done == total`` ends a stage.
    """

    stage: str
    done: int
    total: int
    rate: float
    elapsed: float
    fetched: int
    skipped: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "done": self.done, "total": self.total, "rate": round(self.rate),
                "elapsed": round(self.elapsed, 3), "fetched": self.fetched, "skipped": self.skipped}  # fmt: skip


class ProgressMeter:
    """Counts bytes from many threads and calls ``callback`` at most every ``interval`` seconds, plus once at
    the start and once at the end of each stage. A callback that raises is logged, never fatal to the write."""

    def __init__(
        self,
        callback: Callable[[Progress], None] | None,
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self._callback = callback
        self._interval = interval
        self._clock = clock
        self._log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self.stage, self.total, self.done = "", 0, 0
        self.fetched = self.skipped = 0
        self._started = self._last_at = 0.0
        self._last_done = 0
        self.stage_seconds: dict[str, float] = {}

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            self.stage, self.total, self.done = stage, total, 0
            self._started = self._last_at = self._clock()
            self._last_done = 0
            report = self._snapshot(self._started)
        self._emit(report)

    def add(self, nbytes: int, *, fetched: int = 0, skipped: int = 0) -> None:
        report = None
        with self._lock:
            self.done += nbytes
            self.fetched += fetched
            self.skipped += skipped
            now = self._clock()
            if now - self._last_at >= self._interval:
                report = self._snapshot(now)
        if report is not None:
            self._emit(report)

    def end(self) -> None:
        with self._lock:
            now = self._clock()
            self.stage_seconds[self.stage] = now - self._started
            report = self._snapshot(now)
        self._emit(report)

    def _snapshot(self, now: float) -> Progress:
        span = now - self._last_at
        rate = (self.done - self._last_done) / span if span > 0 else 0.0
        self._last_at, self._last_done = now, self.done
        return Progress(self.stage, self.done, self.total, rate, now - self._started, self.fetched, self.skipped)

    def _emit(self, report: Progress) -> None:
        self._log.debug("%s: %d/%d bytes, %.1f MB/s", report.stage, report.done, report.total, report.rate / 1e6)
        if self._callback is None:
            return
        try:
            self._callback(report)
        except Exception:
            self._log.exception("progress callback failed (the write goes on)")
