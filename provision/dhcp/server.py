"""The DHCP server: proxyDHCP (default), full DHCP for the imaging LAN, or off.

One thread runs a select loop over two UDP sockets: the DHCP port (67) and the PXE port (4011). Every
datagram goes to `DhcpResponder.handle_packet` (`provision.dhcp.answers`), which never raises and says
where each reply goes; this module owns the sockets, the thread, and the lease table's saving.
A bind failure raises `DhcpBindError` from `start()`; if the loop itself dies, `on_failure` is called.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType

from provision.dhcp.answers import Channel, DhcpMode, DhcpResponder, Reply
from provision.dhcp.holds import DECLINE_HOLD, OFFER_HOLD
from provision.dhcp.leases import SAVE_INTERVAL, LeasePool, LeaseTable
from provision.dhcp.policy import DhcpSettingsError, PxeSettings
from provision.errors import FatalError

log = logging.getLogger(__name__)


class DhcpBindError(FatalError):
    """A DHCP socket cannot be opened; carries the port and interface."""

    def __init__(self, message: str, *, port: int, interface: str | None) -> None:
        super().__init__(message, port=port, interface=interface)
        self.port = port
        self.interface = interface


def _bind_error(exc: OSError, where: str, port: int, interface: str | None) -> DhcpBindError:
    if exc.errno == errno.EADDRINUSE:
        hint = "already in use (another DHCP server, e.g. dnsmasq, running?)"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "permission denied (port 67 and SO_BINDTODEVICE need root)"
    elif exc.errno == errno.ENODEV:
        hint = f"no network interface {interface!r}"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "the address is not on this machine"
    else:
        hint = exc.strerror or str(exc)
    return DhcpBindError(f"dhcp: cannot listen on {where}: {hint}", port=port, interface=interface)


RECEIVE_BUFFER = 4 << 20


def _grow_receive_buffer(sock: socket.socket) -> None:
    """A rack of PCs powered on together bursts DISCOVERs: the default ~208 KiB buffer overflowed at 150
    clients (bench/boot_burst.py). SO_RCVBUFFORCE passes net.core.rmem_max as root; else ask what we may."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
            return
        except OSError:
            continue


