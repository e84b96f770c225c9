"""The receiving socket: the plan's group joined on the interface that reaches the server, a 4 MiB receive
buffer (``SO_RCVBUFFORCE`` as root, past ``net.core.rmem_max``; else ``SO_RCVBUF`` as far as allowed), a short
timeout so the listener can notice silence, the membership sent again after a second of it (``Rejoin``); and the
kernel's count of datagrams it dropped for a full buffer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

RCVBUF = 4 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; the socket module does not name it
RECV_TIMEOUT = 0.5
REJOIN_AFTER = 1.0  # seconds of silence after which the membership report is sent again
DATAGRAM = 2048  # read size: a carousel datagram is at most 1440 bytes


def local_address(server: str) -> str:
    """The address of this host on the interface that reaches ``server`` (a URL): a UDP socket is connected
    (no packet is sent) and asked its own address. The group is joined there, so the live environment's
    interface to the imaging LAN takes the datagrams, whatever other interfaces it has."""
    parts = urlsplit(server)
    host = parts.hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, parts.port or 80))
        return str(probe.getsockname()[0])


def open_receiver(group: str, port: int, interface: str, *, rcvbuf: int = RCVBUF,
                  timeout: float = RECV_TIMEOUT) -> socket.socket:  # fmt: skip
    """A UDP socket bound to ``group``:``port`` (only that group's datagrams), member of the group on the
    interface whose address is ``interface``. OSError when the group cannot be joined."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # several agents on one host (tests, labs)
        _set_rcvbuf(sock, rcvbuf)
        sock.bind((group, port))
        membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        sock.settimeout(timeout)
    except OSError:
        sock.close()
        raise
    return sock


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    if os.geteuid() == 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
            return
        except OSError as exc:
            log.debug("SO_RCVBUFFORCE %d refused (%s); SO_RCVBUF instead", size, exc)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # the kernel reports twice what it keeps
    if got < size:
        log.warning("receive buffer %d bytes, not %d (net.core.rmem_max): expect loss at full rate", got, size)


class Rejoin:
    """When to send the membership again: after ``after`` seconds without a datagram, then every ``after`` seconds
    of silence. A snooping switch that missed the join report (or a querier that came up late) forwards nothing to
    this port until its next general query, 125 s by default; a report sent again gets the group back within a
    second, where the listener would otherwise give up after 5 s of silence and fetch everything by HTTP."""

    def __init__(self, after: float = REJOIN_AFTER, clock: Callable[[], float] = time.monotonic) -> None:
        self.after, self.clock = after, clock
        self.last = self.sent = clock()
        self.count = 0

    def heard(self) -> None:
        self.last = self.clock()

    def due(self) -> bool:
        """True (and counted) when the membership should be sent again now."""
        now = self.clock()
        if now - self.last < self.after or now - self.sent < self.after:
            return False
        self.sent = now
        self.count += 1
        return True


def rejoin(sock: socket.socket, group: str, interface: str) -> None:
    """Leave and join ``group`` again on ``interface``: the kernel sends a fresh membership report."""
    membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
    with contextlib.suppress(OSError):  # not a member any more (cannot happen here): the join below is what counts
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, membership)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)


def receive(sock: socket.socket) -> bytes | None:
    """One datagram, or None after the socket's timeout."""
    try:
        return sock.recv(DATAGRAM)
    except TimeoutError:
        return None


def socket_drops(fileno: int, proc: Path = Path("/proc")) -> int | None:
    """Datagrams the kernel dropped for the socket ``fileno`` (its buffer was full: the reader fell behind),
    from /proc/net/udp by the socket's inode; None when it cannot be read."""
    inode = str(os.fstat(fileno).st_ino)
    try:
        lines = (proc / "net" / "udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and fields[9] == inode:
            return int(fields[-1])
    return None
