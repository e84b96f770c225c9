"""The clients' DHCP: Ethernet frames from 0.0.0.0 through a packet socket, replies on one UDP socket."""

from __future__ import annotations

import ipaddress
import queue
import random
import socket
import struct
import threading
import time
import uuid

from provision.dhcp.codec import MalformedPacket, parse
from provision.dhcp.packet import BROADCAST_FLAG, DhcpPacket, MessageType, Opt, client_request

from .common import (
    BOOT_FILE,
    DHCP_TIMEOUTS,
    PXE_PARAMETERS,
    PXE_VENDOR_CLASS,
    RANGE_END,
    RANGE_START,
    SERVER_IP,
    StepFailed,
)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def dhcp_frame(mac: bytes, payload: bytes) -> bytes:
    """An Ethernet broadcast frame 0.0.0.0:68 -> 255.255.255.255:67 from `mac`, as a PXE ROM sends it."""
    src, dst = bytes(4), b"\xff" * 4
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    udp_sum = _checksum(pseudo + struct.pack("!HHHH", 68, 67, length, 0) + payload) or 0xFFFF
    udp = struct.pack("!HHHH", 68, 67, length, udp_sum) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, random.getrandbits(16), 0, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + header + udp


def pxe_options(mac: str, extra: dict[int, bytes] | None = None) -> dict[int, bytes]:
    """What a BIOS PXE ROM puts after option 53 (RFC 4578): arch 0, UNDI 2.1, a GUID, PXEClient."""
    guid = uuid.uuid5(uuid.NAMESPACE_OID, mac).bytes
    return {
        **(extra or {}),
        Opt.MAX_MESSAGE_SIZE: (1260).to_bytes(2, "big"),
        Opt.CLIENT_ARCH: b"\x00\x00",
        Opt.CLIENT_NDI: b"\x01\x02\x01",
        Opt.CLIENT_MACHINE_ID: b"\x00" + guid,
        Opt.VENDOR_CLASS: PXE_VENDOR_CLASS,
        Opt.PARAMETER_REQUEST_LIST: PXE_PARAMETERS,
    }


class DhcpLink:
    """The clients' shared DHCP plumbing: a packet socket to send, one UDP socket on port 68 to receive.

    A receiver thread parses every reply and hands it to the client that registered its xid.
    """

    def __init__(self, interface: str) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        self.rx.bind(("0.0.0.0", 68))
        self.rx.settimeout(0.2)
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: send only
        self.tx.bind((interface, 0))
        self.queues: dict[int, queue.Queue[DhcpPacket]] = {}
        self.stray = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dhcp-rx", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.rx.close()
        self.tx.close()

    def register(self, xid: int) -> queue.Queue[DhcpPacket]:
        return self.queues.setdefault(xid, queue.Queue())

    def send(self, mac: str, packet: DhcpPacket) -> None:
        self.tx.send(dhcp_frame(bytes.fromhex(mac.replace(":", "")), packet.encode()))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.rx.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                packet = parse(data)
            except MalformedPacket:
                self.stray += 1
                continue
            target = self.queues.get(packet.xid)
            if target is None or packet.op != 2:
                self.stray += 1
                continue
            target.put(packet)


def _exchange(
    link: DhcpLink,
    replies: queue.Queue[DhcpPacket],
    mac: str,
    request: DhcpPacket,
    wanted: set[MessageType],
) -> tuple[DhcpPacket, int]:
    """Send `request` until a reply of a wanted type for `mac` arrives; (reply, resends)."""
    for attempt, timeout in enumerate(DHCP_TIMEOUTS):
        link.send(mac, request)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = replies.get(timeout=left)
            except queue.Empty:
                break
            if reply.mac == mac and reply.message_type in wanted:
                return reply, attempt
    names = "/".join(sorted(m.name for m in wanted))
    mtype = request.message_type
    raise StepFailed(f"DHCP: no {names} to the {mtype.name if mtype else '?'} after {len(DHCP_TIMEOUTS)} tries")


def _option_text(packet: DhcpPacket, code: int) -> str:
    return (packet.option(code) or b"").split(b"\0", 1)[0].decode("latin-1")


def dhcp_lease(link: DhcpLink, mac: str, xid: int, first: bytes) -> tuple[DhcpPacket, int]:
    """DISCOVER (`first`, prebuilt) -> OFFER -> REQUEST -> ACK; the ACK and the number of resends."""
    replies = link.register(xid)
    discover = parse(first)
    offer, resends = _exchange(link, replies, mac, discover, {MessageType.OFFER})
    if offer.server_id is None:
        raise StepFailed("DHCP: the OFFER has no server identifier (option 54)")
    options = pxe_options(mac, {Opt.REQUESTED_IP: offer.yiaddr.packed, Opt.SERVER_ID: offer.server_id.packed})
    request = client_request(MessageType.REQUEST, mac, xid=xid, flags=BROADCAST_FLAG, options=options)
    ack, more = _exchange(link, replies, mac, request, {MessageType.ACK, MessageType.NAK})
    if ack.message_type is MessageType.NAK:
        raise StepFailed(f"DHCP: NAK for {offer.yiaddr}: {_option_text(ack, Opt.MESSAGE)}")
    if ack.yiaddr != offer.yiaddr:
        raise StepFailed(f"DHCP: ACK for {ack.yiaddr}, but {offer.yiaddr} was offered and requested")
    return ack, resends + more


def check_ack(ack: DhcpPacket) -> str:
    """The TFTP server the ACK points at; StepFailed when the lease or the boot information is wrong."""
    if not ipaddress.IPv4Address(RANGE_START) <= ack.yiaddr <= ipaddress.IPv4Address(RANGE_END):
        raise StepFailed(f"DHCP: leased {ack.yiaddr}, outside {RANGE_START}..{RANGE_END}")
    boot_file = ack.file or _option_text(ack, Opt.BOOTFILE_NAME)
    if boot_file != BOOT_FILE:
        raise StepFailed(f"DHCP: boot file {boot_file!r} in the ACK, expected {BOOT_FILE!r}")
    next_server = str(ack.siaddr) if int(ack.siaddr) else _option_text(ack, Opt.TFTP_SERVER_NAME)
    if next_server != SERVER_IP:
        raise StepFailed(f"DHCP: next server {next_server or 'none'} in the ACK, expected {SERVER_IP}")
    return next_server
