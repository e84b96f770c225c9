"""Fuzz the DHCP codec and the per-packet answers (tests/support/fuzz.py: counts, PROVISION_FUZZ_EXAMPLES).

- ``dhcp-mutations``: 100,000 random and mutated packets (seeded) into `parse` and into the server's per-packet
  handler, in proxy and full mode, on the DHCP and the PXE port;
- ``dhcp-parse``, ``dhcp-parse-cookie``: hypothesis bytes into `parse` (random, and past the magic cookie);
- ``dhcp-answers``: hypothesis packets built field by field (header values, option codes and values that matter
  to the policy, broken lengths) into `DhcpResponder.handle_packet` in every mode (proxy, full, off), on both
  ports, with the boot file table's variants (shim or iPXE for UEFI, a machine not to boot, iPXE chaining).

`parse` may only raise MalformedPacket; whatever parses must encode and parse back to itself; the handler
must never raise nor hit its last-resort error path (stats["errors"] stays 0); every reply parses back to
itself, answers the request (xid, chaddr), goes where `reply_destination` says and leases from the pool.
"""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest
from hypothesis import strategies as st

from provision.dhcp.answers import Channel, DhcpMode, DhcpResponder, reply_destination
from provision.dhcp.codec import MalformedPacket, parse
from provision.dhcp.leases import LeasePool, LeaseTable
from provision.dhcp.packet import BOOTREPLY, MAGIC_COOKIE, MessageType, client_request
from provision.dhcp.policy import PxeSettings
from provision.dhcp.server import DhcpServer
from tests.support import fuzz

MUTATIONS = 100_000  # CI figure of dhcp-mutations (~6 s here); a fifth of them random bytes
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


def inputs(rng: random.Random, total: int) -> Iterator[bytes]:
    """One in five random bytes (one in four of those past the header checks), the rest mutated seeds."""
    base = seeds()
    for n in range(total):
        if n % 20 == 0:
            yield rng.randbytes(236) + MAGIC_COOKIE + rng.randbytes(rng.randint(0, 120))
        elif n % 5 == 0:
            yield rng.randbytes(rng.choice([0, 1, 33, 34, 239, 240, 241, 300, rng.randint(0, 700)]))
        else:
            yield mutate(rng, rng.choice(base))


@pytest.fixture
def quiet() -> Iterator[None]:
    """The DHCP loggers at CRITICAL (without caplog, so pytest -p no:logging works too)."""
    logger = logging.getLogger("provision.dhcp")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def test_fuzz_parse_and_handler(quiet):
    target = fuzz.target("dhcp-mutations", examples=MUTATIONS, budget=60, deadline=1, hang=10)
    total = target.examples
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
    for n, data in enumerate(inputs(rng, total)):
        with target.case() as run:
            if not run:
                continue
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
    target.done()  # the budget is 60 s for 100,000 (~6 s here): far beyond means something went quadratic
    received = sum(s.stats["received"] for s, _ in servers)
    answered = sum(s.stats["offers"] + s.stats["acks"] + s.stats["naks"] for s, _ in servers)
    assert received == target.cases
    if target.cases >= 1000:
        assert parsed > target.cases // 5, parsed  # many mutants stay valid enough to reach the policy
        assert answered > target.cases // 20, answered


def parses_back_or_is_malformed(data: bytes) -> None:
    try:
        packet = parse(data)
    except MalformedPacket:
        return
    assert parse(packet.encode()) == packet


def test_parse_raises_only_malformed_packet():
    target = fuzz.target("dhcp-parse", examples=2000, budget=30, deadline=1, hang=10)

    @target.given(st.binary(max_size=800))
    def case(data: bytes) -> None:
        parses_back_or_is_malformed(data)

    case()
    target.done()


def test_parse_past_the_cookie():
    target = fuzz.target("dhcp-parse-cookie", examples=1000, budget=30, deadline=1, hang=10)

    @target.given(st.binary(min_size=236, max_size=236), st.binary(max_size=300))
    def case(head: bytes, options: bytes) -> None:
        parses_back_or_is_malformed(head + MAGIC_COOKIE + options)

    case()
    target.done()


# --- dhcp-answers: packets built field by field, every mode --------------------------------------------------