class DhcpServer:
    """Answers DHCP and PXE requests from a thread; `start()` binds (errors raise), `stop()` joins.

    `port`/`proxy_port` are the bound ports once started (0 asks the kernel for free ones, for tests).
    `interface` confines both sockets to one NIC with SO_BINDTODEVICE (root); without it, full mode would
    answer on every interface, which is logged as a warning. `offer_hold` and `decline_hold` (seconds, full
    mode) are how long an unconfirmed offer and a declined address keep an address from others.
    """

    def __init__(
        self,
        settings: PxeSettings,
        mode: DhcpMode | str = DhcpMode.PROXY,
        *,
        bind: IPv4Address | str = "0.0.0.0",  # nosec B104  # noqa: S104 - confined by `interface` in production
        interface: str | None = None,
        port: int = 67,
        pxe_port: int = 4011,
        pool: LeasePool | None = None,
        lease_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[str], None] | None = None,
        offer_hold: float = OFFER_HOLD,
        decline_hold: float = DECLINE_HOLD,
    ) -> None:
        try:
            dhcp_mode = DhcpMode(str(mode))
        except ValueError:
            raise DhcpSettingsError("mode", f"{mode!r} is not proxy, full or off") from None
        try:
            self.bind = IPv4Address(str(bind))
        except ValueError:
            raise DhcpSettingsError("bind", f"{bind!r} is not an IPv4 address") from None
        self.interface = interface
        self._ports = (port, pxe_port)
        self.on_failure = on_failure
        leases: LeaseTable | None = None
        if dhcp_mode is DhcpMode.FULL:
            if pool is None:
                raise DhcpSettingsError("range", "full DHCP mode needs an address range (a LeasePool)")
            reserved = [settings.server_ip] + ([pool.router] if pool.router else [])
            leases = LeaseTable(
                pool,
                lease_file,
                reserved=reserved,
                clock=clock,
                write_behind=True,
                offer_hold=offer_hold,
                decline_hold=decline_hold,
            )
            if settings.server_ip not in pool.network:
                log.warning("dhcp: server address %s is outside the lease network %s", settings.server_ip, pool.network)
        self.responder = DhcpResponder(settings, dhcp_mode, leases)
        self._sockets: dict[Channel, socket.socket] = {}
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------------ what it answers
    @property
    def mode(self) -> DhcpMode:
        return self.responder.mode

    @property
    def settings(self) -> PxeSettings:
        return self.responder.settings

    @property
    def leases(self) -> LeaseTable | None:
        """The lease table in full mode (saved by this server's thread and at stop), else None."""
        return self.responder.leases

    @property
    def stats(self) -> dict[str, int]:
        """Counts by event: received, malformed, errors, ignored, offers, acks, ... sent, send_errors."""
        return self.responder.stats

    def handle_packet(self, data: bytes, source: tuple[str, int], channel: Channel = Channel.DHCP) -> list[Reply]:
        """The replies to one received datagram. Never raises: failures are logged, counted and dropped."""
        return self.responder.handle_packet(data, source, channel)

    # --------------------------------------------------------------------------------- lifecycle
    def _bound(self, channel: Channel, configured: int) -> int:
        sock = self._sockets.get(channel)
        if sock is None:
            return configured
        try:
            return int(sock.getsockname()[1])
        except OSError:  # closed under us
            return configured

    @property
    def port(self) -> int:
        """The DHCP port (67), as bound once started."""
        return self._bound(Channel.DHCP, self._ports[0])

    @property
    def proxy_port(self) -> int:
        """The PXE port (4011), as bound once started."""
        return self._bound(Channel.PXE, self._ports[1])

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _open(self, port: int) -> socket.socket:
        where = f"UDP {self.bind}:{port}" + (f" on {self.interface}" if self.interface else "")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            _grow_receive_buffer(sock)
            if self.interface:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode() + b"\0")
            sock.bind((str(self.bind), port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise _bind_error(exc, where, port, self.interface) from None
        return sock

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.mode is DhcpMode.OFF:
            log.info("dhcp: off")
            return
        if self._ports[0] and self._ports[0] == self._ports[1]:
            raise DhcpSettingsError("ports", f"DHCP and PXE ports are both {self._ports[0]}")
        try:
            self._sockets[Channel.DHCP] = self._open(self._ports[0])
            self._sockets[Channel.PXE] = self._open(self._ports[1])
        except BaseException:
            self._close()
            raise
        self._wake = socket.socketpair()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="dhcp", daemon=True)
        self._thread.start()
        if self.mode is DhcpMode.FULL and not self.interface and self.bind.is_unspecified:
            log.warning("dhcp: full DHCP mode without an interface answers on every interface of this machine")
        log.info(
            "dhcp: %s mode on %s%s, ports %d/%d",
            self.mode.value,
            self.bind,
            f" ({self.interface})" if self.interface else "",
            self.port,
            self.proxy_port,
        )

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        thread.join(timeout=5.0)
        if thread.is_alive():
            log.warning("dhcp: the server thread did not stop within 5 s")
        self._thread = None
        self._close()
        if self.leases is not None:
            self.leases.flush(force=True)
        log.info("dhcp: stopped")

    def _close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        if self._wake is not None:
            for sock in self._wake:
                sock.close()
            self._wake = None

    def __enter__(self) -> DhcpServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake[0]
        channels = {sock: channel for channel, sock in self._sockets.items()}
        try:
            while not self._stopping.is_set():
                pending = self.leases is not None and self.leases.dirty
                ready, _, _ = select.select([wake, *channels], [], [], SAVE_INTERVAL if pending else 1.0)
                for sock in ready:
                    if sock is wake:
                        with contextlib.suppress(OSError):
                            wake.recv(64)
                        continue
                    self._receive(sock, channels[sock])
                if self.leases is not None:
                    self.leases.flush()
        except Exception as exc:
            if self._stopping.is_set():
                return
            log.exception("dhcp: the server loop died")
            if self.on_failure is not None:
                self.on_failure(f"the DHCP server loop died: {exc!r}")

    def _receive(self, sock: socket.socket, channel: Channel) -> None:
        try:
            data, source = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("dhcp: receive on the %s port failed: %s", channel.value, exc)
            return
        for reply in self.handle_packet(data, (str(source[0]), int(source[1])), channel):
            try:
                sock.sendto(reply.data, reply.destination)
                self.responder.count("sent")
            except OSError as exc:
                self.responder.count("send_errors")
                log.warning("%s: sending the reply to %s:%d failed: %s", reply.packet.mac, *reply.destination, exc)
