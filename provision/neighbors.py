"""Which MAC a client's IPv4 address belongs to on the imaging LAN: the kernel's neighbour (ARP) table.

A PC that talks to the server over the LAN has a neighbour entry: the kernel resolved its address to send
the answer. So a request from address X claiming MAC M can be checked: the table must say X is at M. That
binds a per-boot token to the PC that network-booted: another host of the LAN asking for the victim's boot
script, or posting with its token, is at another MAC and is refused (it would have to take over the victim's
MAC on the switch, which also cuts the victim off). Requests through a router (a DHCP relay) arrive from
the router's MAC: such sites turn the binding off (``boot.bind_tokens: off``).

``/proc/net/arp`` is read per call (a few hundred bytes; the network namespace's own table).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from provision.macaddr import BadMac, normalize_mac

log = logging.getLogger(__name__)

ARP_TABLE = Path("/proc/net/arp")
ATF_COM = 0x2  # the entry is complete (the kernel knows the link-layer address)

Lookup = Callable[[str], str | None]


def parse_arp_table(text: str) -> dict[str, str]:
    """``/proc/net/arp`` -> {IPv4 address: MAC} for the complete entries."""
    found: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        address, _hw_type, flags, mac = fields[0], fields[1], fields[2], fields[3]
        try:
            complete = int(flags, 16) & ATF_COM
            found[address] = normalize_mac(mac)
        except (ValueError, BadMac):
            continue
        if not complete:
            found.pop(address, None)
    return found


def mac_of(address: str, table: Path = ARP_TABLE) -> str | None:
    """The MAC the kernel's neighbour table has for ``address``, or None (no entry, not IPv4, unreadable)."""
    try:
        text = table.read_text()
    except OSError as exc:
        log.warning("neighbour table %s unreadable: %s", table, exc)
        return None
    return parse_arp_table(text).get(address)