POOL = LeasePool(
    start=IPv4Address("198.18.0.100"), end=IPv4Address("198.18.0.107"), netmask=IPv4Address("255.255.255.0"),
    router=IPv4Address("198.18.0.1"), dns=(IPv4Address("198.18.0.1"),), lease_time=600,
)  # fmt: skip
MACS = [bytes([0x52, 0x54, 0, 0, 0, n]) for n in range(12)]  # few clients, so leases are taken, renewed, exhausted
ADDRESSES = [0, int(SERVER), int(POOL.start), int(POOL.start) + 3, int(POOL.end), int(POOL.end) + 1,
             int(IPv4Address("10.1.1.1")), 0xFFFFFFFF]  # fmt: skip
ARCHES = [0, 6, 7, 9, 10, 11, 16, 0xFFFF]
VENDOR_CLASSES = [b"PXEClient", b"PXEClient:Arch:00000:UNDI:002001", b"PXEClient:Arch:00007:UNDI:003016",
                  b"PXEClient:Arch:", b"PXEClient:Arch:9999999999", b"HTTPClient:Arch:00016", b"HTTPClient",
                  b"udhcp 1.36.1", b"MSFT 5.0", b"", b"PXEClient:Arch:\xff\xfe"]  # fmt: skip


def _address(value: int) -> bytes:
    return value.to_bytes(4, "big")


def option_values(code: int) -> st.SearchStrategy[bytes]:
    """Values that matter to the policy for ``code``, wrong lengths included, or any bytes."""
    anything = st.binary(max_size=300)
    specific: dict[int, st.SearchStrategy[bytes]] = {
        50: st.sampled_from(ADDRESSES).map(_address) | st.binary(max_size=6),
        54: st.sampled_from(ADDRESSES).map(_address) | st.binary(max_size=6),
        60: st.sampled_from(VENDOR_CLASSES) | st.binary(max_size=60),
        77: st.sampled_from([b"iPXE", b"\x04iPXE", b"\x04iPX", b"\x00", b"\xff" + b"x" * 10, b""]),
        93: st.lists(st.sampled_from(ARCHES), max_size=4).map(lambda a: b"".join(x.to_bytes(2, "big") for x in a))
        | st.binary(max_size=5),
        97: st.sampled_from([b"\x00" + bytes(range(16)), b"\x00", b""]) | st.binary(max_size=20),
        55: st.binary(max_size=40),
        52: st.sampled_from([b"\x01", b"\x02", b"\x03", b"\x00", b"\x04", b""]),
        82: st.binary(max_size=40),
        175: st.binary(max_size=20),
    }
    return specific.get(code, anything)


CLIENTS: list[dict[int, bytes]] = [
    {60: b"PXEClient:Arch:00000:UNDI:002001", 93: b"\x00\x00", 97: b"\x00" + bytes(range(16))},  # BIOS PXE ROM
    {60: b"PXEClient:Arch:00007:UNDI:003016", 93: b"\x00\x07"},  # UEFI
    {60: b"PXEClient:Arch:00000:UNDI:002001", 93: b"\x00\x00", 77: b"iPXE", 175: b"\xb1\x05\x01\x80\x86\x10\x0e"},
    {60: b"HTTPClient:Arch:00016", 93: b"\x00\x10"},  # UEFI HTTP boot
    {60: b"udhcp 1.36.1", 61: b"\x01RT\x00\x124V"},  # not PXE
    {},
]
EXTRA_CODES = [50, 54, 55, 97, 82, 93, 60, 77, 52, 12, 57]


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([code, len(value)]) + value for code, value in options) + b"\xff"


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    """A client's packet as on the wire: a message type, a kind of client (BIOS, UEFI, iPXE, HTTP boot, not
    PXE), extra options with values that matter to the policy, header addresses; then one time in three one
    breakage (op, hlen, cookie, a length that lies, a cut)."""
    mtype = draw(st.integers(1, 9))
    options = [(53, bytes([mtype])), *draw(st.sampled_from(CLIENTS)).items()]
    extra = draw(st.lists(st.sampled_from(EXTRA_CODES), max_size=3, unique=True))
    options += [(code, draw(option_values(code))[:255]) for code in extra]
    ciaddr, giaddr = draw(st.sampled_from(ADDRESSES)), draw(st.sampled_from([0, 0, 0, int(IPv4Address("10.1.1.1"))]))
    xid, flags = draw(st.integers(0, 0xFFFFFFFF)), draw(st.sampled_from([0, 0x8000]))
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, flags, ciaddr.to_bytes(4, "big"), bytes(4), bytes(4),
        giaddr.to_bytes(4, "big"), draw(st.sampled_from(MACS)).ljust(16, b"\0"), bytes(64), bytes(128),
    )  # fmt: skip
    data = bytearray(header + MAGIC_COOKIE + encode_options(options))
    breakage = draw(st.integers(0, 20))
    if breakage == 0:  # op, htype, hlen
        data[draw(st.integers(0, 2))] = draw(st.sampled_from([0, 2, 3, 6, 16, 17, 255]))
    elif breakage == 1:  # the cookie
        data[236 + draw(st.integers(0, 3))] ^= 1 << draw(st.integers(0, 7))
    elif breakage == 2:  # a length byte that lies
        lengths, i = [], 240
        while i + 1 < len(data) and data[i] != 255:
            lengths.append(i + 1)
            i += 2 + data[i + 1]
        data[draw(st.sampled_from(lengths))] = draw(st.sampled_from([0, 1, 2, 3, 4, 254, 255]))
    elif breakage == 3:  # cut
        del data[draw(st.sampled_from([0, 1, 235, 239, 240, 241, 243, len(data) - 1])) :]
    elif breakage == 4:  # options overloaded into sname and file (option 52), with what they hold
        data[44:50] = bytes([77, 4]) + b"iPXE"
        data[108:113] = bytes([93, 2, 0, 7, 255])
        data[240:240] = bytes([52, 1, draw(st.integers(0, 4))])
    elif breakage == 5:  # random bytes anywhere
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@dataclass
class Answerer:
    responder: DhcpResponder
    channel: Channel


