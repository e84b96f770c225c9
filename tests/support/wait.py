"""Polling.

- ``wait_for(condition, timeout, interval)``: call ``condition`` until it returns something true or ``timeout``
  seconds have passed; its last value (false on timeout), so a caller can wait then check, or assert on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, *, interval: float = 0.02) -> T:
    """``condition()``'s first true value, polled every ``interval`` seconds; its last (false) value once
    ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)
    return value
