"""DHCP and PXE for network boot: packet codec, PXE policy, leases, and the server (docs/dhcp.md).

- `codec`: `DhcpPacket`, `parse`, `MalformedPacket` (RFC 2131/2132, PXE options of RFC 4578).
- `policy`: `PxeSettings`, `decide_boot` (boot file by architecture and user class), and
  `dhcp_config_snippet` for sites that keep their own DHCP server.
- `leases`: `LeasePool` and `LeaseTable` (sticky per MAC, persisted atomically) for full-DHCP mode.
- `server`: `DhcpServer` (proxy, full or off), one thread, never dies of a packet.
"""

from provision.dhcp.codec import (
    DhcpPacket,
    MalformedPacket,
    MessageType,
    Opt,
    Options,
    client_request,
    mac_bytes,
    parse,
)
from provision.dhcp.leases import Lease, LeasePool, LeaseStoreError, LeaseTable
from provision.dhcp.policy import (
    PXE_VENDOR_OPTIONS,
    BootAnswer,
    BootKind,
    DhcpSettingsError,
    PxeSettings,
    Skip,
    SnippetKind,
    UefiLoader,
    decide_boot,
    dhcp_config_snippet,
)
from provision.dhcp.server import Channel, DhcpBindError, DhcpMode, DhcpServer, Reply, reply_destination

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
    "client_request",
    "decide_boot",
    "dhcp_config_snippet",
    "mac_bytes",
    "parse",
    "reply_destination",
]
