"""SSH public keys for tests.

- ``authorized_key_line(kind, blob_kind, comment)``: an authorized_keys line with a fixed 32-byte key; its blob
  names ``blob_kind`` (default: ``kind``), so a line can disagree with itself.
"""

from __future__ import annotations

import base64
import struct


def authorized_key_line(kind: str = "ssh-ed25519", blob_kind: str | None = None, comment: str = "") -> str:
    """``<kind> <base64 blob> [comment]``: the blob holds ``blob_kind`` (default ``kind``) and bytes 0..31."""
    name = (blob_kind or kind).encode()
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", 32) + bytes(range(32))
    return f"{kind} {base64.b64encode(blob).decode()}" + (f" {comment}" if comment else "")
