"""Pacing a carousel to its rate: a token bucket on a virtual send clock, sleep-based.

Each send of ``n`` bytes moves the bucket's ``due`` time on by ``n / rate`` seconds; the sender sleeps until
``due`` when it is ahead of the wall clock. A sender that fell behind (a slow disk read, a pause) may catch up
by at most ``burst`` seconds' worth of bytes: ``due`` is never older than ``now - burst``. So over any window
of ``burst`` seconds or more (10 ms by default) the bytes sent stay within one burst of ``rate * window``,
whatever the sleep's granularity: sleeping late is paid back by the next sends going at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

BURST = 0.010  # seconds of catch-up allowed after falling behind


class Pacer:
    """``wait(n)`` before sending ``n`` bytes; ``clock`` and ``sleep`` are injectable (tests use fakes;
    the sender's ``sleep`` returns True when it is told to stop)."""

    def __init__(
        self,
        rate: int,
        *,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate {rate} bytes/s: must be positive")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self.due: float | None = None  # when the bytes sent so far are paid for
        self.slept = 0.0

    def delay(self, nbytes: int, now: float) -> float:
        """The seconds to wait at ``now`` before sending ``nbytes`` (the bucket moves on by their cost)."""
        due = now if self.due is None else max(self.due, now - self.burst)
        wait = max(0.0, due - now)
        self.due = due + nbytes / self.rate
        return wait

    def wait(self, nbytes: int) -> None:
        """Sleep as long as ``nbytes`` must wait (nothing when the bucket has them)."""
        wait = self.delay(nbytes, self.clock())
        if wait > 0:
            self.slept += wait
            self.sleep(wait)

    def reset(self) -> None:
        """Forget the past (after a pause: the first send goes at once, no burst is owed)."""
        self.due = None
