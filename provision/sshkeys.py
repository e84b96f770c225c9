"""The server's SSH identity: one Ed25519 key pair under the state directory (``ssh/id_ed25519`` + ``.pub``).

The live environment trusts only this key (it is baked into its ``/root/.ssh/authorized_keys``), so the
server, and whoever runs it, can log into a PC being imaged; no password works there. The pair is made
with the ``cryptography`` library (no ``ssh-keygen`` subprocess), written with mode 0600 (the folder 0700),
in OpenSSH format, so paramiko and ssh read it. The public file is always derived from the private key.

``parse_public_key`` checks an authorized key line (one key, a known type, base64 whose embedded type
matches, a printable comment) before it is written into an image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provision.errors import FatalError

log = logging.getLogger(__name__)

KEY_DIR = "ssh"
KEY_NAME = "id_ed25519"
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
)
_COMMENT = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,199}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class SshKeyError(FatalError):
    """A key file cannot be read, written or understood."""


@dataclass(frozen=True)
class ServerKey:
    """The server's key pair on disk and its public half as one ``authorized_keys`` line."""

    private_path: Path
    public_path: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_line)


def parse_public_key(text: str, *, source: str = "key") -> str:
    """The one OpenSSH public key in ``text`` as a normalised line (``type base64 [comment]``).

    Refuses options before the key, several keys, unknown types, bad base64, a blob whose embedded type
    differs from the named one, and comments with control characters. Comment lines (``#``) and blank
    lines are ignored.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise SshKeyError(f"{source}: expected exactly one public key line, found {len(lines)}", source=source)
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise SshKeyError(
            f"{source}: not an OpenSSH public key (type must be one of {', '.join(KEY_TYPES)}; no options)",
            source=source,
        )
    kind, blob = parts[0], parts[1]
    if not _BASE64.match(blob):
        raise SshKeyError(f"{source}: the key is not base64", source=source)
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SshKeyError(f"{source}: the key is not base64: {exc}", source=source) from exc
    if len(raw) < 4:
        raise SshKeyError(f"{source}: the key is truncated", source=source)
    (length,) = struct.unpack(">I", raw[:4])
    if raw[4 : 4 + length].decode("ascii", "replace") != kind:
        raise SshKeyError(f"{source}: the key blob is not a {kind} key", source=source)
    comment = parts[2].strip() if len(parts) == 3 else ""
    if comment and not _COMMENT.match(comment):
        raise SshKeyError(f"{source}: the key comment has control or non-ASCII characters", source=source)
    return f"{kind} {blob}" + (f" {comment}" if comment else "")


def fingerprint(public_line: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` shows it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _write_private(path: Path, data: bytes) -> bool:
    """Create ``path`` with mode 0600 from the start (never readable by others, not even briefly), unless it
    exists: False then (another process made its key first: that one is kept, so both use the same)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")  # its own: a writer at once has another
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # never replaces: two first uses at once end with one key
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _write_public(path: Path, line: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    tmp.write_text(line + "\n", encoding="ascii")
    tmp.chmod(0o644)
    tmp.replace(path)


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SshKeyError(f"{path}: cannot read: {exc.strerror}", path=str(path)) from exc
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SshKeyError(f"{path}: not an unencrypted OpenSSH private key: {exc}", path=str(path)) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SshKeyError(f"{path}: not an Ed25519 key", path=str(path))
    return key


def _public_line(key: Ed25519PrivateKey, comment: str) -> str:
    blob = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return blob.decode("ascii") + (f" {comment}" if comment else "")


def ensure_server_key(state_dir: Path, *, comment: str | None = None) -> ServerKey:
    """The server's key pair under ``state_dir/ssh``: created on first use, checked afterwards.

    An existing private key is kept (its mode is tightened to 0600 if it was looser) and the ``.pub`` file is
    rewritten when it is missing or does not belong to it.
    """
    folder = state_dir / KEY_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
    except OSError as exc:
        raise SshKeyError(f"{folder}: cannot create: {exc.strerror}", path=str(folder)) from exc
    private, public = folder / KEY_NAME, folder / f"{KEY_NAME}.pub"
    label = comment if comment is not None else f"provision@{socket.gethostname()}"
    if not _COMMENT.match(label):
        label = "provision"
    if private.exists():
        key = _load_private(private)
        if private.stat().st_mode & 0o077:
            log.warning("%s was readable by others: mode set to 0600", private)
            private.chmod(0o600)
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        if _write_private(private, pem):
            log.info("created the server's SSH key %s", private)
        else:  # made by another process meanwhile (two commands' first use at once): theirs is the key
            key = _load_private(private)
    existing = public.read_text(encoding="ascii", errors="replace").strip() if public.is_file() else ""
    derived = _public_line(key, "")
    if existing.split()[:2] == derived.split()[:2]:
        line = parse_public_key(existing, source=str(public))
    else:
        line = _public_line(key, label)
        _write_public(public, line)
        if existing:
            log.warning("%s did not match %s: rewritten", public, private)
    return ServerKey(private, public, line)
