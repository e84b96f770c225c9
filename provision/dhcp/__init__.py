"""DHCP and PXE for network boot: packets, PXE policy, leases, the answers and the server (docs/dhcp.md).

- `packet`: `DhcpPacket` (RFC 2131/2132, PXE options of RFC 4578) and its encoding, `Opt`, `client_request`.
- `codec`: `parse` (bytes from the wire -> `DhcpPacket`) and `MalformedPacket`.
- `policy`: `PxeSettings`, `boot_answer` (boot file by architecture and user class), and
  `dhcp_config_snippet` for sites that keep their own DHCP server.
- `leases`: `LeasePool` and `LeaseTable` (sticky per MAC, persisted atomically) for full-DHCP mode.
- `answers`: `DhcpResponder`, the replies to one packet (never dies of a packet), `reply_destination`.
- `server`: `DhcpServer` (proxy, full or off): the sockets and the one thread that feed the answers.

MAC addresses are parsed and formatted by `provision.macaddr` (`mac_bytes` is re-exported here).
"""

from provision.dhcp.answers import Channel, DhcpMode, Reply, reply_destination
from provision.dhcp.codec import MalformedPacket, parse
from provision.dhcp.leases import Lease, LeasePool, LeaseStoreError, LeaseTable
from provision.dhcp.packet import DhcpPacket, MessageType, Opt, Options, client_request
from provision.dhcp.policy import (
    PXE_VENDOR_OPTIONS,
    BootAnswer,
    BootKind,
    DhcpSettingsError,
    PxeSettings,
    Skip,
    SnippetKind,
    UefiLoader,
    boot_answer,
    dhcp_config_snippet,
)
from provision.dhcp.server import DhcpBindError, DhcpServer
from provision.macaddr import mac_bytes

__all__ = [
    "PXE_VENDOR_OPTIONS",
    "BootAnswer",
    "BootKind",
    "Channel",
    "DhcpBindError",
    "DhcpMode",
    "DhcpPacket",
    "DhcpServer",
    "DhcpSettingsError",
    "Lease",
    "LeasePool",
    "LeaseStoreError",
    "LeaseTable",
    "MalformedPacket",
    "MessageType",
    "Opt",
    "Options",
    "PxeSettings",
    "Reply",
    "Skip",
    "SnippetKind",
    "UefiLoader",
    "boot_answer",
    "client_request",
    "dhcp_config_snippet",
    "mac_bytes",
    "parse",
    "reply_destination",
]
