"""A carousel sender for the agent's tests: the datagrams of an image version in carousel order
(``stream``), a receiver that hands out a list of them (``ListReceiver``, no socket), and a real UDP sender of
them on a multicast group (``CarouselSender``), with loss injected.

Both are built from the wire contract only (``provision.wire.carousel.pieces`` / ``encode``), not from the
server's sender, so the agent's receiver is tested against the contract.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from provision.wire.carousel import digest16, encode, pieces


def stream(
    frames: Sequence[bytes], digest: str, *, first: tuple[int, int] = (0, 0), chunks: int | None = None,
    drop: Callable[[int], bool] = lambda i: False, skip_offsets: int = 0,
) -> Iterator[bytes]:  # fmt: skip
    """Datagrams from chunk number ``first[1]`` of pass ``first[0]`` on, for ``chunks`` chunk positions (one
    pass by default), the ``skip_offsets`` first pieces of the first frame left out (a joiner arriving
    mid-frame); datagram ``i`` (counted from 0 over the whole stream) is left out when ``drop(i)``."""
    d16 = digest16(digest)
    pass_number, number = first
    i = 0
    for position in range(len(frames) if chunks is None else chunks):
        cut = pieces(frames[number], digest=d16, pass_number=pass_number, chunk=number)
        for piece in cut[skip_offsets if position == 0 else 0 :]:
            if not drop(i):
                yield encode(piece)
            i += 1
        number += 1
        if number == len(frames):
            number, pass_number = 0, pass_number + 1


class ListReceiver:
    """The datagrams of a list, then silence (the agent's ``multicast.source.Receiver``)."""

    def __init__(self, datagrams: Iterable[bytes]) -> None:
        self.datagrams = deque(datagrams)
        self.closed = False

    def recv(self) -> bytes | None:
        if self.datagrams:
            return self.datagrams.popleft()
        time.sleep(0.01)
        return None

    def drops(self) -> int | None:
        return 0

    def close(self) -> None:
        self.closed = True


class CarouselSender:
    """Sends ``frames`` in a loop to ``group``:``port`` from ``interface`` (TTL 1) at about ``rate`` bytes a
    second until ``stop()``; every ``drop_every``-th datagram is not sent (0: none)."""

    def __init__(self, frames: Sequence[bytes], digest: str, group: str, port: int, *, interface: str = "127.0.0.1",
                 rate: int = 20_000_000, drop_every: int = 0) -> None:  # fmt: skip
        self.frames, self.digest, self.target, self.rate, self.drop_every = (
            frames,
            digest,
            (group, port),
            rate,
            drop_every,
        )
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self.sent = self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-carousel", daemon=True)

    def start(self) -> CarouselSender:
        self._thread.start()
        return self

    def _run(self) -> None:
        started, sent_bytes, i, pass_number = time.monotonic(), 0, 0, 0
        while not self._stop.is_set():
            for datagram in stream(self.frames, self.digest, first=(pass_number, 0)):
                if self._stop.is_set():
                    return
                i += 1
                if self.drop_every and i % self.drop_every == 0:
                    self.dropped += 1
                    continue
                self.sock.sendto(datagram, self.target)
                self.sent += 1
                sent_bytes += len(datagram)
                ahead = sent_bytes / self.rate - (time.monotonic() - started)
                if ahead > 0.002:
                    time.sleep(ahead)
            pass_number += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sock.close()
