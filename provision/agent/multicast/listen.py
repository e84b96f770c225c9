"""The listening loop: datagrams in, events out, until one of the reasons to leave (``listen``), and the
keepalive timer (``Keepalive``). No socket of its own: ``recv`` returns a datagram or None after a short wait,
so the tests feed it from a list.

Reasons to leave, checked after every datagram and every silence:

- every chunk wanted is in (``all chunks received``);
- one full cycle since joining (``one full cycle``): the carousel is back where this agent started;
- the loss over the last window above ``max_loss`` (``loss N % above M %``): the link is bad, or this agent falls
  behind (its socket drops, or its writer holds too much: pieces over the memory bound count as lost);
- no datagram within ``join_timeout`` s of joining (``no multicast ...``): the group does not reach this PC;
- no datagram for ``idle_timeout`` s after some came (``the carousel stopped ...``): only pieces at or past the
  carousel's position count, so old datagrams sent again (a replay on the LAN) do not keep it listening;
- listening longer than ``longest`` s (``listening longer than ...``): the source gives two passes' time at
  the plan's rate, a bound whatever the datagrams say;
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
    clock: Callable[[], float] = time.monotonic, longest: float | None = None,
) -> str:  # fmt: skip
    """Feed ``reassembly`` from ``recv`` and ``emit`` what it completes; the reason it stopped."""
    joined = last = clock()
    stop = stop or threading.Event()
    while not stop.is_set():
        data = recv()
        now = clock()
        if longest is not None and now - joined > longest:
            return f"listening longer than {longest:.0f} s"
        if data is not None:
            counts = reassembly.counts
            kept = counts.datagrams - counts.late
            for event in reassembly.datagram(data):
                emit(event)
            if counts.datagrams - counts.late > kept:  # a piece at or past the carousel's position
                last = now
        # checked after every datagram too: others (another version's carousel on the same group, a replay,
        # forged ones) may keep coming after this carousel's have stopped
        if reassembly.start is None and now - joined >= timeouts.join:
            what = "datagram" if data is None and not reassembly.counts.dropped else "datagram of this version"
            return f"no multicast: no {what} within {timeouts.join:g} s of joining"
        if reassembly.start is not None and now - last >= timeouts.idle:
            return f"the carousel stopped: no datagram for {timeouts.idle:g} s"
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
