"""The answers to DHCP and PXE packets, without sockets: `DhcpResponder.handle_packet`.

One datagram in, the replies out (each with the address it goes to). `handle_packet` never raises: a packet
that does not parse is logged with the MAC of its chaddr (when there are enough bytes) and skipped, as
pixiecore does; a packet whose answer fails is logged with its MAC and traceback and skipped. Both are
counted in `stats`. The sockets and the thread that feed it are `provision.dhcp.server.DhcpServer`.

Where replies go (`reply_destination`):
1. giaddr set (relayed): to the relay, giaddr:67.
2. the request came from a real address (a renewing client, a PXE client on port 4011, or a test client on
   127.0.0.1): back to that source address and port.
3. the request came from 0.0.0.0 (a client without an address): broadcast to 255.255.255.255:68, which
   goes out of the interface the sockets are bound to (SO_BINDTODEVICE).
Rule 2 is what lets a functional test on 127.0.0.1 with ephemeral ports receive every reply.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

from provision.dhcp.codec import MalformedPacket, mac_hint, parse
from provision.dhcp.leases import LeasePool, LeaseTable
from provision.dhcp.packet import BOOTREPLY, BOOTREQUEST, ZERO, DhcpPacket, MessageType, Opt
from provision.dhcp.policy import BootAnswer, DhcpSettingsError, PxeSettings, Skip, boot_answer, boot_fields
from provision.logcontext import bound

# One logger for the service, named as before the split (log lines show it).
log = logging.getLogger("provision.dhcp.server")

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
    if source[0] not in ("0.0.0.0", ""):  # nosec B104  # noqa: S104 - an address a packet came from, not a bind
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


class DhcpResponder:
    """The replies of one DHCP mode to each received datagram; `stats` counts what happened.

    `leases` is required in full mode (the table the server persists) and unused otherwise.
    """

    def __init__(self, settings: PxeSettings, mode: DhcpMode, leases: LeaseTable | None = None) -> None:
        if mode is DhcpMode.FULL and leases is None:
            raise DhcpSettingsError("leases", "full DHCP mode answers from a LeaseTable")
        self.settings = settings
        self.mode = mode
        self.leases = leases
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._throttle = _Throttle(limit=10, window=60.0)  # malformed packets
        self._flood = _Throttle(limit=10, window=60.0)  # exhaustion, DECLINEs that are not believed

    def count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def handle_packet(self, data: bytes, source: tuple[str, int], channel: Channel = Channel.DHCP) -> list[Reply]:
        """The replies to one received datagram. Never raises: failures are logged, counted and dropped."""
        self.count("received")
        try:
            packet = parse(data)
        except MalformedPacket as exc:
            self.count("malformed")
            level = logging.WARNING if self._throttle.allow() else logging.DEBUG
            log.log(level, "%s: dropped from %s:%d: %s", exc.mac or "unknown MAC", *source, exc.reason)
            return []
        except Exception:
            self.count("errors")
            log.exception("%s: dropped from %s:%d: parser failure", mac_hint(bytes(data)) or "unknown MAC", *source)
            return []
        with bound(mac=packet.mac):  # every line about this packet, the booter's included, names its client
            try:
                replies = [Reply(p, p.encode(), dest) for p, dest in self._answer(packet, source, channel)]
            except Exception:
                self.count("errors")
                log.exception("%s: dropped a DHCP %s from %s:%d: error while answering", packet.mac, _kind(packet),
                              *source)  # fmt: skip
                return []
        return replies

    def _ignore(self, packet: DhcpPacket, why: str, level: int = logging.DEBUG) -> _Out:
        self.count("ignored")
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
        result = boot_answer(packet, self.settings)
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
        self.count("offers")
        log.info("%s: proxy offer: %s (arch %s) -> %s", packet.mac, boot.boot_file, boot.arch, _where(dest))
        return [(self._reply(packet, MessageType.OFFER, boot=boot), dest)]

    def _pxe_request(self, packet: DhcpPacket, dest: tuple[str, int]) -> _Out:
        server_id = packet.server_id
        if server_id is not None and server_id != self.settings.server_ip:
            return self._ignore(packet, f"PXE request for server {server_id}")
        boot = self._boot(packet)
        if boot is None:
            return self._ignore(packet, "no boot answer")
        self.count("acks")
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
                self.count("exhausted")
                level = logging.WARNING if self._flood.allow() else logging.DEBUG
                log.log(level, "%s: no free address in %s..%s: no offer", mac, leases.pool.start, leases.pool.end)
                return []
            boot = self._boot(packet)
            self.count("offers")
            log.info("%s: offer %s%s -> %s", mac, ip, f", boot {boot.boot_file}" if boot else "", _where(dest))
            extra = self._network_options(leases.pool, lease=True)
            return [(self._reply(packet, MessageType.OFFER, boot=boot, yiaddr=ip, extra=extra), dest)]
        if mtype is MessageType.REQUEST:
            return self._full_request(packet, leases, dest)
        if mtype is MessageType.RELEASE:
            self.count("releases")
            done = leases.release(mac, packet.ciaddr)
            log.info("%s: release of %s%s", mac, packet.ciaddr, "" if done else " (no such lease)")
            return []
        if mtype is MessageType.DECLINE:
            self.count("declines")
            return self._decline(packet, leases)
        if mtype is MessageType.INFORM:
            boot = self._boot(packet)
            self.count("acks")
            log.info("%s: inform ack for %s", mac, packet.ciaddr)
            extra = self._network_options(leases.pool, lease=False)
            return [(self._reply(packet, MessageType.ACK, boot=boot, ciaddr=packet.ciaddr, extra=extra), dest)]
        return self._ignore(packet, "not a client message")

    def _decline(self, packet: DhcpPacket, leases: LeaseTable) -> _Out:
        """RFC 2131: a DECLINE names our server (54) and the address (50). It is believed only from the MAC
        that address was offered or just leased to: anyone else could keep the pool from everybody."""
        mac, ip = packet.mac, packet.requested_ip
        why = None
        if packet.server_id is None:
            why = "names no server"
        elif ip is None:
            why = "names no address"
        elif not leases.may_decline(mac, ip):
            why = "that address was not offered or just leased to this MAC"
        if why is not None:
            return self._ignore(
                packet, f"DECLINE of {ip} {why}", logging.WARNING if self._flood.allow() else logging.DEBUG
            )
        assert ip is not None
        leases.decline(mac, ip)
        log.warning(
            "%s: declined %s (in use by another host?): not offered for %d s", mac, ip, round(leases.decline_hold)
        )
        return []

    def _full_request(self, packet: DhcpPacket, leases: LeaseTable, dest: tuple[str, int]) -> _Out:
        # SELECTING and INIT-REBOOT name the address in option 50; RENEWING/REBINDING in ciaddr.
        ip = packet.requested_ip or (packet.ciaddr if packet.ciaddr != ZERO else None)
        if ip is None:
            return self._ignore(packet, "REQUEST names no address", logging.INFO)
        if ip not in leases.pool:
            return self._nak(packet, dest, f"{ip} is outside the range {leases.pool.start}..{leases.pool.end}")
        lease = leases.commit(packet.mac, ip, selecting=packet.server_id is not None)  # a foreign one: not here
        if lease is None:
            return self._nak(packet, dest, f"{ip} is not available")
        boot = self._boot(packet)
        self.count("acks")
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
        self.count("naks")
        log.info("%s: nak: %s", packet.mac, why)
        nak = self._reply(packet, MessageType.NAK, extra={Opt.MESSAGE: why.encode("ascii", "replace")[:250]})
        return [(nak, dest)]


def _kind(packet: DhcpPacket) -> str:
    mtype = packet.message_type
    return mtype.name if mtype is not None else "BOOTP"


def _where(dest: tuple[str, int]) -> str:
    return f"{dest[0]}:{dest[1]}"
