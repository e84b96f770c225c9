"""DHCP/BOOTP messages (RFC 2131, 2132) with the PXE options of RFC 4578: the packet and its encoding.

A `DhcpPacket` checks every field when it is constructed, so `DhcpPacket.encode` never fails; reading bytes
from the wire is `provision.dhcp.codec.parse`, and `parse(p.encode()) == p`.

Decisions:
- An option is one value: `encode` splits a value longer than 255 bytes over repeated options (RFC 3396),
  which `parse` concatenates again.
- `encode` never overloads (option 52), so a packet carrying option 52 cannot be constructed.
- `encode` pads to 300 bytes: BOOTP clients (and some PXE ROMs) drop shorter replies.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from provision.macaddr import format_mac, mac_bytes

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
MAGIC_COOKIE = b"\x63\x82\x53\x63"
BROADCAST_FLAG = 0x8000
MIN_PACKET = 300  # BOOTP clients (and some PXE ROMs) drop shorter replies (RFC 1542 section 2.1)

HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, then the magic cookie
ZERO = IPv4Address(0)


class Opt(enum.IntEnum):
    """Option codes used by provision (RFC 2132, 3004, 3046, 4578; 175 is iPXE's)."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77
    RELAY_AGENT_INFO = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_MACHINE_ID = 97
    IPXE_ENCAP = 175
    END = 255


class MessageType(enum.IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Options(Mapping[int, bytes]):
    """An immutable, ordered, hashable mapping of option code (1..254) to value bytes."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[int, bytes] | Iterable[tuple[int, bytes]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        checked: dict[int, bytes] = {}
        for code, value in pairs:
            if not 1 <= int(code) <= 254:
                raise ValueError(f"option code {code} is not 1..254 (0 and 255 are pad and end)")
            if not isinstance(value, bytes):
                raise TypeError(f"option {code}: value must be bytes, not {type(value).__name__}")
            checked[int(code)] = value
        self._items = checked

    def __getitem__(self, code: int) -> bytes:
        return self._items[code]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:  # equality is a mapping's (order-blind), so the hash is too
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"Options({self._items!r})"


@dataclass(frozen=True)
class DhcpPacket:
    """One BOOTP/DHCP message. `chaddr` is kept as its 16 bytes; `mac` is its first `hlen` bytes as text."""

    op: int = BOOTREQUEST
    htype: int = HTYPE_ETHERNET
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    chaddr: bytes = b""
    sname: str = ""
    file: str = ""
    options: Mapping[int, bytes] = field(default_factory=Options)

    def __post_init__(self) -> None:
        for name, limit in (("op", 0xFF), ("htype", 0xFF), ("hops", 0xFF), ("secs", 0xFFFF), ("flags", 0xFFFF)):
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise ValueError(f"{name}={value} is out of range 0..{limit}")
        if not 0 <= self.xid <= 0xFFFFFFFF:
            raise ValueError(f"xid={self.xid} is not a 32-bit number")
        if not 0 <= self.hlen <= 16:
            raise ValueError(f"hlen={self.hlen} is not 0..16")
        if len(self.chaddr) > 16:
            raise ValueError("chaddr is longer than 16 bytes")
        object.__setattr__(self, "chaddr", bytes(self.chaddr).ljust(16, b"\0"))
        for name, size in (("sname", 64), ("file", 128)):
            text = getattr(self, name)
            if "\0" in text:
                raise ValueError(f"{name} holds a NUL character")
            if len(text.encode("latin-1")) > size:  # UnicodeEncodeError is a ValueError too
                raise ValueError(f"{name} is longer than {size} bytes")
        options = self.options if isinstance(self.options, Options) else Options(self.options)
        if Opt.OVERLOAD in options:
            raise ValueError("option 52 (overload) is only read, never encoded")
        object.__setattr__(self, "options", options)

    # ------------------------------------------------------------------------------------- identity
    @property
    def mac(self) -> str:
        return format_mac(self.chaddr[: self.hlen])

    @property
    def is_ethernet(self) -> bool:
        return self.htype == HTYPE_ETHERNET and self.hlen == 6

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    # -------------------------------------------------------------------------------------- options
    def option(self, code: int) -> bytes | None:
        return self.options.get(code)

    @property
    def message_type(self) -> MessageType | None:
        raw = self.options.get(Opt.MESSAGE_TYPE)
        if raw is None or len(raw) != 1 or raw[0] not in MessageType._value2member_map_:
            return None
        return MessageType(raw[0])

    def _address(self, code: int) -> IPv4Address | None:
        raw = self.options.get(code)
        return IPv4Address(raw) if raw is not None and len(raw) == 4 else None

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self._address(Opt.REQUESTED_IP)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._address(Opt.SERVER_ID)

    @property
    def vendor_class(self) -> bytes | None:
        return self.options.get(Opt.VENDOR_CLASS)

    @property
    def client_arches(self) -> tuple[int, ...]:
        """Option 93: the client's architecture types, most preferred first (RFC 4578 2.1)."""
        raw = self.options.get(Opt.CLIENT_ARCH, b"")
        return tuple(int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw) - 1, 2))

    @property
    def client_machine_id(self) -> bytes | None:
        """Option 97 as sent (normally a type byte 0 and a 16-byte GUID)."""
        return self.options.get(Opt.CLIENT_MACHINE_ID)

    @property
    def client_guid(self) -> uuid.UUID | None:
        """The GUID of option 97, in SMBIOS byte order (what dmidecode shows as the system UUID)."""
        raw = self.client_machine_id
        if raw is None or len(raw) != 17 or raw[0] != 0:
            return None
        return uuid.UUID(bytes_le=raw[1:])

    @property
    def user_classes(self) -> tuple[bytes, ...]:
        """Option 77: RFC 3004 length-prefixed items, or the whole value when it is not in that form
        (iPXE and dhclient send a bare string such as b"iPXE")."""
        raw = self.options.get(Opt.USER_CLASS)
        if not raw:
            return ()
        items: list[bytes] = []
        i = 0
        while i < len(raw):
            size = raw[i]
            if size == 0 or i + 1 + size > len(raw):
                return (raw,)
            items.append(raw[i + 1 : i + 1 + size])
            i += 1 + size
        return tuple(items)

    @property
    def parameter_request_list(self) -> tuple[int, ...]:
        return tuple(self.options.get(Opt.PARAMETER_REQUEST_LIST, b""))

    @property
    def client_id(self) -> bytes | None:
        return self.options.get(Opt.CLIENT_ID)

    # --------------------------------------------------------------------------------------- encode
    def encode(self) -> bytes:
        """Wire bytes: header, magic cookie, options in order, end option, zero padding to 300 bytes."""
        head = HEADER.pack(
            self.op,
            self.htype,
            self.hlen,
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr.packed,
            self.yiaddr.packed,
            self.siaddr.packed,
            self.giaddr.packed,
            self.chaddr,
            self.sname.encode("latin-1"),
            self.file.encode("latin-1"),
        )
        out = bytearray(head + MAGIC_COOKIE)
        for code, value in self.options.items():
            if not value:
                out += bytes((code, 0))
            for start in range(0, len(value), 255):
                chunk = value[start : start + 255]
                out += bytes((code, len(chunk))) + chunk
        out.append(Opt.END)
        if len(out) < MIN_PACKET:
            out += bytes(MIN_PACKET - len(out))
        return bytes(out)


def client_request(
    mtype: MessageType,
    mac: str,
    *,
    xid: int = 0,
    flags: int = 0,
    ciaddr: IPv4Address = ZERO,
    giaddr: IPv4Address = ZERO,
    options: Mapping[int, bytes] | None = None,
) -> DhcpPacket:
    """A client's BOOTREQUEST of type `mtype` (option 53 first, then `options`), for tests and lab tools."""
    return DhcpPacket(
        xid=xid,
        flags=flags,
        ciaddr=ciaddr,
        giaddr=giaddr,
        chaddr=mac_bytes(mac),
        options={Opt.MESSAGE_TYPE: bytes((mtype,)), **(options or {})},
    )
