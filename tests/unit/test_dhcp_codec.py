"""DHCP packet codec: round trips, packets shaped like real clients' (PXE ROM, iPXE, UEFI, udhcpc), bad input."""

from __future__ import annotations

import struct
import uuid
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provision.dhcp.codec import MalformedPacket, mac_hint, parse
from provision.dhcp.packet import MAGIC_COOKIE, DhcpPacket, MessageType, Opt, Options, client_request
from provision.errors import FatalError, ProvisionError
from provision.macaddr import mac_bytes

MAC = "52:54:00:12:34:56"
GUID = uuid.UUID("4c4c4544-0044-3510-8052-b4c04f565931")  # as dmidecode prints it
OPT97 = b"\x00" + GUID.bytes_le


def raw_packet(
    options: list[tuple[int, bytes]],
    *,
    mac: str = MAC,
    xid: int = 0x1A2B3C4D,
    flags: int = 0x8000,
    secs: int = 4,
    sname: bytes = b"",
    file: bytes = b"",
    end: bool = True,
    pad_to: int = 0,
    op: int = 1,
    hlen: int = 6,
    cookie: bytes = MAGIC_COOKIE,
) -> bytes:
    """Wire bytes assembled by hand (not by the codec), the way a client's firmware lays them out."""
    head = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        op,
        1,
        hlen,
        0,
        xid,
        secs,
        flags,
        bytes(4),
        bytes(4),
        bytes(4),
        bytes(4),
        mac_bytes(mac).ljust(16, b"\0"),
        sname.ljust(64, b"\0"),
        file.ljust(128, b"\0"),
    )
    body = b"".join(bytes((code, len(value))) + value for code, value in options)
    data = head + cookie + body + (b"\xff" if end else b"")
    return data.ljust(pad_to, b"\0")


# A PXE 2.1 ROM (Intel/Realtek BIOS boot agent) DISCOVER: broadcast flag, option 55 asking for 43, 60, 66,
# 67, 97 and the PXE range 128..135, UNDI 2.1 in option 94.
PXE_ROM_55 = bytes([1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60,
                    66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])  # fmt: skip
PXE_ROM_DISCOVER = raw_packet(
    [
        (53, b"\x01"),
        (57, (1464).to_bytes(2, "big")),
        (55, PXE_ROM_55),
        (97, OPT97),
        (94, b"\x01\x02\x01"),
        (93, b"\x00\x00"),
        (60, b"PXEClient:Arch:00000:UNDI:002001"),
    ]
)

# iPXE (undionly.kpxe or a QEMU NIC ROM): user class "iPXE" raw (not RFC 3004), option 175 feature list.
IPXE_175 = bytes([0xB1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0E, 0xEB, 0x03, 0x01, 0x15, 0x01, 0x17, 0x01, 0x01,
                  0x15, 0x01, 0x01, 0x13, 0x01, 0x01, 0x11, 0x01, 0x01, 0x27, 0x01, 0x01, 0x19, 0x01, 0x01,
                  0x10, 0x01, 0x02, 0x21, 0x01, 0x01])  # fmt: skip
IPXE_55 = bytes([1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203])
IPXE_DISCOVER = raw_packet(
    [
        (53, b"\x01"),
        (57, (1472).to_bytes(2, "big")),
        (93, b"\x00\x00"),
        (94, b"\x01\x02\x01"),
        (60, b"PXEClient:Arch:00000:UNDI:002001"),
        (77, b"iPXE"),
        (55, IPXE_55),
        (175, IPXE_175),
        (61, b"\x01" + mac_bytes(MAC)),
        (97, OPT97),
    ],
    flags=0,
)

# OVMF's own PXE client (arch 7) and UEFI HTTP boot (arch 16).
UEFI_55 = bytes([1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66,
                 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])  # fmt: skip
UEFI_DISCOVER = raw_packet(
    [
        (53, b"\x01"),
        (57, (1472).to_bytes(2, "big")),
        (55, UEFI_55),
        (97, OPT97),
        (94, b"\x01\x03\x00"),
        (93, b"\x00\x07"),
        (60, b"PXEClient:Arch:00007:UNDI:003000"),
    ]
)
HTTP_DISCOVER = raw_packet([(53, b"\x01"), (93, b"\x00\x10"), (60, b"HTTPClient:Arch:00016:UNDI:003001"), (97, OPT97)])

