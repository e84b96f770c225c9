"""Secrets the server derives instead of storing: one random key in the state directory (0600, made on first
use), and from it, per run, the secret the installed system proves at its first boot.

``firstboot_secret(key, run_id)`` is HMAC-SHA256 of the run id: the same run always gets the same secret (a
hello replayed after a lost answer gets the same plan), the store keeps nothing secret, and checking a
callback needs no table of secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from provision.errors import FatalError

log = logging.getLogger(__name__)

KEY_BYTES = 32


class ServerKeyError(FatalError):
    """The server's key file exists but cannot be read or is not a key."""


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path`` (hex), created with mode 0600 (its folder 0700) when absent."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
        log.info("server key %s created", path)
        return key
    except OSError as exc:
        raise ServerKeyError(f"server key {path}: cannot be read ({exc.strerror or exc})", path=str(path)) from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ServerKeyError(
            f"server key {path}: not {KEY_BYTES} bytes of hex; remove it to make a new one", path=str(path)
        )
    return key


def firstboot_secret(key: bytes, run_id: str) -> str:
    """The secret run ``run_id``'s installed system proves at first boot (64 hex)."""
    return hmac.new(key, f"provision firstboot {run_id}".encode(), hashlib.sha256).hexdigest()


def same_secret(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())
