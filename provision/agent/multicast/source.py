"""The multicast chunk source (``MulticastSource``): what the writer's seam (``write_image(source=...)``) asks
for the chunks it needs, when the plan has ``multicast``.

Given the chunks the checking stage found wrong on disk, it opens the receiving socket, says ``join`` (then
``keepalive`` from a timer thread, at most ``plan.keepalive`` s apart), and listens on its own thread
(``listen``) while the writer's workers take each frame as it completes: decoded, checked, written at every
offset of its sha256 (``loads``). When it leaves (see ``listen``) it says ``leave`` with the reason, then hands
on the frames received in part (their missing ranges by HTTP Range) and every chunk still missing (whole, by
HTTP, as unicast). Any trouble with the group (no socket, the join refused, the chunk count not the plan's)
means HTTP for everything, and the reason is in the report. ``report()``: the run's ``TransferReport``.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, Protocol

from provision.agent.fetch import Fetcher
from provision.agent.index import Chunk, Index
from provision.agent.multicast.listen import Keepalive, Timeouts, listen
from provision.agent.multicast.loads import Load, Tally, http_load, ready_load, repair_load
from provision.agent.multicast.reassembly import Event, Limits, Ready, Reassembly, frame_bound
from provision.agent.multicast.receiver import Rejoin, local_address, open_receiver, receive, rejoin, socket_drops
from provision.wire.carousel import MulticastAnswer, MulticastCall, MulticastPlan, TransferReport, carousel_order
from provision.wire.carousel import digest16 as header_digest

log = logging.getLogger(__name__)


class MulticastApi(Protocol):
    def multicast(self, run: str, call: MulticastCall) -> MulticastAnswer: ...


class Receiver(Protocol):
    def recv(self) -> bytes | None: ...
    def drops(self) -> int | None: ...
    def close(self) -> None: ...


class UdpReceiver:
    """The real socket: the plan's group joined on the interface that reaches ``server``."""

    def __init__(self, plan: MulticastPlan, server: str, *, log_id: str = "") -> None:
        self.group, self.interface, self.log_id = plan.group, local_address(server), log_id
        self.sock: socket.socket = open_receiver(plan.group, plan.port, self.interface)
        self.rejoins = Rejoin()

    def recv(self) -> bytes | None:
        data = receive(self.sock)
        if data is not None:
            self.rejoins.heard()
        elif self.rejoins.due():
            silent = self.rejoins.clock() - self.rejoins.last
            log.info("[%s] multicast: no datagram for %.0f s: the membership of %s sent again on %s (%d)",
                     self.log_id, silent, self.group, self.interface, self.rejoins.count)  # fmt: skip
            rejoin(self.sock, self.group, self.interface)
        return data

    def drops(self) -> int | None:
        return socket_drops(self.sock.fileno())

    def close(self) -> None:
        self.sock.close()


class _End:
    pass


