"""MAC addresses: the one place they are parsed and formatted.

Text arrives from DHCP, iPXE (URL-encoded ':' in old versions), GRUB and humans (`normalize_mac`); the DHCP
codec turns a packet's hardware address into text (`format_mac`) and a test's or lab tool's text into bytes
(`mac_bytes`). Text that is not a MAC address raises `BadMac`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from provision.errors import RequestError

_HEX12 = re.compile(r"^[0-9a-f]{12}$")


class BadMac(RequestError, ValueError):
    """Not a MAC address (HTTP 400); carries the offending text (truncated) for the log."""

    def __init__(self, text: str) -> None:
        super().__init__(f"not a MAC address: {text[:64]!r}", text=text[:64])
        self.text = text[:64]


def normalize_mac(text: str) -> str:
    """'52%3A54%3A00%3A12%3A34%3A56', '52-54-00-12-34-56', '525400123456' -> '52:54:00:12:34:56'."""
    raw = unquote(text).strip().lower()
    digits = raw.replace(":", "").replace("-", "").replace(".", "")
    if not _HEX12.match(digits) or len(raw) not in (12, 14, 17):
        raise BadMac(text)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def format_mac(data: bytes) -> str:
    """Hardware address bytes -> lowercase hex pairs joined by ':', as many as there are bytes.

    A DHCP packet's address is the first `hlen` (0..16) bytes of its chaddr, so any length is formatted
    (b"" gives ""): this only ever names a client in replies and log lines, it never refuses one.
    """
    return ":".join(f"{b:02x}" for b in data)


def mac_bytes(text: str) -> bytes:
    """'52:54:00:12:34:56' (or with '-', or bare hex digits) -> its 6 bytes; `BadMac` for anything else."""
    digits = text.replace(":", "").replace("-", "")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raise BadMac(text) from None
    if len(raw) != 6:
        raise BadMac(text)
    return raw
