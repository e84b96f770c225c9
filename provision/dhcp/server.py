"""The DHCP server: proxyDHCP (default), full DHCP for the imaging LAN, or off.

One thread runs a select loop over two UDP sockets: the DHCP port (67) and the PXE port (4011). Every
packet goes through `DhcpServer.handle_packet`, which never raises: a packet that does not parse, or whose
answer fails, is logged with the client MAC (when known), counted in `stats`, and dropped.

Where replies go (`reply_destination`):
1. giaddr set (relayed): to the relay, giaddr:67.
2. the request came from a real address (a renewing client, a PXE client on port 4011, or a test client on
   127.0.0.1): back to that source address and port.
3. the request came from 0.0.0.0 (a client without an address): broadcast to 255.255.255.255:68, which
   goes out of the interface the sockets are bound to (SO_BINDTODEVICE).
Rule 2 is what lets a functional test on 127.0.0.1 with ephemeral ports receive every reply.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType

from provision.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    ZERO,
    DhcpPacket,
    MalformedPacket,
    MessageType,
    Opt,
    mac_hint,
    parse,
)
from provision.dhcp.leases import SAVE_INTERVAL, LeasePool, LeaseTable
from provision.dhcp.policy import BootAnswer, DhcpSettingsError, PxeSettings, Skip, boot_fields, decide_boot
from provision.errors import FatalError

log = logging.getLogger(__name__)

CLIENT_PORT = 68
RELAY_PORT = 67
BROADCAST = "255.255.255.255"
STAT_KEYS = (
    "received",
    "malformed",
    "errors",
    "ignored",
    "offers",
    "acks",
    "naks",
    "releases",
    "declines",
    "exhausted",
    "sent",
    "send_errors",
)


class DhcpMode(enum.StrEnum):
    PROXY = "proxy"  # boot information only; the site's DHCP server leases the addresses
    FULL = "full"  # addresses from a LeasePool, plus boot information for PXE clients
    OFF = "off"  # nothing at all


class Channel(enum.StrEnum):
    DHCP = "dhcp"  # port 67
    PXE = "pxe"  # port 4011: PXE/proxyDHCP requests sent to the boot server


class DhcpBindError(FatalError):
    """A DHCP socket cannot be opened; carries the port and interface."""

    def __init__(self, message: str, *, port: int, interface: str | None) -> None:
        super().__init__(message, port=port, interface=interface)
        self.port = port
        self.interface = interface


Destination = tuple[str, int]
_Out = list[tuple[DhcpPacket, Destination]]  # replies before encoding


@dataclass(frozen=True)
class Reply:
    packet: DhcpPacket
    data: bytes
    destination: tuple[str, int]


def reply_destination(request: DhcpPacket, source: tuple[str, int]) -> tuple[str, int]:
    """See the module docstring: relay, else the source address, else broadcast."""
    if request.giaddr != ZERO:
        return (str(request.giaddr), RELAY_PORT)
    if source[0] not in ("0.0.0.0", ""):  # noqa: S104 - an address a packet came from, not a bind
        return source
    return (BROADCAST, CLIENT_PORT)


class _Throttle:
    """At most `limit` events per `window` seconds (keeps a flood of bad packets out of the log)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._start, self._count = 0.0, 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._start > self.window:
            self._start, self._count = now, 0
        self._count += 1
        return self._count <= self.limit


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
    answer on every interface, which is logged as a warning.
    """

    def __init__(
        self,
        settings: PxeSettings,
        mode: DhcpMode | str = DhcpMode.PROXY,
        *,
        bind: IPv4Address | str = "0.0.0.0",  # noqa: S104 - confined by `interface` in production
        interface: str | None = None,
        port: int = 67,
        pxe_port: int = 4011,
        pool: LeasePool | None = None,
        lease_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        try:
            self.mode = DhcpMode(str(mode))
        except ValueError:
            raise DhcpSettingsError("mode", f"{mode!r} is not proxy, full or off") from None
        self.settings = settings
        try:
            self.bind = IPv4Address(str(bind))
        except ValueError:
            raise DhcpSettingsError("bind", f"{bind!r} is not an IPv4 address") from None
        self.interface = interface
        self._ports = (port, pxe_port)
        self.on_failure = on_failure
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.leases: LeaseTable | None = None
        if self.mode is DhcpMode.FULL:
            if pool is None:
                raise DhcpSettingsError("range", "full DHCP mode needs an address range (a LeasePool)")
            reserved = [settings.server_ip] + ([pool.router] if pool.router else [])
            self.leases = LeaseTable(pool, lease_file, reserved=reserved, clock=clock, write_behind=True)
            if settings.server_ip not in pool.network:
                log.warning("dhcp: server address %s is outside the lease network %s", settings.server_ip, pool.network)
        self._sockets: dict[Channel, socket.socket] = {}
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._throttle = _Throttle(limit=10, window=60.0)

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
                self._count("sent")
            except OSError as exc:
                self._count("send_errors")
                log.warning("%s: sending the reply to %s:%d failed: %s", reply.packet.mac, *reply.destination, exc)

    # --------------------------------------------------------------------------- packet handling
    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def handle_packet(self, data: bytes, source: tuple[str, int], channel: Channel = Channel.DHCP) -> list[Reply]:
        """The replies to one received datagram. Never raises: failures are logged, counted and dropped."""
        self._count("received")
        try:
            packet = parse(data)
        except MalformedPacket as exc:
            self._count("malformed")
            level = logging.WARNING if self._throttle.allow() else logging.DEBUG
            log.log(level, "%s: dropped from %s:%d: %s", exc.mac or "unknown MAC", *source, exc.reason)
            return []
        except Exception:
            self._count("errors")
            log.exception("%s: dropped from %s:%d: parser failure", mac_hint(bytes(data)) or "unknown MAC", *source)
            return []
        try:
            replies = [Reply(p, p.encode(), dest) for p, dest in self._answer(packet, source, channel)]
        except Exception:
            self._count("errors")
            log.exception("%s: dropped a DHCP %s from %s:%d: error while answering", packet.mac, _kind(packet), *source)
            return []
        return replies

    def _ignore(self, packet: DhcpPacket, why: str, level: int = logging.DEBUG) -> _Out:
        self._count("ignored")
        log.log(level, "%s: ignored DHCP %s: %s", packet.mac, _kind(packet), why)
        return []

    def _answer(self, packet: DhcpPacket, source: tuple[str, int], channel: Channel) -> _Out:
        if self.mode is DhcpMode.OFF:
            return []
        if packet.op != BOOTREQUEST:
            return self._ignore(packet, "not a request")
        if not packet.is_ethernet:
            return self._ignore(packet, f"hardware type {packet.htype}/{packet.hlen} is not Ethernet")
        mtype = packet.message_type
        if mtype is None:
            return self._ignore(packet, "no known DHCP message type (plain BOOTP is not served)")
        dest = reply_destination(packet, source)
        if channel is Channel.PXE:
            if mtype is not MessageType.REQUEST:
                return self._ignore(packet, "only REQUESTs are answered on the PXE port")
            return self._pxe_request(packet, dest)
        if self.mode is DhcpMode.PROXY:
            if mtype is not MessageType.DISCOVER:
                return self._ignore(packet, "proxyDHCP answers DISCOVERs only")
            return self._proxy_discover(packet, dest)
        return self._full(packet, mtype, dest)

    def _boot(self, packet: DhcpPacket) -> BootAnswer | None:
        result = decide_boot(packet, self.settings)
        if isinstance(result, Skip):
            level = logging.DEBUG if result is Skip.NOT_PXE else logging.INFO
            log.log(
                level,
                "%s: no boot answer: %s (arch %s, vendor class %r)",
                packet.mac,
                result.value,
                ",".join(map(str, packet.client_arches)) or "none",
                (packet.vendor_class or b"")[:48],
            )
            return None
        return result

    def _reply(
        self,
        request: DhcpPacket,
        mtype: MessageType,
        *,
        boot: BootAnswer | None = None,
        yiaddr: IPv4Address = ZERO,
        ciaddr: IPv4Address = ZERO,
        extra: dict[int, bytes] | None = None,
    ) -> DhcpPacket:
        options: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((mtype,)), Opt.SERVER_ID: self.settings.server_ip.packed}
        options.update(extra or {})
        siaddr, sname, file = ZERO, "", ""
        if boot is not None:
            fields = boot_fields(boot, request, self.settings)
            siaddr, sname, file = fields.siaddr, fields.sname, fields.file
            options.update(fields.options)
        relay_info = request.option(Opt.RELAY_AGENT_INFO)
        if relay_info is not None:  # RFC 3046: echoed, last
            options[Opt.RELAY_AGENT_INFO] = relay_info
        return DhcpPacket(
            op=BOOTREPLY,
            htype=request.htype,
            hlen=request.hlen,
            xid=request.xid,
            flags=request.flags,
            ciaddr=ciaddr,
            yiaddr=yiaddr,
            siaddr=siaddr,
            giaddr=request.giaddr,
            chaddr=request.chaddr,
            sname=sname,
            file=file,
            options=options,
        )

    # ------------------------------------------------------------------------------ proxy / PXE
    def _proxy_discover(self, packet: DhcpPacket, dest: tuple[str, int]) -> _Out:
        boot = self._boot(packet)
        if boot is None:
            return self._ignore(packet, "no boot answer")
        self._count("offers")
        log.info("%s: proxy offer: %s (arch %s) -> %s", packet.mac, boot.boot_file, boot.arch, _where(dest))
        return [(self._reply(packet, MessageType.OFFER, boot=boot), dest)]

    def _pxe_request(self, packet: DhcpPacket, dest: tuple[str, int]) -> _Out:
        server_id = packet.server_id
        if server_id is not None and server_id != self.settings.server_ip:
            return self._ignore(packet, f"PXE request for server {server_id}")
        boot = self._boot(packet)
        if boot is None:
            return self._ignore(packet, "no boot answer")
        self._count("acks")
        log.info("%s: PXE ack: %s (arch %s) -> %s", packet.mac, boot.boot_file, boot.arch, _where(dest))
        return [(self._reply(packet, MessageType.ACK, boot=boot, ciaddr=packet.ciaddr), dest)]

    # -------------------------------------------------------------------------------- full DHCP
    def _network_options(self, pool: LeasePool, *, lease: bool) -> dict[int, bytes]:
        options: dict[int, bytes] = {}
        if lease:
            t = pool.lease_time
            options[Opt.LEASE_TIME] = t.to_bytes(4, "big")
            options[Opt.RENEWAL_TIME] = (t // 2).to_bytes(4, "big")
            options[Opt.REBINDING_TIME] = (t * 7 // 8).to_bytes(4, "big")
        options[Opt.SUBNET_MASK] = pool.netmask.packed
        if pool.router is not None:
            options[Opt.ROUTER] = pool.router.packed
        if pool.dns:
            options[Opt.DNS] = b"".join(ip.packed for ip in pool.dns)
        return options

    def _full(self, packet: DhcpPacket, mtype: MessageType, dest: tuple[str, int]) -> _Out:
        leases = self.leases
        assert leases is not None
        mac = packet.mac
        server_id = packet.server_id
        if server_id is not None and server_id != self.settings.server_ip:
            leases.forget_offer(mac)
            return self._ignore(packet, f"meant for server {server_id}")
        if mtype is MessageType.DISCOVER:
            ip = leases.offer(mac, packet.requested_ip)
            if ip is None:
                self._count("exhausted")
                log.warning("%s: no free address in %s..%s: no offer", mac, leases.pool.start, leases.pool.end)
                return []
            boot = self._boot(packet)
            self._count("offers")
            log.info("%s: offer %s%s -> %s", mac, ip, f", boot {boot.boot_file}" if boot else "", _where(dest))
            extra = self._network_options(leases.pool, lease=True)
            return [(self._reply(packet, MessageType.OFFER, boot=boot, yiaddr=ip, extra=extra), dest)]
        if mtype is MessageType.REQUEST:
            return self._full_request(packet, leases, dest)
        if mtype is MessageType.RELEASE:
            self._count("releases")
            done = leases.release(mac, packet.ciaddr)
            log.info("%s: release of %s%s", mac, packet.ciaddr, "" if done else " (no such lease)")
            return []
        if mtype is MessageType.DECLINE:
            self._count("declines")
            ip = packet.requested_ip
            if ip is not None and leases.decline(mac, ip):
                log.warning("%s: declined %s (in use by another host?): not offered for one lease time", mac, ip)
            else:
                log.info("%s: decline of %s ignored (not in the range)", mac, ip)
            return []
        if mtype is MessageType.INFORM:
            boot = self._boot(packet)
            self._count("acks")
            log.info("%s: inform ack for %s", mac, packet.ciaddr)
            extra = self._network_options(leases.pool, lease=False)
            return [(self._reply(packet, MessageType.ACK, boot=boot, ciaddr=packet.ciaddr, extra=extra), dest)]
        return self._ignore(packet, "not a client message")

    def _full_request(self, packet: DhcpPacket, leases: LeaseTable, dest: tuple[str, int]) -> _Out:
        # SELECTING and INIT-REBOOT name the address in option 50; RENEWING/REBINDING in ciaddr.
        ip = packet.requested_ip or (packet.ciaddr if packet.ciaddr != ZERO else None)
        if ip is None:
            return self._ignore(packet, "REQUEST names no address", logging.INFO)
        if ip not in leases.pool:
            return self._nak(packet, dest, f"{ip} is outside the range {leases.pool.start}..{leases.pool.end}")
        lease = leases.commit(packet.mac, ip)
        if lease is None:
            return self._nak(packet, dest, f"{ip} is not available")
        boot = self._boot(packet)
        self._count("acks")
        log.info(
            "%s: ack %s for %d s%s -> %s",
            packet.mac,
            ip,
            leases.pool.lease_time,
            f", boot {boot.boot_file}" if boot else "",
            _where(dest),
        )
        extra = self._network_options(leases.pool, lease=True)
        ack = self._reply(packet, MessageType.ACK, boot=boot, yiaddr=ip, ciaddr=packet.ciaddr, extra=extra)
        return [(ack, dest)]

    def _nak(self, packet: DhcpPacket, dest: tuple[str, int], why: str) -> _Out:
        self._count("naks")
        log.info("%s: nak: %s", packet.mac, why)
        nak = self._reply(packet, MessageType.NAK, extra={Opt.MESSAGE: why.encode("ascii", "replace")[:250]})
        return [(nak, dest)]


def _kind(packet: DhcpPacket) -> str:
    mtype = packet.message_type
    return mtype.name if mtype is not None else "BOOTP"


def _where(dest: tuple[str, int]) -> str:
    return f"{dest[0]}:{dest[1]}"