class MulticastSource:
    """One run's multicast source; call it once (the writer's first pass), then ``report()``; ``close()``
    leaves the group if the write stopped early."""

    def __init__(
        self, plan: MulticastPlan, index: Index, *, run: str, token: str, api: MulticastApi,
        open_receiver: Callable[[MulticastPlan], Receiver], limits: Limits | None = None,
        timeouts: Timeouts | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.plan, self.index, self.run, self.token, self.api = plan, index, run, token, api
        self.open, self.clock = open_receiver, clock
        self.limits, self.timeouts = limits or Limits(), timeouts or Timeouts()
        self.tally = Tally()
        self.reassembly: Reassembly | None = None
        self.left_because: str | None = None
        self.seconds = 0.0
        self.kernel_drops: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ready = 0
        self._ending: tuple[threading.Thread, Keepalive, Receiver, float] | None = None

    def __call__(self, needed: dict[str, list[Chunk]], fetcher: Fetcher) -> Iterator[tuple[list[Chunk], Load]]:
        order = carousel_order(self.index.chunks)
        if len(order) != self.plan.chunks or self.plan.digest != self.index.digest:
            self.left_because = (f"the plan's carousel ({self.plan.chunks} chunks of {self.plan.digest[:12]}) is "
                                 f"not this index ({len(order)} of {self.index.digest[:12]})")  # fmt: skip
            yield from self._http(needed.values(), fetcher)
            return
        wanted = {n: needed[sha] for n, sha in enumerate(order) if sha in needed}
        if not wanted:
            self.left_because = "nothing to fetch"
            return
        lengths = {c.sha256: c.length for c in self.index.data_chunks}
        reassembly = self.reassembly = Reassembly(order, [lengths[s] for s in order], wanted,
                                                  header_digest(self.plan.digest), self.limits)  # fmt: skip
        receiver = self._join()
        if receiver is None:
            yield from self._http(needed.values(), fetcher)
            return
        events: queue.SimpleQueue[Event | _End] = queue.SimpleQueue()
        listener = threading.Thread(target=self._listen, args=(receiver, reassembly, events, fetcher.cancel),
                                    name="agent-multicast", daemon=True)  # fmt: skip
        keepalive = Keepalive(lambda: self._call("keepalive"), max(1.0, self.plan.keepalive / 2))
        self._ending = (listener, keepalive, receiver, self.clock())
        try:  # from here every way out (a thread that cannot start too) stops both threads and leaves
            keepalive.start()
            listener.start()
            while not isinstance(event := events.get(), _End):
                yield wanted[event.number], self._load(event, wanted[event.number][0], fetcher, reassembly)
        finally:
            self.close()
        for repair in reassembly.leave():
            yield wanted[repair.number], self._load(repair, wanted[repair.number][0], fetcher, reassembly)
        rest = reassembly.remaining()
        log.info("[%s] multicast: %d chunks to fetch by HTTP after leaving", self.run, len(rest))
        yield from self._http((wanted[n] for n in rest), fetcher)

    def _http(self, groups: Iterable[list[Chunk]], fetcher: Fetcher) -> Iterator[tuple[list[Chunk], Load]]:
        for group in groups:
            yield group, http_load(group[0], fetcher, self.tally)

    def _load(self, event: Event, chunk: Chunk, fetcher: Fetcher, reassembly: Reassembly) -> Load:
        if isinstance(event, Ready):
            return ready_load(event, chunk, fetcher, self.tally, reassembly.release)
        return repair_load(event, chunk, fetcher, self.tally, reassembly.release)

    def _listen(
        self, receiver: Receiver, reassembly: Reassembly, events: queue.SimpleQueue[Event | _End],
        cancel: threading.Event,
    ) -> None:  # fmt: skip
        def recv() -> bytes | None:
            if cancel.is_set():  # the write is stopping (a worker failed): stop listening too
                self._stop.set()
            return receiver.recv()

        def emit(event: Event) -> None:
            if isinstance(event, Ready):
                self._ready += 1
            events.put(event)

        try:
            longest = 2 * sum(map(frame_bound, reassembly.lengths)) / self.plan.rate + self.timeouts.join
            self.left_because = listen(recv, reassembly, emit, max_loss=self.plan.max_loss, timeouts=self.timeouts,
                                       stop=self._stop, clock=self.clock, longest=longest)  # fmt: skip
        except Exception as exc:  # a bug in the receiver must not fail the run: the rest comes by HTTP
            log.exception("[%s] multicast receiver failed", self.run)
            self.left_because = f"receiver failed: {type(exc).__name__}: {exc}"[:200]
        finally:
            events.put(_End())

    def _join(self) -> Receiver | None:
        try:
            receiver = self.open(self.plan)
        except OSError as exc:
            self.left_because = f"cannot join {self.plan.group}:{self.plan.port}: {exc}"[:200]
            log.warning("[%s] multicast: %s; every chunk by HTTP", self.run, self.left_because)
            return None
        try:
            self.api.multicast(self.run, MulticastCall(self.token, "join"))
        except Exception as exc:
            receiver.close()
            self.left_because = f"join refused: {type(exc).__name__}: {exc}"[:200]
            log.warning("[%s] multicast: %s; every chunk by HTTP", self.run, self.left_because)
            return None
        log.info("[%s] multicast: joined %s:%d (%d chunks a pass, %d B/s)", self.run, self.plan.group,
                 self.plan.port, self.plan.chunks, self.plan.rate)  # fmt: skip
        return receiver

    def _call(self, event: Literal["join", "keepalive", "leave"], reason: str | None = None) -> None:
        counts = self.reassembly.counts if self.reassembly else None
        call = MulticastCall(self.token, event, self._ready, counts.payload if counts else 0, reason)
        self.api.multicast(self.run, call)

    def close(self) -> None:
        """Stop listening and say ``leave`` (once): when the listener ends, or the write stops early. Each step
        on its own: one that fails (a receiver whose drop count cannot be read ...) is logged, the others are
        done all the same, the leave always said."""
        self._stop.set()
        with self._lock:
            ending, self._ending = self._ending, None
        if ending is None:
            return
        listener, keepalive, receiver, started = ending
        try:
            self._step("stop the listener", lambda: _end(listener))
            self._step("stop the keepalive", keepalive.stop)
            self._step("read the kernel's drop count", lambda: self._drops(receiver))
            self._step("close the socket", receiver.close)
        finally:
            self.seconds = self.clock() - started
            self._leave()

    def _step(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # the rest of close still runs
            log.warning("[%s] multicast close: cannot %s: %s: %s", self.run, what, type(exc).__name__, exc)

    def _drops(self, receiver: Receiver) -> None:
        self.kernel_drops = receiver.drops()

    def _leave(self) -> None:
        reason = self.left_because or "stopped"
        counts = self.reassembly.counts if self.reassembly else None
        if counts is not None:
            log.info("[%s] multicast: left (%s) after %.1f s: %d datagrams kept, %d lost of %d, %d dropped, "
                     "kernel drops %s", self.run, reason, self.seconds, counts.datagrams, counts.lost,
                     counts.expected, counts.dropped, self.kernel_drops)  # fmt: skip
        try:
            self._call("leave", reason[:200])
        except Exception as exc:
            log.warning("[%s] multicast leave failed: %s: %s", self.run, type(exc).__name__, exc)

    def report(self) -> TransferReport:
        t, counts = self.tally, self.reassembly.counts if self.reassembly else None
        return TransferReport(
            "multicast", bytes_multicast=t.bytes_multicast, bytes_http=t.bytes_http, repair_bytes=t.repair_bytes,
            chunks_multicast=t.chunks_multicast, chunks_http=t.chunks_http,
            datagrams=counts.datagrams if counts else 0, datagrams_lost=counts.lost if counts else 0,
            datagrams_dropped=counts.dropped if counts else 0, seconds_listening=round(self.seconds, 3),
            left_because=(self.left_because or None) and self.left_because[:200],
        )  # fmt: skip


def _end(listener: threading.Thread) -> None:
    """Wait for the listener thread, if it started (and is not the caller)."""
    if listener.ident is not None and listener is not threading.current_thread():
        listener.join()
