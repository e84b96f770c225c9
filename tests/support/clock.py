"""Time under the test's control.

- ``Clock``: a clock the test moves by hand: ``clock()`` returns ``clock.now`` (default 1_800_000_000.0, in 2027).
"""

from __future__ import annotations


class Clock:
    """``clock()`` is ``clock.now``; the test sets or advances ``now``."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
