"""The listening loop: datagrams in, events out, until one of the reasons to leave (``listen``), and the
keepalive timer (``Keepalive``). No socket of its own: ``recv`` returns a datagram or None after a short wait,
so the tests feed it from a list.

Reasons to leave, checked after every datagram and every silence:

- every chunk wanted is in (``all chunks received``);
- one full cycle since joining (``one full cycle``): the carousel is back where this agent started;
- the loss over the last window above ``max_loss`` (``loss N % above M %``): the link is bad, or this agent falls
  behind (its socket drops, or its writer holds too much: pieces over the memory bound count as lost);
- no datagram within ``join_timeout`` s of joining (``no multicast ...``): the group does not reach this PC;
- no datagram for ``idle_timeout`` s after some came (``the carousel stopped ...``);
- ``stop`` set (``stopped``): the run is ending.

The sender never waits for anyone, so leaving never slows the others; what is missing then comes by HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from provision.agent.multicast.reassembly import Event, Reassembly

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timeouts:
    join: float = 5.0  # seconds without any datagram after joining: no multicast here
    idle: float = 5.0  # seconds without a datagram once they came: the carousel stopped


def listen(
    recv: Callable[[], bytes | None], reassembly: Reassembly, emit: Callable[[Event], None], *, max_loss: float,
    timeouts: Timeouts = Timeouts(), stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str:  # fmt: skip
    """Feed ``reassembly`` from ``recv`` and ``emit`` what it completes; the reason it stopped."""
    joined = last = clock()
    stop = stop or threading.Event()
    while not stop.is_set():
        data = recv()
        now = clock()
        if data is None:
            if reassembly.start is None and now - joined >= timeouts.join:
                return f"no multicast: no datagram within {timeouts.join:g} s of joining"
            if reassembly.start is not None and now - last >= timeouts.idle:
                return f"the carousel stopped: no datagram for {timeouts.idle:g} s"
            continue
        kept = reassembly.counts.datagrams
        for event in reassembly.datagram(data):
            emit(event)
        if reassembly.counts.datagrams > kept:
            last = now
        elif reassembly.start is None and now - joined >= timeouts.join:
            return f"no multicast: no datagram of this version within {timeouts.join:g} s of joining"
        if reassembly.finished:
            return "all chunks received"
        if reassembly.cycle_done:
            return "one full cycle"
        if reassembly.window_loss > max_loss:
            return f"loss {reassembly.window_loss:.0%} above {max_loss:.0%}"
    return "stopped"


class Keepalive:
    """Calls ``beat()`` every ``interval`` seconds on its own thread until ``stop()``; a failing beat is logged
    (the server forgets a silent listener; the carousel is only a shortcut)."""

    def __init__(self, beat: Callable[[], None], interval: float, *, name: str = "agent-keepalive") -> None:
        self._beat, self._interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Keepalive:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception as exc:
                log.warning("multicast keepalive failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
