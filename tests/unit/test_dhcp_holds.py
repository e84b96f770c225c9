"""Full-DHCP holds (issue 12, defect 7): DECLINEs only from the client, short and bounded quarantines, short
offers that a DISCOVER flood cannot turn into a reservation of the whole pool. Handler level, no sockets."""

from __future__ import annotations

import json
import logging
import random
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from provision.dhcp.answers import DhcpMode, Reply
from provision.dhcp.codec import parse
from provision.dhcp.holds import BURST, DECLINE_HOLD, OFFER_HOLD, Offers, Quarantine
from provision.dhcp.leases import DECLINE_WINDOW, LeasePool, LeaseTable
from provision.dhcp.packet import BROADCAST_FLAG, DhcpPacket, MessageType, client_request
from provision.dhcp.policy import PxeSettings
from provision.dhcp.server import DhcpServer
from tests.support.clock import Clock

SERVER = IPv4Address("198.18.0.1")
FROM_NOWHERE = ("0.0.0.0", 68)
SETTINGS = PxeSettings(server_ip=SERVER, http_port=8080)
PXE = {93: b"\x00\x00", 60: b"PXEClient:Arch:00000:UNDI:002001"}
REAL = "52:54:00:aa:bb:01"


def pool(size: int = 20, lease_time: int = 3600) -> LeasePool:
    start = IPv4Address("198.18.0.100")
    return LeasePool(start=start, end=start + size - 1, netmask=IPv4Address("255.255.255.0"), lease_time=lease_time)


def full(clock: Clock, size: int = 20, **kw) -> DhcpServer:
    return DhcpServer(SETTINGS, DhcpMode.FULL, pool=pool(size), clock=clock, **kw)


def stranger(rng: random.Random) -> str:
    return "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))


def ask(server: DhcpServer, packet: DhcpPacket) -> DhcpPacket | None:
    replies: list[Reply] = server.handle_packet(packet.encode(), FROM_NOWHERE)
    assert len(replies) <= 1, replies
    return parse(replies[0].data) if replies else None


def discover(mac: str, xid: int = 1) -> DhcpPacket:
    return client_request(MessageType.DISCOVER, mac, xid=xid, flags=BROADCAST_FLAG, options=PXE)


def request(mac: str, ip: IPv4Address, xid: int = 2) -> DhcpPacket:
    return client_request(MessageType.REQUEST, mac, xid=xid, options={**PXE, 50: ip.packed, 54: SERVER.packed})


def decline(mac: str, ip: IPv4Address, server: IPv4Address | None = SERVER) -> DhcpPacket:
    options = {50: ip.packed} | ({54: server.packed} if server else {})
    return client_request(MessageType.DECLINE, mac, options=options)


def lease(server: DhcpServer, mac: str) -> IPv4Address:
    offer = ask(server, discover(mac))
    assert offer is not None and offer.message_type is MessageType.OFFER
    ack = ask(server, request(mac, offer.yiaddr))
    assert ack is not None and ack.message_type is MessageType.ACK, ack
    return ack.yiaddr


# --------------------------------------------------------------------------------------------- DECLINE
def test_defect7_decline_from_a_stranger_is_ignored(caplog):
    """100 DECLINEs from MACs never offered those addresses: nothing is quarantined, every address is offered."""
    clock, rng = Clock(), random.Random(7)
    server = full(clock, size=100)
    addresses = list(server.leases.pool.addresses())  # type: ignore[union-attr]
    with caplog.at_level(logging.DEBUG, logger="provision.dhcp"):
        for ip in addresses:
            assert ask(server, decline(stranger(rng), ip)) is None
    assert server.stats["declines"] == 100 and server.stats["ignored"] == 100
    assert any("not offered or just leased to this MAC" in r.getMessage() for r in caplog.records)
    assert sum(r.levelno >= logging.WARNING for r in caplog.records) <= 10  # a flood does not flood the log
    offered = {lease(server, f"52:54:00:00:01:{n:02x}") for n in range(100)}
    assert offered == set(addresses)


