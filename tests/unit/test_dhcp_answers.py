"""What DhcpServer.handle_packet answers (no sockets): proxyDHCP, the PXE port, full DHCP, off, bad packets."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

import pytest

from provision.dhcp.answers import Channel, DhcpMode, Reply, reply_destination
from provision.dhcp.codec import parse
from provision.dhcp.leases import LeasePool
from provision.dhcp.packet import BROADCAST_FLAG, DhcpPacket, MessageType, Opt, client_request
from provision.dhcp.policy import PXE_VENDOR_OPTIONS, DhcpSettingsError, PxeSettings
from provision.dhcp.server import DhcpServer
from tests.support.clock import Clock

MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:65:43:21"
SERVER = IPv4Address("198.18.0.1")
ZERO = IPv4Address(0)
GUID = b"\x00" + bytes(range(16))
FROM_NOWHERE = ("0.0.0.0", 68)
SETTINGS = PxeSettings(server_ip=SERVER, http_port=8080)
POOL = LeasePool(
    start=IPv4Address("198.18.0.100"),
    end=IPv4Address("198.18.0.101"),
    netmask=IPv4Address("255.255.255.0"),
    router=IPv4Address("198.18.0.254"),
    dns=(IPv4Address("198.18.0.53"), IPv4Address("198.18.0.54")),
    lease_time=600,
)


def pxe_options(arch: int = 0, **extra: bytes) -> dict[int, bytes]:
    vendor = b"HTTPClient" if arch == 16 else b"PXEClient"
    options = {93: arch.to_bytes(2, "big"), 60: vendor + b":Arch:%05d:UNDI:002001" % arch, 97: GUID}
    options.update({int(k.removeprefix("o")): v for k, v in extra.items()})
    return options


def discover(mac: str = MAC, *, xid: int = 0x11, arch: int = 0, **extra: bytes) -> DhcpPacket:
    options = pxe_options(arch, **extra)
    return client_request(MessageType.DISCOVER, mac, xid=xid, flags=BROADCAST_FLAG, options=options)


def one(replies: list[Reply]) -> DhcpPacket:
    assert len(replies) == 1, replies
    packet = parse(replies[0].data)
    assert packet == replies[0].packet
    return packet


def proxy(**kw) -> DhcpServer:
    return DhcpServer(kw.pop("settings", SETTINGS), DhcpMode.PROXY, **kw)


def full(clock: Clock | None = None, **kw) -> DhcpServer:
    return DhcpServer(SETTINGS, "full", pool=POOL, clock=clock or Clock(), **kw)


# ------------------------------------------------------------------------------------------ proxy
def test_proxy_offer_to_a_bios_pxe_rom():
    server = proxy()
    replies = server.handle_packet(discover().encode(), FROM_NOWHERE)
    offer = one(replies)
    assert replies[0].destination == ("255.255.255.255", 68)
    assert offer.op == 2 and offer.xid == 0x11 and offer.flags == BROADCAST_FLAG and offer.mac == MAC
    assert offer.message_type is MessageType.OFFER
    assert offer.yiaddr == ZERO and offer.ciaddr == ZERO and offer.siaddr == SERVER
    assert offer.server_id == SERVER
    assert offer.vendor_class == b"PXEClient"
    assert offer.client_machine_id == GUID
    assert offer.option(Opt.VENDOR_SPECIFIC) == PXE_VENDOR_OPTIONS
    assert offer.file == "undionly.kpxe" and offer.sname == "198.18.0.1"
    assert Opt.LEASE_TIME not in offer.options and Opt.SUBNET_MASK not in offer.options
    assert list(offer.options)[:2] == [Opt.MESSAGE_TYPE, Opt.SERVER_ID]
    assert server.stats["offers"] == 1 and server.stats["received"] == 1


def test_proxy_offer_for_uefi_has_no_option_43():
    offer = one(proxy().handle_packet(discover(arch=7).encode(), FROM_NOWHERE))
    assert offer.file == "shimx64.efi" and Opt.VENDOR_SPECIFIC not in offer.options


def test_proxy_offer_for_uefi_http_boot():
    offer = one(proxy().handle_packet(discover(arch=16).encode(), FROM_NOWHERE))
    assert offer.vendor_class == b"HTTPClient"
    assert offer.file == "http://198.18.0.1:8080/files/shimx64.efi"


def test_proxy_offer_to_ipxe_and_options_66_67_when_asked():
    packet = discover(o77=b"iPXE", o55=bytes([1, 3, 43, 60, 66, 67, 175]))
    offer = one(proxy().handle_packet(packet.encode(), FROM_NOWHERE))
    assert offer.file == "http://198.18.0.1:8080/boot/${mac}.ipxe"
    assert offer.option(Opt.BOOTFILE_NAME) == b"http://198.18.0.1:8080/boot/${mac}.ipxe\0"
    assert offer.option(Opt.TFTP_SERVER_NAME) == b"198.18.0.1\0"


def test_proxy_ignores_non_pxe_clients_and_other_messages(caplog):
    caplog.set_level(logging.DEBUG, logger="provision.dhcp")
    server = proxy()
    udhcpc = client_request(MessageType.DISCOVER, OTHER, options={60: b"udhcp 1.36.1"})
    assert server.handle_packet(udhcpc.encode(), FROM_NOWHERE) == []
    request = client_request(MessageType.REQUEST, MAC, options={**pxe_options(), 54: b"\xc0\xa8\x00\x01"})
    assert server.handle_packet(request.encode(), FROM_NOWHERE) == []
    assert server.stats["ignored"] == 2 and server.stats["offers"] == 0
    assert all(OTHER in r.getMessage() or MAC in r.getMessage() for r in caplog.records)


def test_boot_allowed_false_is_ignored_and_logged_with_the_mac(caplog):
    caplog.set_level(logging.INFO, logger="provision.dhcp")
    settings = PxeSettings(server_ip=SERVER, http_port=8080, boot_allowed=lambda mac: mac != MAC)
    server = proxy(settings=settings)
    assert server.handle_packet(discover().encode(), FROM_NOWHERE) == []
    assert len(server.handle_packet(discover(OTHER).encode(), FROM_NOWHERE)) == 1
    assert any(MAC in r.getMessage() and "boot_allowed" in r.getMessage() for r in caplog.records)


def test_unknown_arch_is_ignored_with_a_log_line(caplog):
    caplog.set_level(logging.INFO, logger="provision.dhcp")
    assert proxy().handle_packet(discover(arch=11).encode(), FROM_NOWHERE) == []
    assert any(MAC in r.getMessage() and "architecture" in r.getMessage() for r in caplog.records)


def test_relayed_and_unicast_destinations():
    relayed = client_request(
        MessageType.DISCOVER, MAC, giaddr=IPv4Address("10.1.2.3"), options={**pxe_options(), 82: b"\x01\x02ab"}
    )
    replies = proxy().handle_packet(relayed.encode(), ("10.1.2.3", 67))
    offer = one(replies)
    assert replies[0].destination == ("10.1.2.3", 67)
    assert offer.giaddr == IPv4Address("10.1.2.3")
    assert list(offer.options)[-1] == Opt.RELAY_AGENT_INFO and offer.option(82) == b"\x01\x02ab"
    assert reply_destination(discover(), ("127.0.0.1", 40000)) == ("127.0.0.1", 40000)
    assert reply_destination(discover(), ("0.0.0.0", 68)) == ("255.255.255.255", 68)


# ------------------------------------------------------------------------------------- PXE port
def test_pxe_port_request_gets_a_unicast_ack():
    request = client_request(
        MessageType.REQUEST, MAC, xid=0x22, ciaddr=IPv4Address("192.168.1.50"), options=pxe_options(arch=7)
    )
    replies = proxy().handle_packet(request.encode(), ("192.168.1.50", 68), Channel.PXE)
    ack = one(replies)
    assert replies[0].destination == ("192.168.1.50", 68)
    assert ack.message_type is MessageType.ACK and ack.xid == 0x22
    assert ack.ciaddr == IPv4Address("192.168.1.50") and ack.yiaddr == ZERO and ack.siaddr == SERVER
    assert ack.file == "shimx64.efi" and ack.vendor_class == b"PXEClient" and ack.client_machine_id == GUID


def test_pxe_port_ignores_other_servers_and_messages():
    server = proxy()
    foreign = client_request(MessageType.REQUEST, MAC, options={**pxe_options(), 54: IPv4Address("10.0.0.9").packed})
    assert server.handle_packet(foreign.encode(), ("10.0.0.50", 68), Channel.PXE) == []
    assert server.handle_packet(discover().encode(), ("10.0.0.50", 68), Channel.PXE) == []
    mine = client_request(MessageType.REQUEST, MAC, options={**pxe_options(), 54: SERVER.packed})
    assert one(server.handle_packet(mine.encode(), ("10.0.0.50", 68), Channel.PXE)).file == "undionly.kpxe"


# ------------------------------------------------------------------------------------- full mode
def request(mac: str, ip: IPv4Address, *, server: IPv4Address | None = SERVER, pxe: bool = True) -> DhcpPacket:
    options = pxe_options() if pxe else {}
    options[Opt.REQUESTED_IP] = ip.packed
    if server is not None:
        options[Opt.SERVER_ID] = server.packed
    return client_request(MessageType.REQUEST, mac, xid=0x33, options=options)


def test_full_discover_request_ack():
    server = full()
    offer = one(server.handle_packet(discover().encode(), FROM_NOWHERE))
    assert offer.message_type is MessageType.OFFER
    assert offer.yiaddr == IPv4Address("198.18.0.100")
    assert offer.option(Opt.SUBNET_MASK) == IPv4Address("255.255.255.0").packed
    assert offer.option(Opt.ROUTER) == IPv4Address("198.18.0.254").packed
    assert offer.option(Opt.DNS) == IPv4Address("198.18.0.53").packed + IPv4Address("198.18.0.54").packed
    assert offer.option(Opt.LEASE_TIME) == (600).to_bytes(4, "big")
    assert offer.option(Opt.RENEWAL_TIME) == (300).to_bytes(4, "big")
    assert offer.option(Opt.REBINDING_TIME) == (525).to_bytes(4, "big")
    assert offer.file == "undionly.kpxe" and offer.siaddr == SERVER  # boot info for a PXE client

    replies = server.handle_packet(request(MAC, offer.yiaddr).encode(), FROM_NOWHERE)
    ack = one(replies)
    assert replies[0].destination == ("255.255.255.255", 68)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == offer.yiaddr and ack.xid == 0x33
    assert ack.file == "undionly.kpxe"
    assert server.leases is not None and server.leases.get(MAC) is not None


def test_full_plain_client_gets_a_plain_lease():
    server = full()
    udhcpc = client_request(MessageType.DISCOVER, OTHER, options={60: b"udhcp 1.36.1", 55: bytes([1, 3, 6, 66, 67])})
    offer = one(server.handle_packet(udhcpc.encode(), FROM_NOWHERE))
    assert offer.yiaddr == IPv4Address("198.18.0.100")
    assert offer.file == "" and offer.siaddr == ZERO
    assert Opt.VENDOR_CLASS not in offer.options and Opt.BOOTFILE_NAME not in offer.options


def test_full_boot_allowed_false_still_gets_an_address():
    settings = PxeSettings(server_ip=SERVER, http_port=8080, boot_allowed=lambda mac: False)
    server = DhcpServer(settings, DhcpMode.FULL, pool=POOL, clock=Clock())
    offer = one(server.handle_packet(discover().encode(), FROM_NOWHERE))
    assert offer.yiaddr == IPv4Address("198.18.0.100") and offer.file == ""


def test_full_exhaustion_sends_no_offer_and_logs(caplog):
    server = full()
    for n, mac in enumerate(("52:54:00:00:00:01", "52:54:00:00:00:02")):
        offer = one(server.handle_packet(discover(mac).encode(), FROM_NOWHERE))
        one(server.handle_packet(request(mac, offer.yiaddr).encode(), FROM_NOWHERE))
        assert offer.yiaddr == IPv4Address(f"198.18.0.{100 + n}")
    with caplog.at_level(logging.WARNING, logger="provision.dhcp"):
        assert server.handle_packet(discover(MAC).encode(), FROM_NOWHERE) == []
    assert server.stats["exhausted"] == 1
    assert any(MAC in r.getMessage() and "no free address" in r.getMessage() for r in caplog.records)


def test_full_request_for_a_foreign_server_is_ignored_and_frees_the_offer():
    server = full()
    offer = one(server.handle_packet(discover().encode(), FROM_NOWHERE))
    foreign = request(MAC, offer.yiaddr, server=IPv4Address("198.18.0.2"))
    assert server.handle_packet(foreign.encode(), FROM_NOWHERE) == []
    assert server.stats["ignored"] == 1
    assert one(server.handle_packet(discover(OTHER).encode(), FROM_NOWHERE)).yiaddr == offer.yiaddr


def test_full_nak_for_an_address_out_of_range_or_taken():
    server = full()
    nak = one(server.handle_packet(request(MAC, IPv4Address("198.18.0.7"), server=None).encode(), FROM_NOWHERE))
    assert nak.message_type is MessageType.NAK and nak.yiaddr == ZERO and nak.file == ""
    assert nak.option(Opt.MESSAGE) is not None and b"outside the range" in nak.option(Opt.MESSAGE)  # type: ignore[operator]
    one(server.handle_packet(request(OTHER, IPv4Address("198.18.0.100")).encode(), FROM_NOWHERE))
    taken = one(server.handle_packet(request(MAC, IPv4Address("198.18.0.100"), server=None).encode(), FROM_NOWHERE))
    assert taken.message_type is MessageType.NAK
    assert server.stats["naks"] == 2


def test_full_renewal_unicast_release_and_decline():
    clock = Clock()
    server = full(clock)
    address = IPv4Address("198.18.0.101")
    one(server.handle_packet(request(MAC, address, pxe=False).encode(), FROM_NOWHERE))  # INIT-REBOOT style
    clock.now += 300
    renew = client_request(MessageType.REQUEST, MAC, ciaddr=address)
    replies = server.handle_packet(renew.encode(), (str(address), 68))
    ack = one(replies)
    assert replies[0].destination == (str(address), 68)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == address and ack.ciaddr == address
    assert server.leases is not None
    lease = server.leases.get(MAC)
    assert lease is not None and lease.expires == clock.now + 600

    release = client_request(MessageType.RELEASE, MAC, ciaddr=address, options={54: SERVER.packed})
    assert server.handle_packet(release.encode(), (str(address), 68)) == []
    lease = server.leases.get(MAC)
    assert lease is not None and not lease.active(clock.now)

    decline = client_request(MessageType.DECLINE, MAC, options={50: address.packed, 54: SERVER.packed})
    assert server.handle_packet(decline.encode(), FROM_NOWHERE) == []
    assert server.leases.get(MAC) is None
    assert one(server.handle_packet(discover().encode(), FROM_NOWHERE)).yiaddr == IPv4Address("198.18.0.100")
    assert server.stats["releases"] == 1 and server.stats["declines"] == 1


def test_full_inform_gets_configuration_without_a_lease():
    inform = client_request(MessageType.INFORM, MAC, ciaddr=IPv4Address("198.18.0.20"), options=pxe_options())
    replies = full().handle_packet(inform.encode(), ("198.18.0.20", 68))
    ack = one(replies)
    assert replies[0].destination == ("198.18.0.20", 68)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == ZERO and ack.ciaddr == IPv4Address("198.18.0.20")
    assert Opt.LEASE_TIME not in ack.options and ack.option(Opt.SUBNET_MASK) is not None
    assert ack.file == "undionly.kpxe"


def test_full_mode_needs_a_pool():
    with pytest.raises(DhcpSettingsError):
        DhcpServer(SETTINGS, DhcpMode.FULL)
    with pytest.raises(DhcpSettingsError):
        DhcpServer(SETTINGS, "relay")


# ------------------------------------------------------------------------------- off, bad input
def test_off_mode_answers_nothing():
    server = DhcpServer(SETTINGS, DhcpMode.OFF)
    assert server.handle_packet(discover().encode(), FROM_NOWHERE) == []
    server.start()  # nothing to bind
    assert not server.running
    server.stop()


def test_malformed_packet_is_dropped_counted_and_logged_with_the_mac(caplog):
    server = proxy()
    data = discover().encode()[:200]
    with caplog.at_level(logging.WARNING, logger="provision.dhcp"):
        assert server.handle_packet(data, FROM_NOWHERE) == []
    assert server.stats["malformed"] == 1
    assert any(MAC in r.getMessage() for r in caplog.records)
    assert one(server.handle_packet(discover().encode(), FROM_NOWHERE)).file == "undionly.kpxe"


def test_malformed_warnings_are_throttled(caplog):
    server = proxy()
    with caplog.at_level(logging.WARNING, logger="provision.dhcp"):
        for _ in range(50):
            server.handle_packet(b"\x01" * 100, FROM_NOWHERE)
    assert server.stats["malformed"] == 50
    assert len(caplog.records) == 10


def test_a_raising_boot_allowed_hook_drops_the_packet_only(caplog):
    def boot_allowed(mac: str) -> bool:
        raise RuntimeError("database is locked")

    server = proxy(settings=PxeSettings(server_ip=SERVER, http_port=8080, boot_allowed=boot_allowed))
    with caplog.at_level(logging.ERROR, logger="provision.dhcp"):
        assert server.handle_packet(discover().encode(), FROM_NOWHERE) == []
    assert server.stats["errors"] == 1
    assert any(MAC in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "packet",
    [
        DhcpPacket(op=2, chaddr=bytes(6), options={53: b"\x02"}),  # a reply, not a request
        DhcpPacket(htype=6, hlen=6, chaddr=bytes(6), options={53: b"\x01", **pxe_options()}),  # token ring
        DhcpPacket(chaddr=bytes(6), options=pxe_options()),  # plain BOOTP
        client_request(MessageType.OFFER, MAC, options=pxe_options()),
    ],
)
def test_not_for_us(packet):
    server = full()
    assert server.handle_packet(packet.encode(), FROM_NOWHERE) == []
    assert server.stats["ignored"] == 1 and server.stats["errors"] == 0


def test_bad_bind_address():
    with pytest.raises(DhcpSettingsError) as info:
        DhcpServer(SETTINGS, DhcpMode.PROXY, bind="localhost")
    assert info.value.key == "bind"