def refused_macs(mac: str) -> bool:
    return not mac.endswith(":0b")  # the last client of MACS is "a machine not to network-boot"


def chain_every_third(mac: str, xid: int, ipxe: bool) -> bool:
    return xid % 3 == 0


def answerers() -> list[Answerer]:
    shim = PxeSettings(server_ip=SERVER, http_port=8080)
    variants = [
        shim,
        PxeSettings(server_ip=SERVER, http_port=8080, uefi_loader="ipxe", boot_allowed=refused_macs),
        PxeSettings(server_ip=SERVER, http_port=80, chain_ipxe=chain_every_third),
    ]
    out = []
    for settings in variants:
        for channel in Channel:
            out.append(Answerer(DhcpResponder(settings, DhcpMode.PROXY), channel))
            table = LeaseTable(POOL, reserved=[SERVER], offer_hold=5, decline_hold=30)
            out.append(Answerer(DhcpResponder(settings, DhcpMode.FULL, leases=table), channel))
            out.append(Answerer(DhcpResponder(settings, DhcpMode.OFF), channel))
    return out


def test_fuzz_answers_in_every_mode(quiet):
    target = fuzz.target("dhcp-answers", examples=2000, budget=40, deadline=1, hang=10)
    every = answerers()
    sources = [("0.0.0.0", 68), ("198.18.0.103", 68), ("127.0.0.1", 40000), ("10.1.1.1", 67)]

    @target.given(packets(), st.sampled_from(range(len(every))), st.sampled_from(sources))
    def case(data: bytes, which: int, source: tuple[str, int]) -> None:
        answerer = every[which]
        responder = answerer.responder
        errors = responder.stats["errors"]
        replies = responder.handle_packet(data, source, answerer.channel)
        assert responder.stats["errors"] == errors, f"handler error: {data.hex()}"
        if replies:
            request = parse(data)
            assert responder.mode is not DhcpMode.OFF
        for reply in replies:
            assert parse(reply.data) == reply.packet
            assert len(reply.data) >= 300
            answer = reply.packet
            assert answer.op == BOOTREPLY
            assert (answer.xid, answer.chaddr, answer.giaddr) == (request.xid, request.chaddr, request.giaddr)
            assert reply.destination == reply_destination(request, source)
            if answer.message_type is MessageType.OFFER and responder.mode is DhcpMode.FULL:
                assert answer.yiaddr in POOL and answer.yiaddr != SERVER, answer.yiaddr

    case()
    target.done()
    answered = sum(a.responder.stats["offers"] + a.responder.stats["acks"] for a in every)
    assert answered > 0
