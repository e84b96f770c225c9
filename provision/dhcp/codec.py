"""Reading DHCP packets from the wire: `parse` and `MalformedPacket`.

`parse` turns any byte string into a `DhcpPacket` or raises `MalformedPacket`, nothing else: it is fed
whatever arrives on UDP port 67. The packet itself, and its encoding, are `provision.dhcp.packet`.

Decisions:
- An option that appears several times is one option whose value is the concatenation (RFC 3396).
- Option overload (52) is read: the options held in `file` and/or `sname` are merged after those of the
  options field (RFC 2131 order), the overloaded fields become empty, and option 52 itself is dropped.
- A missing end option (255) is tolerated when the last option ends exactly at the end of the data; an
  option running past the end is not.
- Only the options whose shape the server relies on are checked: 53 (1 byte), 50 and 54 (4 bytes),
  93 (a non-empty list of 16-bit numbers), 52 (1 byte, 1..3). Every other value is carried as bytes.
- A packet too broken to parse still names its client when it can: `MalformedPacket.mac` is the MAC of
  chaddr (`mac_hint`), so the server logs every dropped packet with its MAC.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from provision.dhcp.packet import BOOTREPLY, BOOTREQUEST, HEADER, MAGIC_COOKIE, DhcpPacket, Opt, Options
from provision.errors import FatalError
from provision.macaddr import format_mac

_FIXED = HEADER.size + len(MAGIC_COOKIE)  # 240
_CHADDR = slice(28, 34)


class MalformedPacket(FatalError, ValueError):
    """Bytes that are not a usable DHCP packet. Carries the reason and the client MAC when it is known."""

    def __init__(self, reason: str, *, mac: str | None = None) -> None:
        who = f" from {mac}" if mac else ""
        super().__init__(f"malformed DHCP packet{who}: {reason}", reason=reason, mac=mac)
        self.reason = reason
        self.mac = mac


def mac_hint(data: bytes) -> str | None:
    """The client MAC of a packet too broken to parse: chaddr bytes 28..34 when there are enough bytes."""
    if len(data) < _CHADDR.stop:
        return None
    return format_mac(data[_CHADDR])


def _field_text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _read_options(buf: bytes, where: str, into: dict[int, list[bytes]], mac: str | None) -> None:
    i = 0
    end = len(buf)
    while i < end:
        code = buf[i]
        if code == Opt.PAD:
            i += 1
            continue
        if code == Opt.END:
            return
        if i + 1 >= end:
            raise MalformedPacket(f"option {code} in {where} has no length byte", mac=mac)
        size = buf[i + 1]
        if i + 2 + size > end:
            raise MalformedPacket(f"option {code} in {where} claims {size} bytes, only {end - i - 2} remain", mac=mac)
        into.setdefault(code, []).append(buf[i + 2 : i + 2 + size])
        i += 2 + size


_EXACT_SIZES = {Opt.MESSAGE_TYPE: 1, Opt.REQUESTED_IP: 4, Opt.SERVER_ID: 4}


def parse(data: bytes | bytearray | memoryview) -> DhcpPacket:
    """Bytes from the wire -> `DhcpPacket`; `MalformedPacket` for anything else, whatever the input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedPacket(f"expected bytes, got {type(data).__name__}")
    buf = bytes(data)
    mac = mac_hint(buf)
    if len(buf) < _FIXED:
        raise MalformedPacket(f"{len(buf)} bytes, shorter than the {_FIXED} of a DHCP header", mac=mac)
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file) = HEADER.unpack_from(
        buf
    )
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise MalformedPacket(f"op {op} is neither BOOTREQUEST nor BOOTREPLY", mac=mac)
    if hlen > 16:
        raise MalformedPacket(f"hardware address length {hlen} is over 16", mac=mac)
    if buf[HEADER.size : _FIXED] != MAGIC_COOKIE:
        raise MalformedPacket(f"bad magic cookie {buf[HEADER.size : _FIXED].hex()}", mac=mac)

    chunks: dict[int, list[bytes]] = {}
    _read_options(buf[_FIXED:], "the options field", chunks, mac)
    overload = chunks.pop(Opt.OVERLOAD, None)
    if overload is not None:
        value = b"".join(overload)
        if len(value) != 1 or value[0] not in (1, 2, 3):
            raise MalformedPacket(f"option 52 (overload) value {value.hex()!r} is not 1, 2 or 3", mac=mac)
        for bit, name, field_bytes in ((1, "file", file), (2, "sname", sname)):
            if value[0] & bit:
                _read_options(field_bytes, f"the overloaded {name} field", chunks, mac)
        if Opt.OVERLOAD in chunks:
            raise MalformedPacket("option 52 (overload) inside an overloaded field", mac=mac)
        file = b"" if value[0] & 1 else file
        sname = b"" if value[0] & 2 else sname

    options = {code: b"".join(parts) for code, parts in chunks.items()}
    for code, size in _EXACT_SIZES.items():
        if code in options and len(options[code]) != size:
            raise MalformedPacket(f"option {code} is {len(options[code])} bytes, not {size}", mac=mac)
    arch = options.get(Opt.CLIENT_ARCH)
    if arch is not None and (len(arch) == 0 or len(arch) % 2):
        raise MalformedPacket(f"option 93 (client arch) is {len(arch)} bytes, not pairs", mac=mac)

    return DhcpPacket(
        op=op,
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=IPv4Address(ciaddr),
        yiaddr=IPv4Address(yiaddr),
        siaddr=IPv4Address(siaddr),
        giaddr=IPv4Address(giaddr),
        chaddr=chaddr,
        sname=_field_text(sname),
        file=_field_text(file),
        options=Options(options),
    )
