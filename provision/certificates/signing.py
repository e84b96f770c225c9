"""The server's certificate signing key (Ed25519) and the signed JSON a donor verifies offline.

The key is its own file (config ``certificates.key``, default ``STATE/keys/certificates_ed25519``): PEM PKCS8,
created 0600 on first use, never logged. Its public half is given to donors as PEM or as one base64 line; a short
``fingerprint`` (16 hex digits of the sha256 of the raw public key) names it on every certificate.

A signed certificate file is one JSON object, written in canonical form (sorted keys, no whitespace, UTF-8, as
image indexes are: ``provision.wire.index.canonical_json``) and a newline::

    {"certificate": {...}, "signature": {"algorithm": "ed25519", "key": FINGERPRINT, "value": BASE64}}

The signature is over the canonical JSON of ``certificate``. ``verify_bytes`` also checks that the file is
exactly that canonical form, so a changed byte anywhere (even a space) fails; ``verify`` checks a decoded object.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provision.certificates.errors import KeyFileError, SignatureInvalid
from provision.certificates.model import AnyCertificate, certificate_from_dict
from provision.errors import InvalidPayload
from provision.wire.index import canonical_json

ALGORITHM = "ed25519"
MAX_FILE = 64 << 20  # bytes of a certificate file (a batch of thousands of machines fits)
MAX_KEY_FILE = 64 << 10  # bytes read of a key file (an Ed25519 PEM is 119)


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key: what donors get, and what names a signature."""

    raw: bytes  # 32 bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def line(self) -> str:
        """One base64 line (the raw 32 bytes), easy to put in a letter or an e-mail."""
        return base64.b64encode(self.raw).decode("ascii")

    def pem(self) -> str:
        return (
            self._key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def _key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.raw)


@dataclass(frozen=True)
class SigningKey:
    """The server's private key (its file's path kept for messages; the key itself is never shown)."""

    private: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> PublicKey:
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(raw)

    def __repr__(self) -> str:
        return f"SigningKey(path={str(self.path)!r}, fingerprint={self.public.fingerprint!r})"


@dataclass(frozen=True)
class Verified:
    """A certificate whose signature checked against ``fingerprint``'s key."""

    certificate: AnyCertificate
    fingerprint: str


def load_key(path: Path) -> SigningKey:
    """The signing key in ``path``. KeyFileError when it is missing, not an Ed25519 PEM private key, or open to
    anyone but its owner (group or other permission bits, e.g. 0644 after a restore): the server does not sign
    with a key others may have read; ``chmod 600 FILE`` says the owner alone may."""
    try:
        with path.open("rb") as file:
            mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
            data = file.read(MAX_KEY_FILE)
    except OSError as exc:
        raise KeyFileError(f"cannot read the certificate signing key {path}: {exc.strerror}", path=str(path)) from exc
    if mode & 0o077:
        raise KeyFileError(
            f"the certificate signing key {path} is open to others (mode {mode:04o}): no certificate is signed with "
            f"a key others may have read. Run: chmod 600 {path} (and if others did read it, see docs/certificates.md: "
            "make a new key)", path=str(path), mode=f"{mode:04o}",
        )  # fmt: skip
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM private key without password", path=str(path)) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a private key that is not Ed25519", path=str(path))
    return SigningKey(key, path)


def load_or_create_key(path: Path) -> SigningKey:
    """The signing key in ``path``, made (0600, in a 0700 folder) when there is none yet. Two processes making
    it at once end with the same key: the file appears whole or not at all (written aside, then linked)."""
    if path.exists():
        return load_key(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".certificates-key-")  # mkstemp makes it 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first: theirs is the key
                os.link(temp, path)
        finally:
            Path(temp).unlink()
    except OSError as exc:
        raise KeyFileError(f"cannot create the certificate signing key {path}: {exc.strerror}", path=str(path)) from exc
    return load_key(path)


