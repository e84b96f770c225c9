"""Errors of the certificates: each names the machine, drive, key or field it is about (as facts, not only text)."""

from __future__ import annotations

from typing import ClassVar

from provision.errors import FatalError


class CertificateError(FatalError):
    """A certificate that cannot be made, read or trusted; ``facts`` carry ``mac``, ``lot``, ``path`` as known."""

    status_code = 422
    public_facts: ClassVar[tuple[str, ...]] = ("mac", "lot")


class NothingToCertify(CertificateError):
    """The machine (or lot) has no run with an erasure or a verified imaging to state."""

    status_code = 404


class NotErased(CertificateError):
    """A drive's erasure is not ok: the machine gets no certificate of erasure (``device``, ``serial``, ``reason``)."""

    status_code = 409
    public_facts = ("mac", "run", "device", "serial")


class KeyFileError(CertificateError):
    """The signing key or a public key file cannot be read, created or understood (``path``)."""

    status_code = 500


class SignatureInvalid(CertificateError):
    """A signed certificate that does not verify: ``field`` says where, ``key`` the key tried, ``signed_by``
    the fingerprint the document names."""

    public_facts = ("field", "key", "signed_by")
