"""One image version's carousel sender: its stored zstd frames, in ``carousel_order``, cut into datagrams
(``provision.wire.carousel``), multicast in a loop to the version's group, paced to the configured rate.

The socket: TTL 1 (the imaging LAN only), ``IP_MULTICAST_IF`` the server's address and ``SO_BINDTODEVICE``
the serve interface when there is one, ``IP_MULTICAST_LOOP`` on (a receiver on the server itself, the tests).
The datagrams of a frame go out in batches with UDP GSO (``UDP_SEGMENT``: one ``sendmsg`` of up to 45
datagrams of one size, the last one shorter), which cuts the sender's CPU to a few percent; a kernel or device
that refuses it (EINVAL, EIO, ENOPROTOOPT ...) is detected on the first batch, logged once, and every datagram
is then sent alone.

With an ``Egress`` (the serve interface's byte counter), the sender paces to its rate less what else the server
sends on that link over the last second (HTTP to agents that left or never joined, TFTP ...), never below half of
it: the link's queue then holds both, where a full one drops datagrams for every listener alike.

The sender runs in its own thread; ``pause`` keeps its position (pass, chunk, piece) and ``resume`` goes on
from there, so a newcomer starts mid-loop; ``stop`` is prompt (the pacing sleeps wait on the stop event). A
chunk that cannot be read (missing, recorded bad) is skipped and logged: agents fetch it by HTTP.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provision.errors import ProvisionError
from provision.multicast.egress import Egress
from provision.multicast.pacing import Pacer
from provision.wire.carousel import digest16, encode, pieces

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: the GSO segment size of a send
GSO_MAX_BYTES = 65000  # one GSO send stays under the 64 KiB of a UDP datagram before segmentation
GSO_REFUSED = {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
SNDBUF = 4 << 20
EGRESS_EVERY = 0.1  # seconds between two looks at the interface's other traffic
EGRESS_LOG_EVERY = 10.0  # seconds between two log lines about it
BEHIND_WARNING = 0.5  # seconds of its rate a carousel gave up (pacing.Pacer.behind) worth a warning
ReadFrame = Callable[[str], bytes]  # chunk sha256 -> its stored frame (raises OSError / ImageError)


@dataclass(frozen=True)
class Target:
    """Where a carousel sends: ``group:port``, out of ``address`` (IP_MULTICAST_IF) / ``device``."""

    group: str
    port: int
    address: str | None = None
    device: str | None = None


@dataclass
class SenderStats:
    datagrams: int = 0
    bytes: int = 0  # datagram bytes (headers included) handed to the kernel
    passes: int = 0  # whole passes completed
    dropped: int = 0  # datagrams the kernel refused (ENOBUFS ...): lost, as on the wire
    skipped_chunks: int = 0  # chunks that could not be read
    gso: bool | None = None  # None: not tried yet


def open_socket(target: Target) -> socket.socket:
    """The UDP socket of a carousel, connected to its group. An address or device the host lacks is logged
    and left to the routing table (the sender still runs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        if target.address is not None:
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(target.address))
            except OSError as exc:
                log.warning("multicast to %s: IP_MULTICAST_IF %s refused (%s): the routing table chooses",
                            target.group, target.address, exc.strerror)  # fmt: skip
        if target.device is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, target.device.encode())
            except OSError as exc:
                log.warning("multicast to %s: SO_BINDTODEVICE %s refused (%s)", target.group, target.device,
                            exc.strerror)  # fmt: skip
        sock.connect((target.group, target.port))
    except BaseException:
        sock.close()
        raise
    return sock