# busybox udhcpc: client id, max size 576, a plain vendor class; the options area zero-padded to 548 bytes.
UDHCPC_DISCOVER = raw_packet(
    [
        (53, b"\x01"),
        (61, b"\x01" + mac_bytes(MAC)),
        (57, (576).to_bytes(2, "big")),
        (55, bytes([1, 3, 6, 12, 15, 28, 42])),
        (60, b"udhcp 1.36.1"),
    ],
    flags=0,
    secs=0,
    pad_to=548,
)


# ------------------------------------------------------------------------------------ real shapes
def test_pxe_rom_discover():
    p = parse(PXE_ROM_DISCOVER)
    assert p.op == 1 and p.mac == MAC and p.xid == 0x1A2B3C4D and p.broadcast and p.secs == 4
    assert p.message_type is MessageType.DISCOVER
    assert p.client_arches == (0,)
    assert p.vendor_class == b"PXEClient:Arch:00000:UNDI:002001"
    assert p.client_machine_id == OPT97
    assert p.client_guid == GUID
    assert p.parameter_request_list == tuple(PXE_ROM_55)
    assert p.user_classes == ()
    assert p.client_id is None and p.requested_ip is None and p.server_id is None
    assert list(p.options) == [53, 57, 55, 97, 94, 93, 60]
    assert p.sname == "" and p.file == ""


def test_ipxe_discover():
    p = parse(IPXE_DISCOVER)
    assert p.user_classes == (b"iPXE",)
    assert p.option(Opt.IPXE_ENCAP) == IPXE_175
    assert p.client_id == b"\x01" + mac_bytes(MAC)
    assert p.client_arches == (0,)
    assert not p.broadcast


def test_uefi_and_http_boot_discover():
    assert parse(UEFI_DISCOVER).client_arches == (7,)
    http = parse(HTTP_DISCOVER)
    assert http.client_arches == (16,)
    assert http.vendor_class is not None and http.vendor_class.startswith(b"HTTPClient")


def test_udhcpc_discover():
    p = parse(UDHCPC_DISCOVER)
    assert len(UDHCPC_DISCOVER) == 548
    assert p.vendor_class == b"udhcp 1.36.1"
    assert p.client_arches == ()
    assert p.parameter_request_list == (1, 3, 6, 12, 15, 28, 42)


@pytest.mark.parametrize("data", [PXE_ROM_DISCOVER, IPXE_DISCOVER, UEFI_DISCOVER, HTTP_DISCOVER, UDHCPC_DISCOVER])
def test_real_shapes_round_trip(data):
    packet = parse(data)
    again = parse(packet.encode())
    assert again == packet
    assert again.encode() == packet.encode()


# ---------------------------------------------------------------------------------------- encode
def test_encode_layout_and_padding():
    packet = client_request(MessageType.DISCOVER, MAC, xid=7)
    data = packet.encode()
    assert len(data) == 300  # BOOTP minimum
    assert data[236:240] == MAGIC_COOKIE
    assert data[240:244] == b"\x35\x01\x01\xff"
    assert data[244:] == bytes(56)
    assert data[28:34] == mac_bytes(MAC)


def test_long_option_is_split_and_concatenated_back():
    value = bytes(range(256)) * 2  # 512 bytes: 255 + 255 + 2
    packet = client_request(MessageType.DISCOVER, MAC, options={Opt.USER_CLASS: value})
    data = packet.encode()
    assert data.count(b"\x4d\xff") == 2  # two full instances of option 77
    assert parse(data).option(Opt.USER_CLASS) == value


def test_repeated_options_are_concatenated():
    data = raw_packet([(53, b"\x01"), (43, b"ab"), (60, b"PXE"), (43, b"cd"), (60, b"Client")])
    p = parse(data)
    assert p.option(43) == b"abcd" and p.vendor_class == b"PXEClient"
    assert list(p.options) == [53, 43, 60]


def test_empty_option_round_trips():
    packet = client_request(MessageType.DISCOVER, MAC, options={80: b""})  # rapid commit has no value
    assert parse(packet.encode()).option(80) == b""


