"""Fuzz: 100,000 random and mutated packets into `parse` and into the server's per-packet handler.

`parse` may only raise MalformedPacket; whatever parses must encode and parse back to itself; the handler
must never raise nor hit its last-resort error path (stats["errors"] stays 0), in proxy and full mode, on
the DHCP and the PXE port. Seeded, so a failure names an input that reproduces.
"""

from __future__ import annotations

import logging
import random
import time
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provision.dhcp.answers import Channel, DhcpMode
from provision.dhcp.codec import MalformedPacket, parse
from provision.dhcp.leases import LeasePool
from provision.dhcp.packet import MAGIC_COOKIE, MessageType, client_request
from provision.dhcp.policy import PxeSettings
from provision.dhcp.server import DhcpServer

TOTAL = 100_000
RANDOM_SHARE = 20_000
SERVER = IPv4Address("198.18.0.1")
MAC = "52:54:00:12:34:56"
GUID = b"\x00" + bytes(range(16))


def seeds() -> list[bytes]:
    pxe = {93: b"\x00\x00", 94: b"\x01\x02\x01", 60: b"PXEClient:Arch:00000:UNDI:002001", 97: GUID}
    out = [
        client_request(MessageType.DISCOVER, MAC, options={57: b"\x05\xc0", 55: bytes([1, 3, 43, 60, 66, 67]), **pxe}),
        client_request(MessageType.DISCOVER, MAC, options={**pxe, 77: b"iPXE", 175: b"\xb1\x05\x01\x80\x86\x10\x0e"}),
        client_request(MessageType.DISCOVER, MAC, options={**pxe, 93: b"\x00\x07"}),
        client_request(MessageType.DISCOVER, MAC, options={93: b"\x00\x10", 60: b"HTTPClient:Arch:00016"}),
        client_request(MessageType.DISCOVER, MAC, options={61: b"\x01RT\x00\x124V", 60: b"udhcp 1.36.1"}),
        client_request(MessageType.REQUEST, MAC, options={50: bytes([198, 18, 0, 100]), 54: SERVER.packed, **pxe}),
        client_request(MessageType.REQUEST, MAC, ciaddr=IPv4Address("198.18.0.101")),
        client_request(MessageType.REQUEST, MAC, ciaddr=IPv4Address("10.0.0.5"), options=pxe),
        client_request(MessageType.RELEASE, MAC, ciaddr=IPv4Address("198.18.0.100"), options={54: SERVER.packed}),
        client_request(MessageType.DECLINE, MAC, options={50: bytes([198, 18, 0, 101]), 54: SERVER.packed}),
        client_request(MessageType.INFORM, MAC, ciaddr=IPv4Address("198.18.0.20"), options=pxe),
        client_request(MessageType.DISCOVER, MAC, giaddr=IPv4Address("10.1.1.1"), options={**pxe, 82: b"\x01\x01x"}),
    ]
    data = [p.encode() for p in out]
    # An overloaded packet: options continue in the file and sname fields (option 52 = 3).
    overloaded = bytearray(data[0])
    overloaded[108:116] = bytes([93, 2, 0, 7, 255, 0, 0, 0])
    overloaded[44:50] = bytes([77, 4]) + b"iPXE"
    overloaded[240:243] = bytes([52, 1, 3])
    data.append(bytes(overloaded[:243]) + bytes([53, 1, 1, 60, 9]) + b"PXEClient" + b"\xff")
    return data


