"""The carousels and who listens to them: one carousel per image version digest, its listeners by run id.

An agent ``join``s (its carousel is made on the first join of its version and starts sending), says
``keepalive`` at least every ``keepalive`` seconds, and ``leave``s. A listener not heard from for
``EXPIRY`` keepalives (a PC switched off, an agent killed) is dropped by ``expire`` (called at each call and
by a reaper thread every keepalive). A carousel sends while it has listeners and pauses, keeping its
position, when the last one goes (and is stopped, its thread ended, after ``IDLE_STOP`` seconds without one);
a keepalive of a run that is not listening (dropped, or the server restarted) joins it again. Every change
is logged with the run id and the MAC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from provision.logcontext import bound
from provision.wire.carousel import MulticastPlan

log = logging.getLogger(__name__)

EXPIRY = 3  # keepalive periods without a word after which a listener is dropped
IDLE_STOP = 600.0  # seconds a carousel without listeners keeps its thread (and position) before it is stopped


class SenderLike(Protocol):
    """What a carousel's sender does (``provision.multicast.sender.Sender``; tests use a fake)."""

    @property
    def sending(self) -> bool: ...

    def resume(self) -> None: ...

    def pause(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


MakeSender = Callable[[MulticastPlan], SenderLike]


@dataclass
class Listener:
    run: str
    mac: str | None
    joined: float
    seen: float
    chunks_done: int = 0
    bytes_received: int = 0


@dataclass
class Carousel:
    plan: MulticastPlan
    sender: SenderLike
    listeners: dict[str, Listener] = field(default_factory=dict)
    idle_since: float | None = None  # when its last listener went


@dataclass(frozen=True)
class Status:
    """What a call's answer says: whether the run's carousel sends, and how many listen to it."""

    sending: bool
    listeners: int


class Sessions:
    """Every carousel of the server. Thread-safe (the web handlers call from worker threads)."""

    def __init__(
        self, make_sender: MakeSender, *, clock: Callable[[], float] = time.monotonic, reaper: bool = True
    ) -> None:
        self.make_sender = make_sender
        self.clock = clock
        self._carousels: dict[str, Carousel] = {}  # by version digest
        self._runs: dict[str, str] = {}  # run id -> digest of the carousel it listens to
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None
        self._use_reaper = reaper
        self._period = 10.0

    # ------------------------------------------------------------------------------------------ calls
    def join(self, run: str, mac: str | None, plan: MulticastPlan) -> Status:
        """``run`` listens to ``plan``'s carousel (made and started if need be); again: a keepalive. After
        ``close`` (a call still in flight as the server stops) nothing is made: not sending."""
        with self._lock:
            if self._closed.is_set():
                return Status(False, 0)
            _dropped, idle = self._expire_locked()
            status = self._join_locked(run, mac, plan)
        _stop(idle)
        return status

    def _join_locked(self, run: str, mac: str | None, plan: MulticastPlan) -> Status:
        now = self.clock()
        carousel = self._carousels.get(plan.digest)
        if carousel is None:
            carousel = Carousel(plan, self.make_sender(plan))
            self._carousels[plan.digest] = carousel
        listener = carousel.listeners.get(run)
        if listener is None:
            self._drop_other(run, plan.digest)
            carousel.listeners[run] = Listener(run, mac, now, now)
            self._runs[run] = plan.digest
            with bound(run=run, mac=mac):
                log.info("%s: run %s joins carousel %s (%s:%d): %d listening", mac, run, plan.digest[:12],
                         plan.group, plan.port, len(carousel.listeners))  # fmt: skip
        else:
            listener.seen = now
        carousel.idle_since = None
        carousel.sender.resume()
        self._start_reaper(plan.keepalive)
        return Status(carousel.sender.sending, len(carousel.listeners))

    def keepalive(self, run: str, mac: str | None, plan: MulticastPlan, chunks_done: int, received: int) -> Status:
        """``run`` still listens (joined again if it was dropped); its figures so far are kept."""
        status = self.join(run, mac, plan)
        with self._lock:
            listener = self._listener(run)
            if listener is not None:
                listener.chunks_done, listener.bytes_received = chunks_done, received
        return status

    def leave(self, run: str, reason: str | None = None) -> Status:
        """``run`` stops listening (nothing if it was not); its carousel pauses when it was the last."""
        with self._lock:
            _dropped, idle = self._expire_locked()
            status = self._leave_locked(run, reason)
        _stop(idle)
        return status

    def _leave_locked(self, run: str, reason: str | None) -> Status:
        digest = self._runs.get(run)
        if digest is None:
            return Status(False, 0)
        carousel = self._carousels[digest]
        listener = carousel.listeners[run]
        with bound(run=run, mac=listener.mac):
            log.info("%s: run %s leaves carousel %s after %.0f s: %s", listener.mac, run, digest[:12],
                     self.clock() - listener.joined, reason or "no reason given")  # fmt: skip
        self._remove(carousel, run)
        return Status(False, len(carousel.listeners))

    def expire(self) -> list[str]:
        """Drop the listeners not heard from for ``EXPIRY`` keepalives (the runs dropped), and stop the carousels
        idle for ``IDLE_STOP`` seconds (after the lock is released: a stop waits for the sender's thread)."""
        with self._lock:
            dropped, idle = self._expire_locked()
        _stop(idle)
        return dropped

    def status(self, digest: str) -> Status | None:
        with self._lock:
            carousel = self._carousels.get(digest)
            return None if carousel is None else Status(carousel.sender.sending, len(carousel.listeners))

    def listening(self, run: str) -> bool:
        with self._lock:
            return run in self._runs

    def close(self) -> None:
        """Stop every carousel and the reaper (the server stops)."""
        self._closed.set()
        with self._lock:
            carousels = list(self._carousels.values())
            self._carousels.clear()
            self._runs.clear()
        _stop(carousels)
        if self._reaper is not None:
            self._reaper.join(5.0)

    # ---------------------------------------------------------------------------------------- insides
    def _listener(self, run: str) -> Listener | None:
        digest = self._runs.get(run)
        return None if digest is None else self._carousels[digest].listeners.get(run)

    def _drop_other(self, run: str, digest: str) -> None:
        """A run listens to one carousel: a join of another version leaves the first."""
        other = self._runs.get(run)
        if other is not None and other != digest:
            self._remove(self._carousels[other], run)

    def _remove(self, carousel: Carousel, run: str) -> None:
        carousel.listeners.pop(run, None)
        self._runs.pop(run, None)
        if not carousel.listeners:
            carousel.sender.pause()
            carousel.idle_since = self.clock()

    def _expire_locked(self) -> tuple[list[str], list[Carousel]]:
        """The runs dropped, and the idle carousels taken out of the registry: the caller stops them once the
        lock is released (a sender's stop waits up to 5 s for its thread: every call would wait with it)."""
        now = self.clock()
        dropped, idle = [], []
        for carousel in self._carousels.values():
            limit = EXPIRY * carousel.plan.keepalive
            late = [x for x in carousel.listeners.values() if now - x.seen > limit]
            for listener in late:
                with bound(run=listener.run, mac=listener.mac):
                    log.warning("%s: run %s dropped from carousel %s: no keepalive for %.0f s (limit %d s)",
                                listener.mac, listener.run, carousel.plan.digest[:12], now - listener.seen,
                                limit)  # fmt: skip
                self._remove(carousel, listener.run)
                dropped.append(listener.run)
        for digest, carousel in list(self._carousels.items()):
            if carousel.idle_since is not None and now - carousel.idle_since > IDLE_STOP:
                log.info("carousel %s stopped: no listener for %.0f s", digest[:12], now - carousel.idle_since)
                idle.append(carousel)
                del self._carousels[digest]
        return dropped, idle

    def _start_reaper(self, keepalive: int) -> None:
        self._period = min(self._period, float(keepalive))
        if self._use_reaper and self._reaper is None and not self._closed.is_set():
            self._reaper = threading.Thread(target=self._reap, name="carousel-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while not self._closed.wait(self._period):
            try:
                self.expire()
            except Exception:  # the reaper must live: a failure is logged, the next period tries again
                log.exception("carousel reaper failed")


def _stop(carousels: list[Carousel]) -> None:
    """Stop the senders of ``carousels`` (taken out of the registry), outside the lock; one that fails is logged."""
    for carousel in carousels:
        try:
            carousel.sender.stop()
        except Exception:  # the others are stopped all the same
            log.exception("carousel %s: stop failed", carousel.plan.digest[:12])