def load_public_key(text: str, *, where: str = "the public key") -> PublicKey:
    """A public key given as PEM (SubjectPublicKeyInfo) or as one base64 line of the raw 32 bytes; lines that
    start with ``#`` are comments (``provision certificate key`` writes the fingerprint in one)."""
    text = "\n".join(line for line in text.strip().splitlines() if not line.lstrip().startswith("#")).strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{where} is not a PEM public key", path=where) from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{where} is not an Ed25519 public key", path=where)
        return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{where} is neither PEM nor one base64 line", path=where) from exc
    if len(raw) != 32:
        raise KeyFileError(f"{where} is {len(raw)} bytes, an Ed25519 public key is 32", path=where)
    return PublicKey(raw)


def sign(certificate: AnyCertificate, key: SigningKey) -> dict[str, Any]:
    """The signed document of ``certificate``."""
    value = key.private.sign(canonical_json(certificate.to_dict()))
    signature = {"algorithm": ALGORITHM, "key": key.public.fingerprint, "value": base64.b64encode(value).decode()}
    return {"certificate": certificate.to_dict(), "signature": signature}


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """What a certificate file holds: the canonical JSON of the signed document and a newline."""
    return canonical_json(document) + b"\n"


def _refuse(message: str, field: str, key: PublicKey, signed_by: object = None) -> SignatureInvalid:
    return SignatureInvalid(message, field=field, key=key.fingerprint, signed_by=signed_by)


def verify(document: Any, public_key: PublicKey) -> Verified:
    """The certificate of a decoded signed document, when its signature is ``public_key``'s over exactly its
    ``certificate``; else SignatureInvalid saying which field and which key."""
    key = public_key
    if not isinstance(document, Mapping) or set(document) != {"certificate", "signature"}:
        raise _refuse("not a signed certificate: the file must hold exactly 'certificate' and 'signature'", "", key)
    signature, body = document["signature"], document["certificate"]
    if not isinstance(signature, Mapping) or set(signature) != {"algorithm", "key", "value"}:
        raise _refuse("the signature must hold exactly 'algorithm', 'key' and 'value'", "signature", key)
    signed_by = signature["key"]
    if signature["algorithm"] != ALGORITHM:
        raise _refuse(f"the signature's algorithm is {signature['algorithm']!r}, not {ALGORITHM!r}",
                      "signature.algorithm", key, signed_by)  # fmt: skip
    if signed_by != key.fingerprint:
        message = f"signed by key {signed_by}, not by the key given ({key.fingerprint}): "
        raise _refuse(message + "ask the workshop for its public key, or this certificate was not made by it",
                      "signature.key", key, signed_by)  # fmt: skip
    try:
        value = base64.b64decode(str(signature["value"]), validate=True)
        key._key().verify(value, canonical_json(body))
    except (binascii.Error, ValueError, TypeError, InvalidSignature) as exc:
        raise _refuse(f"the signature does not match the certificate (key {key.fingerprint}): the certificate was "
                      "changed after it was signed", "signature.value", key, signed_by) from exc  # fmt: skip
    try:
        certificate = certificate_from_dict(body)
    except InvalidPayload as exc:
        where = exc.problems[0]["field"] if exc.problems else ""
        raise _refuse(f"signed, but not a certificate this version reads: {exc.problems[:3]}",
                      f"certificate.{where}", key, signed_by) from exc  # fmt: skip
    return Verified(certificate, key.fingerprint)


def verify_bytes(data: bytes, public_key: PublicKey) -> Verified:
    """A certificate file's bytes verified: valid JSON, exactly in its signed canonical form, signature good."""
    if len(data) > MAX_FILE:
        raise _refuse(f"{len(data)} bytes: larger than any certificate ({MAX_FILE})", "", public_key)
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(f"not JSON: {exc}", "", public_key) from exc
    verified = verify(document, public_key)
    if data != document_bytes(document):
        raise _refuse("the signature matches, but the file's bytes were changed after signing (spacing or key order)",
                      "", public_key, public_key.fingerprint)  # fmt: skip
    return verified