def test_long_names_fill_the_fields():
    packet = DhcpPacket(op=2, sname="s" * 64, file="f" * 128)
    assert parse(packet.encode()) == packet


# -------------------------------------------------------------------------------------- options
def test_user_class_forms():
    def classes(value: bytes) -> tuple[bytes, ...]:
        return client_request(MessageType.DISCOVER, MAC, options={Opt.USER_CLASS: value}).user_classes

    assert classes(b"iPXE") == (b"iPXE",)
    assert classes(b"\x04iPXE") == (b"iPXE",)
    assert classes(b"\x04iPXE\x03lab") == (b"iPXE", b"lab")
    assert classes(b"\x09iPXE") == (b"\x09iPXE",)  # length does not fit: a raw string
    assert classes(b"\x00") == (b"\x00",)


def test_client_arch_list_and_guid_variants():
    p = client_request(MessageType.DISCOVER, MAC, options={93: b"\x00\x07\x00\x10", 97: b"\x01" + bytes(16)})
    assert p.client_arches == (7, 16)
    assert p.client_guid is None  # type byte is not 0
    assert client_request(MessageType.DISCOVER, MAC, options={97: b"\x00"}).client_guid is None


def test_addresses_and_unknown_message_type():
    p = client_request(
        MessageType.REQUEST, MAC, options={50: IPv4Address("198.18.0.50").packed, 54: IPv4Address("198.18.0.1").packed}
    )
    assert p.requested_ip == IPv4Address("198.18.0.50") and p.server_id == IPv4Address("198.18.0.1")
    assert parse(raw_packet([(53, b"\x0d")])).message_type is None  # LEASEQUERY-era types are carried, unknown


def test_options_mapping_is_immutable_and_hashable():
    options = Options({53: b"\x01", 60: b"PXEClient"})
    assert options == {53: b"\x01", 60: b"PXEClient"}
    reordered = Options([(60, b"PXEClient"), (53, b"\x01")])
    assert options == reordered and hash(options) == hash(reordered)
    assert list(reordered) == [60, 53]  # the order is kept for encoding
    packet = client_request(MessageType.DISCOVER, MAC)
    assert hash(packet) == hash(client_request(MessageType.DISCOVER, MAC))
    with pytest.raises(TypeError):
        options[1] = b"x"  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"options": {0: b"x"}},
        {"options": {255: b"x"}},
        {"options": {52: b"\x01"}},
        {"chaddr": bytes(17)},
        {"sname": "x" * 65},
        {"file": "x" * 129},
        {"file": "a\0b"},
        {"file": "caf\u20ac"},
        {"xid": 2**32},
        {"flags": -1},
        {"hlen": 17},
    ],
)
def test_constructor_refuses_unencodable_packets(kwargs):
    with pytest.raises(ValueError):
        DhcpPacket(**kwargs)


def test_option_value_must_be_bytes():
    with pytest.raises(TypeError):
        Options({60: "PXEClient"})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- overload
def test_overload_both_fields_is_merged():
    file_opts = bytes([60, 9]) + b"PXEClient" + b"\xff"
    sname_opts = bytes([93, 2, 0, 7, 255])
    data = raw_packet([(53, b"\x01"), (52, b"\x03"), (60, b"X")], file=file_opts, sname=sname_opts)
    p = parse(data)
    assert p.vendor_class == b"XPXEClient"  # options field first, then file, then sname (RFC 2131 4.1)
    assert p.client_arches == (7,)
    assert p.file == "" and p.sname == ""
    assert 52 not in p.options
    assert parse(p.encode()) == p


def test_overload_file_only_keeps_sname():
    data = raw_packet([(53, b"\x01"), (52, b"\x01")], file=bytes([93, 2, 0, 0, 255]), sname=b"server")
    p = parse(data)
    assert p.client_arches == (0,) and p.sname == "server" and p.file == ""