def test_defect7_decline_needs_our_server_id_and_the_address():
    clock = Clock()
    server = full(clock)
    ip = lease(server, REAL)
    assert ask(server, decline(REAL, ip, server=None)) is None  # RFC 2131: a DECLINE names the server
    assert ask(server, client_request(MessageType.DECLINE, REAL, options={54: SERVER.packed})) is None
    assert server.leases is not None and server.leases.get(REAL) is not None
    assert server.stats["ignored"] == 2


def test_defect7_decline_from_the_client_quarantines_briefly():
    clock = Clock()
    server = full(clock)
    leases = server.leases
    assert leases is not None
    ip = lease(server, REAL)
    assert ask(server, decline(REAL, ip)) is None
    assert leases.get(REAL) is None and not leases.available(ip, "52:54:00:00:00:09")
    assert ask(server, discover(REAL)).yiaddr != ip  # type: ignore[union-attr]
    clock.now += DECLINE_HOLD  # 10 minutes, not the lease time (an hour here)
    assert leases.available(ip, "52:54:00:00:00:09")


def test_defect7_decline_of_an_old_lease_is_not_believed():
    """A client probes its address right after the ACK; a DECLINE much later is someone else's."""
    clock = Clock()
    server = full(clock)
    ip = lease(server, REAL)
    clock.now += DECLINE_WINDOW + 1
    assert ask(server, decline(REAL, ip)) is None
    assert server.leases is not None and server.leases.get(REAL) is not None
    assert server.leases.available(ip, REAL)


def test_defect7_quarantine_is_at_most_a_quarter_of_the_pool():
    """Even a client that really was offered each address (DISCOVER, DECLINE, again) keeps 3/4 of the pool."""
    clock, rng = Clock(), random.Random(8)
    server = full(clock, size=20)
    for _ in range(40):
        mac = stranger(rng)
        offer = ask(server, discover(mac))
        assert offer is not None
        ask(server, decline(mac, offer.yiaddr))
    leases = server.leases
    assert leases is not None
    blocked = [ip for ip in leases.pool.addresses() if leases._declined.blocked(ip, clock.now)]
    assert len(blocked) == 5
    assert len({lease(server, f"52:54:00:00:02:{n:02x}") for n in range(15)}) == 15


def test_defect7_declines_in_an_old_lease_file_are_clamped(tmp_path: Path):
    """A file written by the old server (100 declines for a lease time) blocks at most a quarter of the pool,
    for at most the decline hold."""
    clock = Clock()
    path = tmp_path / "leases.json"
    declined = [{"ip": f"198.18.0.{100 + n}", "until": clock.now + 86400 + n} for n in range(20)]
    path.write_text(json.dumps({"version": 1, "leases": [], "declined": declined}))
    table = LeaseTable(pool(20, lease_time=86400), path, clock=clock, decline_hold=300)
    saved = table._document()["declined"]
    assert [item["ip"] for item in saved] == [f"198.18.0.{n}" for n in range(115, 120)]  # the newest five
    assert all(item["until"] == clock.now + 300 for item in saved)
    clock.now += 301
    assert table._document()["declined"] == []


# ---------------------------------------------------------------------------------------------- offers
def test_defect7_offer_not_followed_by_a_request_frees_its_address_in_seconds():
    clock = Clock()
    server = full(clock, size=1)
    first = ask(server, discover("52:54:00:00:00:01"))
    assert first is not None
    assert ask(server, discover("52:54:00:00:00:02")) is None  # held for the first client ...
    clock.now += OFFER_HOLD  # ... for seconds, not a minute
    second = ask(server, discover("52:54:00:00:00:02"))
    assert second is not None and second.yiaddr == first.yiaddr


