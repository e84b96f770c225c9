"""How many transfers the TFTP service runs at once, and how long one waits for its first ACK.

Every transfer holds a socket, and a file unless its content is rendered; a client that never ACKs must not
hold them for long, nor keep a real PC out (issue 12, defect 8: 600 unacknowledged RRQs held 512 transfers
and 1,038 descriptors, and a real PC was told "server busy" for 13 s). So:

- A transfer waits `FIRST_ACK_TIMEOUT` (1 s, or the client's shorter timeout option) for its first ACK, and
  is resent at most `FIRST_ACK_RETRIES` times before that ACK: ~3 s, not the 12 s a running transfer gets
  (a PXE ROM ACKs within milliseconds; it also repeats its RRQ itself).
- One client address may have `MAX_UNACKED_PER_CLIENT` transfers waiting for a first ACK and
  `MAX_PER_CLIENT` transfers in all. A request beyond that waits (`Waiting`: no socket, no file) until one of
  them is acknowledged or ends, as a burst of clients behind one address (bench/burst) needs; a request that
  waited `WAIT_AGE` is forgotten (its client has repeated it, or given up), and when the waiting room is full
  a request is dropped unanswered (a real client repeats it; an answer would only feed a flood).
- All clients together may have `MAX_UNACKED` transfers waiting for a first ACK: a new request beyond that
  ends the oldest of them, silently (from spoofed addresses, nobody is waiting for it). Of `MAX_TRANSFERS`,
  only acknowledged ones make a newcomer "server busy".

So a flood from one address holds at most 8 transfers (16 descriptors), a flood from many addresses at most
128 (256 descriptors) for at most ~3 s each, and a real client is served as soon as its RRQ is read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

MAX_TRANSFERS = 512  # concurrent transfers; each holds a socket and an open file
MAX_UNACKED = 128  # transfers waiting for their first ACK, all clients together
MAX_UNACKED_PER_CLIENT = 8  # ... of one client address
MAX_PER_CLIENT = MAX_TRANSFERS // 2  # transfers of one client address in all
MAX_WAITING_PER_CLIENT = 256  # requests of one address waiting for its share
MAX_WAITING = 1024  # ... of all addresses
WAIT_AGE = 2.0  # seconds a request may wait; then its client has repeated it or given up
FIRST_ACK_TIMEOUT = 1.0  # seconds before the first DATA (or the OACK) is resent
FIRST_ACK_RETRIES = 2  # resends before the first ACK; then the transfer ends


class Transfer(Protocol):
    """What admission needs to know of a running transfer."""

    @property
    def client(self) -> tuple[str, int]: ...

    @property
    def acked(self) -> bool: ...


T = TypeVar("T", bound=Transfer)
R = TypeVar("R")


@dataclass(frozen=True)
class Admission(Generic[T]):
    """The verdict on a new request: drop it (`drop` says why), answer "server busy", or serve it after
    ending `evict` (the oldest transfer still waiting for its first ACK), if any."""

    drop: str | None = None
    busy: bool = False
    evict: T | None = None

    @property
    def free(self) -> bool:
        """Room without ending anything (what a waiting request needs)."""
        return self.drop is None and not self.busy and self.evict is None


def admit(transfers: Iterable[T], client_ip: str) -> Admission[T]:
    """Room for a new request from `client_ip`, given the running `transfers` (oldest first)."""
    total = waiting = mine = mine_waiting = 0
    oldest_waiting: T | None = None
    for transfer in transfers:
        total += 1
        ours = transfer.client[0] == client_ip
        mine += ours
        if not transfer.acked:
            waiting += 1
            mine_waiting += ours
            if oldest_waiting is None:
                oldest_waiting = transfer
    if mine_waiting >= MAX_UNACKED_PER_CLIENT:
        return Admission(drop=f"{mine_waiting} transfers of this address wait for a first ACK")
    if mine >= MAX_PER_CLIENT:
        return Admission(drop=f"{mine} transfers of this address running")
    if total >= MAX_TRANSFERS or waiting >= MAX_UNACKED:
        return Admission(busy=True) if oldest_waiting is None else Admission(evict=oldest_waiting)
    return Admission()


class Waiting(Generic[R]):
    """Requests waiting for their address's share of transfers, oldest first per address; one per client
    port (a repeated request refreshes it). Bounded per address and in all."""

    def __init__(
        self, per_client: int = MAX_WAITING_PER_CLIENT, total: int = MAX_WAITING, max_age: float = WAIT_AGE
    ) -> None:
        self.per_client, self.total, self.max_age = per_client, total, max_age
        self._by_ip: dict[str, OrderedDict[int, tuple[R, float]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, client: tuple[str, int], request: R, now: float) -> bool:
        """Let `request` from `client` wait; False when there is no room (drop it)."""
        ip, port = client
        self._expire(ip, now)
        queue = self._by_ip.get(ip)
        if queue is not None and port in queue:
            queue[port] = (request, now)  # repeated: still waiting, in its place
            return True
        if (queue is not None and len(queue) >= self.per_client) or self._count >= self.total:
            return False
        self._by_ip.setdefault(ip, OrderedDict())[port] = (request, now)
        self._count += 1
        return True

    def pop(self, ip: str, now: float) -> tuple[tuple[str, int], R] | None:
        """The oldest request of `ip` that has not waited too long, else None."""
        queue = self._by_ip.get(ip)
        found = None
        while queue and found is None:
            port, (request, since) = queue.popitem(last=False)
            self._count -= 1
            if now - since <= self.max_age:
                found = (ip, port), request
        if queue is not None and not queue:
            del self._by_ip[ip]
        return found

    def _expire(self, ip: str, now: float) -> None:
        """Forget the stale requests at the front of `ip`'s queue (memory stays bounded by the limits)."""
        queue = self._by_ip.get(ip)
        while queue and now - next(iter(queue.values()))[1] > self.max_age:
            queue.popitem(last=False)
            self._count -= 1
        if queue is not None and not queue:
            del self._by_ip[ip]


def first_ack_wait(timeout: float) -> float:
    """Seconds to wait for the first ACK, given the transfer's resend timeout."""
    return min(timeout, FIRST_ACK_TIMEOUT)


class Throttle:
    """At most `limit` events per `window` seconds (keeps a flood out of the log at WARNING)."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._start, self._count = float("-inf"), 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._start > self.window:
            self._start, self._count = now, 0
        self._count += 1
        return self._count <= self.limit