def option_offsets(data: bytes) -> list[int]:
    """Offsets of the length bytes of the options (walks until the data stops making sense)."""
    offsets, i = [], 240
    while i + 1 < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        offsets.append(i + 1)
        i += 2 + data[i + 1]
    return offsets


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.randrange(7)
        if kind == 0 and buf:  # bit flips
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(buf))
                buf[pos] ^= 1 << rng.randrange(8)
        elif kind == 1 and buf:  # truncation
            del buf[rng.randrange(len(buf)) :]
        elif kind == 2:  # option length corruption
            offsets = option_offsets(bytes(buf))
            if offsets:
                buf[rng.choice(offsets)] = rng.choice([0, 1, 2, 3, 4, 17, 127, 254, 255, rng.randrange(256)])
        elif kind == 3:  # random bytes inserted in the options area
            pos = rng.randint(min(240, len(buf)), len(buf))
            buf[pos:pos] = rng.randbytes(rng.randint(1, 12))
        elif kind == 4 and len(buf) > 240:  # an interesting header byte (op, hlen, cookie, message type)
            pos = rng.choice([0, 1, 2, 236, 237, 238, 239, 240, 241, 242])
            if pos < len(buf):
                buf[pos] = rng.choice([0, 1, 2, 3, 6, 7, 8, 16, 17, 52, 53, 255])
        elif kind == 5:  # a random option appended where the end option was
            code = rng.choice([50, 52, 53, 54, 55, 60, 61, 77, 82, 93, 97, rng.randrange(256)])
            value = rng.randbytes(rng.choice([0, 1, 2, 3, 4, 5, 17, rng.randint(0, 255)]))
            end = buf.find(b"\xff", 240)
            buf[end if end >= 0 else len(buf) :] = bytes([code, len(value)]) + value + b"\xff"
        elif kind == 6 and len(buf) > 34:  # a different client, so full mode allocates
            buf[28:34] = rng.randbytes(6)
    return bytes(buf)


def inputs(rng: random.Random) -> list[bytes]:
    base = seeds()
    out: list[bytes] = []
    for n in range(RANDOM_SHARE):
        if n % 4 == 0:  # random, but past the header checks sometimes
            out.append(rng.randbytes(236) + MAGIC_COOKIE + rng.randbytes(rng.randint(0, 120)))
        else:
            out.append(rng.randbytes(rng.choice([0, 1, 33, 34, 239, 240, 241, 300, rng.randint(0, 700)])))
    while len(out) < TOTAL:
        out.append(mutate(rng, rng.choice(base)))
    return out


@pytest.fixture
def quiet(caplog):
    caplog.set_level(logging.CRITICAL, logger="provision.dhcp")


def test_fuzz_parse_and_handler(quiet):
    started = time.monotonic()
    rng = random.Random(20261127)
    pxe = PxeSettings(server_ip=SERVER, http_port=8080)
    pool = LeasePool(
        start=IPv4Address("198.18.0.100"), end=IPv4Address("198.18.0.115"), netmask=IPv4Address("255.255.255.0")
    )
    servers = [
        (DhcpServer(pxe, DhcpMode.PROXY), Channel.DHCP),
        (DhcpServer(pxe, DhcpMode.PROXY), Channel.PXE),
        (DhcpServer(pxe, DhcpMode.FULL, pool=pool), Channel.DHCP),
        (DhcpServer(pxe, DhcpMode.FULL, pool=pool), Channel.PXE),
    ]
    sources = [("0.0.0.0", 68), ("198.18.0.100", 68), ("127.0.0.1", 40000)]
    parsed = 0
    for n, data in enumerate(inputs(rng)):
        try:
            packet = parse(data)
        except MalformedPacket:
            pass
        else:
            parsed += 1
            assert parse(packet.encode()) == packet, data.hex()
        server, channel = servers[n % len(servers)]
        errors = server.stats["errors"]
        replies = server.handle_packet(data, sources[n % len(sources)], channel)
        assert server.stats["errors"] == errors, f"handler error on input {n}: {data.hex()}"
        for reply in replies:
            assert parse(reply.data) == reply.packet
    received = sum(s.stats["received"] for s, _ in servers)
    answered = sum(s.stats["offers"] + s.stats["acks"] + s.stats["naks"] for s, _ in servers)
    assert received == TOTAL
    assert parsed > TOTAL // 5, parsed  # many mutants stay valid enough to reach the policy
    assert answered > TOTAL // 20, answered
    assert time.monotonic() - started < 60  # the budget is ~20 s; far beyond means something went quadratic


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=800))
def test_parse_raises_only_malformed_packet(data):
    try:
        packet = parse(data)
    except MalformedPacket:
        return
    assert parse(packet.encode()) == packet


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=236, max_size=236), st.binary(max_size=300))
def test_parse_past_the_cookie(head, options):
    test_parse_raises_only_malformed_packet.hypothesis.inner_test(head + MAGIC_COOKIE + options)  # type: ignore[attr-defined]