def batches(datagrams: Sequence[bytes]) -> list[list[bytes]]:
    """``datagrams`` (of one frame, in order: all of one size but the last) in GSO batches."""
    if not datagrams:
        return []
    per = max(1, GSO_MAX_BYTES // len(datagrams[0]))
    return [list(datagrams[i : i + per]) for i in range(0, len(datagrams), per)]


class Sender:
    """The carousel of one version (``digest``): ``order`` is ``carousel_order`` of its index."""

    def __init__(
        self,
        digest: str,
        order: Sequence[str],
        read_frame: ReadFrame,
        target: Target,
        rate: int,
        *,
        gso: bool = True,
        opener: Callable[[Target], socket.socket] = open_socket,
        egress: Egress | None = None,
    ) -> None:
        self.digest = digest
        self.order = list(order)
        self.read_frame = read_frame
        self.target = target
        self.stats = SenderStats()
        self.position = (0, 0)  # (pass number, chunk number) being sent
        self._want_gso = gso
        self._opener = opener
        self._stop = threading.Event()
        self._go = threading.Event()  # set: sending; clear: paused
        self._pacer = Pacer(rate, sleep=self._stop.wait)
        self.rate = rate
        self._egress = egress  # the interface's other traffic, made room for (provision.multicast.egress)
        self._checked = 0.0  # when the pace was last set from it
        self.yielding = False
        self._said = -EGRESS_LOG_EVERY  # when a change of pace was last logged
        self._thread: threading.Thread | None = None
        self._state = threading.Lock()  # the thread's start and its end on a failure (a resume may come meanwhile)
        self.failures = 0  # times the thread ended on an unexpected error (restarted by the next resume)
        self._sock: socket.socket | None = None
        self._d16 = digest16(digest)

    @property
    def sending(self) -> bool:
        return self._go.is_set() and not self._stop.is_set()

    def resume(self) -> None:
        """Send (the thread starts on the first call), from where it paused. A socket the host refuses (no
        route to the group ...) is logged and the carousel does not send; the next call tries again."""
        if self._stop.is_set():
            return
        if self._sock is None:
            try:
                self._sock = self._opener(self.target)
            except OSError as exc:
                log.error("carousel %s: cannot send to %s:%d: %s", self.digest[:12], self.target.group,
                          self.target.port, exc.strerror or exc)  # fmt: skip
                return
        # every join and keepalive comes here: only a paused (or new) carousel's pacer forgets the past, a
        # reset while sending would let each call's batch out early (over the rate, racing the thread)
        with self._state:
            if not self._go.is_set():
                log.info("carousel %s: sending to %s:%d from pass %d chunk %d of %d", self.digest[:12],
                         self.target.group, self.target.port, *self.position, len(self.order))  # fmt: skip
                self._pacer.reset()
                if self._egress is not None:
                    self._egress.reset()
                    self._pacer.set_rate(self.rate)
            self._go.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"carousel-{self.digest[:12]}", daemon=True)
                self._thread.start()

    def pause(self) -> None:
        """Stop sending after the datagrams in hand; the position is kept."""
        if self._go.is_set():
            behind = self._pacer.behind
            if behind >= BEHIND_WARNING:
                log.warning("carousel %s: paused at pass %d chunk %d; it fell %.1f s behind its rate of %d B/s since "
                            "it started (the host too busy, or the chunks' disk too slow)", self.digest[:12],
                            *self.position, behind, self.rate)  # fmt: skip
            else:
                log.info("carousel %s: paused at pass %d chunk %d", self.digest[:12], *self.position)
        self._go.clear()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (promptly: sleeps and pauses wait on the stop event) and close the socket."""
        self._stop.set()
        self._go.set()  # wake a paused thread so it sees the stop
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ----------------------------------------------------------------------------------------- the loop
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._go.wait()
                if self._stop.is_set():
                    return
                self._send_chunk()
        except Exception:  # logged once, never silent; agents go on by HTTP until the next resume restarts it
            self._failed()

    def _failed(self) -> None:
        """The thread ends on an unexpected error: not sending, no thread, the chunk it was at skipped (a chunk
        that fails each time must not stop the carousel for good); the next join or keepalive starts it again."""
        with self._state:
            self.failures += 1
            pass_number, chunk = self.position
            log.exception("carousel %s (version %s): sender failed at pass %d chunk %d (failure %d): paused until "
                          "the next join or keepalive", self.digest[:12], self.digest, pass_number, chunk,
                          self.failures)  # fmt: skip
            chunk += 1
            if chunk >= len(self.order):
                chunk, pass_number = 0, pass_number + 1
            self.position = (pass_number, chunk)
            self._go.clear()
            self._thread = None

    def _send_chunk(self) -> None:
        pass_number, chunk = self.position
        sha = self.order[chunk]
        try:
            frame = self.read_frame(sha)
        except (OSError, ProvisionError) as exc:  # missing, recorded bad, unreadable: HTTP brings it
            self.stats.skipped_chunks += 1
            log.warning("carousel %s: chunk %d (%s) skipped: %s", self.digest[:12], chunk, sha[:12], exc)
            frame = None
        if frame:
            cut = pieces(frame, digest=self._d16, pass_number=pass_number, chunk=chunk)
            for batch in batches([encode(p) for p in cut]):
                if not self._go.is_set():
                    self._go.wait()  # paused mid-frame: go on from this batch
                if self._stop.is_set():
                    return
                self._make_room()
                self._pacer.wait(sum(map(len, batch)))
                self._send(batch)
        chunk += 1
        if chunk == len(self.order):
            chunk, pass_number = 0, pass_number + 1
            self.stats.passes += 1
        self.position = (pass_number, chunk)

    def _make_room(self) -> None:
        """Every ``EGRESS_EVERY`` s: pace to the rate less the interface's other traffic (``Egress``)."""
        egress = self._egress
        now = time.monotonic()
        if egress is None or now - self._checked < EGRESS_EVERY:
            return
        self._checked = now
        paced = egress.pace(self.stats.bytes, self.stats.datagrams)
        self._pacer.set_rate(paced)
        yielding = paced < self.rate
        if yielding != self.yielding and now - self._said >= EGRESS_LOG_EVERY:  # a line per change, at most
            self.yielding, self._said = yielding, now
            if yielding:
                log.info("carousel %s: making room for %.1f MB/s of other traffic on the link: paced at %.1f of %.1f "
                         "MB/s", self.digest[:12], egress.other / 1e6, paced / 1e6, self.rate / 1e6)  # fmt: skip
            else:
                log.info("carousel %s: back to its rate of %.1f MB/s", self.digest[:12], self.rate / 1e6)

    def _send(self, batch: list[bytes]) -> None:
        sock = self._sock
        assert sock is not None
        if self._want_gso and self.stats.gso is not False and len(batch) > 1:
            size = len(batch[0])
            try:
                sock.sendmsg([b"".join(batch)], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))])
            except OSError as exc:
                if exc.errno not in GSO_REFUSED or self.stats.gso:
                    self._count_failure(exc, len(batch))
                    return
                self.stats.gso = False
                log.info("carousel %s: UDP GSO refused (%s): one send per datagram", self.digest[:12],
                         exc.strerror or exc)  # fmt: skip
            else:
                if self.stats.gso is None:
                    log.info("carousel %s: UDP GSO on (%d datagrams per send)", self.digest[:12], len(batch))
                self.stats.gso = True
                self._count(batch)
                return
        for datagram in batch:
            try:
                sock.send(datagram)
            except OSError as exc:
                self._count_failure(exc, 1)
            else:
                self._count([datagram])

    def _count(self, batch: list[bytes]) -> None:
        self.stats.datagrams += len(batch)
        self.stats.bytes += sum(map(len, batch))

    def _count_failure(self, exc: OSError, datagrams: int) -> None:
        self.stats.dropped += datagrams
        if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED):
            log.warning("carousel %s: send failed: %s", self.digest[:12], os.strerror(exc.errno or 0))