def test_defect7_discover_flood_does_not_starve_a_real_client():
    """10,000 DISCOVERs from made-up MACs, never followed by a REQUEST, with a real PC in the middle: the PC is
    offered an address and gets it, although the flood went on between its OFFER and its REQUEST."""
    clock, rng = Clock(), random.Random(9)
    server = full(clock, size=20)
    for _ in range(5000):
        ask(server, discover(stranger(rng)))
        clock.now += 0.0001
    offer = ask(server, discover(REAL, xid=77))
    assert offer is not None
    for _ in range(5000):  # the PC's offer is offered again to others meanwhile
        ask(server, discover(stranger(rng)))
        clock.now += 0.0001
    ack = ask(server, request(REAL, offer.yiaddr, xid=77))
    assert ack is not None and ack.message_type is MessageType.ACK and ack.yiaddr == offer.yiaddr
    assert server.stats["exhausted"] < BURST  # refusals only until the burst was recognised
    leases = server.leases
    assert leases is not None and len(leases._offers) <= 20 + 1024  # memory bounded
    # A second real PC during the flood; then a stranger REQUESTing the first PC's address gets a NAK.
    second = ask(server, discover("52:54:00:aa:bb:02"))
    assert second is not None and second.yiaddr != offer.yiaddr
    assert ask(server, request("52:54:00:aa:bb:02", second.yiaddr)).message_type is MessageType.ACK  # type: ignore[union-attr]
    thief = stranger(rng)
    assert ask(server, request(thief, offer.yiaddr)).message_type is MessageType.NAK  # type: ignore[union-attr]


def test_defect7_a_known_pc_keeps_its_address_during_a_flood():
    clock, rng = Clock(), random.Random(10)
    server = full(clock, size=10)
    ip = lease(server, REAL)
    clock.now += 7200  # expired: an imaged PC back the next day
    for _ in range(200):
        ask(server, discover(stranger(rng)))
    assert lease(server, REAL) == ip


def test_defect7_a_burst_of_real_clients_within_the_pool_is_not_churned():
    """150 PCs for 151 addresses, all DISCOVERing before any REQUESTs: each gets its own address, no NAK."""
    clock = Clock()
    server = full(clock, size=151)
    macs = [f"52:54:00:00:03:{n:02x}" for n in range(150)]
    offers = {mac: ask(server, discover(mac)) for mac in macs}
    assert len({offer.yiaddr for offer in offers.values() if offer}) == 150
    for mac, offer in offers.items():
        assert ask(server, request(mac, offer.yiaddr)).message_type is MessageType.ACK  # type: ignore[union-attr]
    assert server.stats["naks"] == 0


# ------------------------------------------------------------------------------------------ the parts
def test_offers_supersede_and_prune():
    offers = Offers(hold=10, limit=3)
    a, b = IPv4Address("198.18.0.100"), IPv4Address("198.18.0.101")
    offers.add("m1", a, 0)
    offers.add("m2", a, 1)  # superseded: m1 keeps its record, m2 holds the address
    assert offers.holder(a, 2) == "m2" and offers.of("m1", 2) is not None
    offers.add("m3", b, 2)
    offers.add("m4", b, 3)
    assert len(offers) == 3 and offers.of("m1", 3) is None  # the oldest record went
    assert offers.oldest(4, lambda ip: True) == a
    assert offers.holder(a, 11) is None and offers.oldest(11, lambda ip: True) == b
    with pytest.raises(ValueError):
        Offers(hold=0)


def test_burst_needs_several_shortages_within_one_hold():
    offers = Offers(hold=10)
    assert not any(offers.short(t * 20.0) for t in range(10))  # one shortage now and then: no burst
    assert [offers.short(500 + t) for t in range(BURST)] == [False] * (BURST - 1) + [True]


def test_quarantine_lifts_the_oldest_beyond_its_limit(caplog):
    quarantine = Quarantine(hold=100, limit=2)
    ips = [IPv4Address(f"198.18.0.{n}") for n in range(1, 4)]
    with caplog.at_level(logging.INFO, logger="provision.dhcp"):
        for n, ip in enumerate(ips):
            quarantine.add(ip, float(n))
    assert [ip for ip, _ in quarantine.items(3)] == ips[1:]
    assert "lifted early" in caplog.text
    quarantine.add(ips[0], 3, until=50)  # from a file: kept until then
    assert quarantine.blocked(ips[0], 49) and not quarantine.blocked(ips[0], 50)
    with pytest.raises(ValueError):
        Quarantine(hold=-1)
