"""Pacing a carousel to its rate: two token buckets on virtual send clocks, sleep-based (as tbf's ``rate`` and
``peakrate``).

- **The rate** (``rate`` bytes/s over the long run): each send of ``n`` bytes moves the clock ``due`` on by
  ``n / rate``. A sender that fell behind (its thread woke late on a busy host, a slow disk read) keeps up to
  ``debt`` seconds of it (1 s) and pays it back: without that memory every late wake-up is lost for good, and on
  a loaded server the pass takes longer than its bytes at the rate (measured: 15 % longer with 8 agents
  decoding on the server's 2 cores).
- **The peak** (``peak`` bytes/s, by default 1.05 x the rate: with the default rate of 90 % of the link in
  datagram bytes, 97 % of it on the wire with the IP, UDP and Ethernet headers): paying back goes no faster than
  that, with at most ``burst`` seconds' worth (50 ms) at once: a wake-up that late is made up at once. So over
  any window the bytes sent stay within one burst of ``peak * window``, and within ``rate * (window + debt)``
  too, whatever the sleep's granularity.

What is older than ``debt`` is given up and counted in ``behind`` (seconds): the sender logs it, a carousel
that cannot keep its rate (a host too busy, a disk too slow) says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

BURST = 0.050  # seconds at the peak rate a late sender may send at once
DEBT = 1.0  # seconds of the rate a sender that fell behind may still make up (at the peak rate)
PEAK = 1.05  # the peak rate, times the rate


class Pacer:
    """``wait(n)`` before sending ``n`` bytes; ``clock`` and ``sleep`` are injectable (tests use fakes;
    the sender's ``sleep`` returns True when it is told to stop)."""

    def __init__(
        self,
        rate: int,
        *,
        peak: float | None = None,
        burst: float = BURST,
        debt: float = DEBT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate {rate} bytes/s: must be positive")
        self.rate = rate
        self.peak = rate * PEAK if peak is None else peak
        if self.peak < rate:
            raise ValueError(f"peak {self.peak:.0f} bytes/s: must be at least the rate {rate}")
        self.burst, self.debt = burst, max(debt, burst)
        self.clock = clock
        self.sleep = sleep
        self.due: float | None = None  # when the bytes sent so far are paid for at the rate
        self.peak_due: float | None = None  # ... at the peak rate
        self.slept = 0.0
        self.behind = 0.0  # seconds of the rate given up (older than ``debt``)

    def delay(self, nbytes: int, now: float) -> float:
        """The seconds to wait at ``now`` before sending ``nbytes`` (both clocks move on by their cost)."""
        due = now if self.due is None else self.due
        if due < now - self.debt:
            self.behind += now - self.debt - due
            due = now - self.debt
        peak_due = now if self.peak_due is None else max(self.peak_due, now - self.burst)
        send = max(now, due, peak_due)
        self.due = due + nbytes / self.rate
        self.peak_due = max(peak_due, send - self.burst) + nbytes / self.peak
        return send - now

    def set_rate(self, rate: int) -> None:
        """Pace to ``rate`` from now on (the peak keeps its ratio to it): the sender yielding to other traffic."""
        if rate <= 0:
            raise ValueError(f"rate {rate} bytes/s: must be positive")
        self.peak, self.rate = self.peak * rate / self.rate, rate

    def wait(self, nbytes: int) -> None:
        """Sleep as long as ``nbytes`` must wait (nothing when the buckets have them)."""
        wait = self.delay(nbytes, self.clock())
        if wait > 0:
            self.slept += wait
            self.sleep(wait)

    def reset(self) -> None:
        """Forget the past (after a pause: the first send goes at once, no debt is owed)."""
        self.due = self.peak_due = None