@pytest.mark.parametrize(
    ("options", "file", "reason"),
    [
        ([(53, b"\x01"), (52, b"\x04")], b"", "overload"),
        ([(53, b"\x01"), (52, b"\x01\x02")], b"", "overload"),
        ([(53, b"\x01"), (52, b"\x01")], bytes([52, 1, 1, 255]), "inside an overloaded field"),
        ([(53, b"\x01"), (52, b"\x01")], bytes([60, 200]) + b"x" * 126, "claims 200 bytes"),
    ],
)
def test_bad_overload_is_malformed(options, file, reason):
    with pytest.raises(MalformedPacket, match=reason):
        parse(raw_packet(options, file=file))


# ------------------------------------------------------------------------------------ malformed
GOOD = raw_packet([(53, b"\x01"), (60, b"PXEClient")])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "0 bytes"),
        (GOOD[:100], "shorter"),
        (GOOD[:239], "shorter"),
        (raw_packet([(53, b"\x01")], cookie=b"\x63\x82\x53\x64"), "magic cookie"),
        (raw_packet([(53, b"\x01")], op=3), "op 3"),
        (raw_packet([(53, b"\x01")], hlen=17), "length 17"),
        (GOOD[:240] + bytes([53, 1, 1, 60, 20]) + b"PXE", "claims 20 bytes"),
        (GOOD[:240] + bytes([53, 1, 1, 60]), "no length byte"),
        (raw_packet([(53, b"\x01\x01")]), "option 53 is 2 bytes"),
        (raw_packet([(53, b"\x03"), (50, b"\xc6\x12\x00")]), "option 50 is 3 bytes"),
        (raw_packet([(53, b"\x03"), (54, b"")]), "option 54 is 0 bytes"),
        (raw_packet([(53, b"\x01"), (93, b"\x00")]), "option 93"),
        (raw_packet([(53, b"\x01"), (93, b"")]), "option 93"),
    ],
)
def test_malformed(data, reason):
    with pytest.raises(MalformedPacket, match=reason) as info:
        parse(data)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, FatalError) and isinstance(err, ProvisionError)
    assert err.reason and reason in str(err)
    assert err.mac == (MAC if len(data) >= 34 else None)
    assert err.facts["mac"] == err.mac


def test_non_bytes_input_is_malformed():
    with pytest.raises(MalformedPacket):
        parse("not bytes")  # type: ignore[arg-type]
    assert parse(bytearray(GOOD)) == parse(memoryview(GOOD)) == parse(GOOD)


def test_missing_end_option_is_tolerated():
    p = parse(raw_packet([(53, b"\x01"), (60, b"PXEClient")], end=False))
    assert p.vendor_class == b"PXEClient"


def test_bytes_after_end_are_ignored():
    data = raw_packet([(53, b"\x01")]) + b"\x3c\xff garbage that would overrun"
    assert list(parse(data).options) == [53]


def test_mac_hint():
    assert mac_hint(GOOD) == MAC
    assert mac_hint(GOOD[:33]) is None


# ------------------------------------------------------------------------------------ properties
_options = st.dictionaries(
    st.integers(1, 254).filter(lambda c: c not in (50, 52, 53, 54, 93)),
    st.binary(max_size=300),
    max_size=8,
)
_addr = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
_text = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=64)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from([1, 2]),
    xid=st.integers(0, 2**32 - 1),
    secs=st.integers(0, 0xFFFF),
    flags=st.integers(0, 0xFFFF),
    hlen=st.integers(0, 16),
    chaddr=st.binary(max_size=16),
    addrs=st.tuples(_addr, _addr, _addr, _addr),
    sname=_text,
    file=_text,
    options=_options,
    mtype=st.integers(1, 255),
    arches=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4),
)
def test_any_valid_packet_round_trips(op, xid, secs, flags, hlen, chaddr, addrs, sname, file, options, mtype, arches):
    packet = DhcpPacket(
        op=op,
        hlen=hlen,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=addrs[0],
        yiaddr=addrs[1],
        siaddr=addrs[2],
        giaddr=addrs[3],
        chaddr=chaddr,
        sname=sname,
        file=file,
        options={53: bytes((mtype,)), 93: b"".join(a.to_bytes(2, "big") for a in arches), **options},
    )
    data = packet.encode()
    assert len(data) >= 300
    assert parse(data) == packet
    assert parse(data).client_arches == tuple(arches)
