"""MAC addresses as they arrive from DHCP, iPXE (URL-encoded ':' in old versions), GRUB and humans."""

from __future__ import annotations

import re
from urllib.parse import unquote

_HEX12 = re.compile(r"^[0-9a-f]{12}$")


class BadMac(ValueError):
    """Not a MAC address; carries the offending text (truncated) for the log."""

    def __init__(self, text: str) -> None:
        super().__init__(f"not a MAC address: {text[:64]!r}")
        self.text = text[:64]


def normalize_mac(text: str) -> str:
    """'52%3A54%3A00%3A12%3A34%3A56', '52-54-00-12-34-56', '525400123456' -> '52:54:00:12:34:56'."""
    raw = unquote(text).strip().lower()
    digits = raw.replace(":", "").replace("-", "").replace(".", "")
    if not _HEX12.match(digits) or len(raw) not in (12, 14, 17):
        raise BadMac(text)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def mac_from_bytes(data: bytes) -> str:
    if len(data) < 6:
        raise BadMac(data.hex())
    return ":".join(f"{b:02x}" for b in data[:6])
