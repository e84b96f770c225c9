"""Signed certificates: the canonical JSON, the key file (0600, PEM PKCS8, made once), and verification that
fails on any change (a character of a serial, a removed drive, a space, another key)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from provision.certificates.errors import KeyFileError, SignatureInvalid
from provision.certificates.model import BatchCertificate, Certificate
from provision.certificates.signing import (
    PublicKey,
    document_bytes,
    load_key,
    load_or_create_key,
    load_public_key,
    sign,
    verify,
    verify_bytes,
)
from tests.support.certificates import NVME_SERIAL, batch, certificate


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "keys" / "certificates_ed25519"


def test_key_file_is_made_once_0600_pem_pkcs8(key_path: Path) -> None:
    key = load_or_create_key(key_path)
    text = key_path.read_text()
    assert text.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8, no password
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    again = load_or_create_key(key_path)
    assert again.public == key.public and key_path.read_text() == text
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]  # no temporary file left
    assert "PRIVATE" not in repr(key) and key.public.fingerprint in repr(key)


def test_public_key_as_pem_and_line_reads_back(key_path: Path) -> None:
    public = load_or_create_key(key_path).public
    assert len(public.fingerprint) == 16 and int(public.fingerprint, 16) >= 0
    assert load_public_key(public.pem()) == public
    assert load_public_key(public.line() + "\n") == public
    assert load_public_key(f"# fingerprint {public.fingerprint}\n{public.pem()}") == public
    assert "\n" not in public.line() and len(base64.b64decode(public.line())) == 32


@pytest.mark.parametrize(
    ("text", "why"),
    [("not a key", "neither PEM nor"), (base64.b64encode(b"x" * 31).decode(), "31 bytes"),
     ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a PEM public key")],
)  # fmt: skip
def test_bad_public_keys_say_why(text: str, why: str) -> None:
    with pytest.raises(KeyFileError, match=why):
        load_public_key(text, where="donor.pub")


def test_a_key_file_that_is_not_a_key(tmp_path: Path) -> None:
    bad = tmp_path / "k"
    bad.write_text("hello")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key") as caught:
        load_key(bad)
    assert caught.value.facts["path"] == str(bad)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(tmp_path / "missing")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_open_to_others_is_refused_with_the_chmod_to_run(key_path: Path, mode: int) -> None:
    public = load_or_create_key(key_path).public
    key_path.chmod(mode)  # e.g. restored from a backup without -p
    with pytest.raises(KeyFileError, match=f"open to others \\(mode {mode:04o}\\)") as caught:
        load_key(key_path)
    assert f"chmod 600 {key_path}" in caught.value.message and caught.value.facts["path"] == str(key_path)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(key_path)  # nor is a new one made over it
    key_path.chmod(0o600)
    assert load_key(key_path).public == public
    key_path.chmod(0o400)  # read-only for its owner is fine
    assert load_key(key_path).public == public


def test_the_file_is_canonical_json_and_verifies(key_path: Path) -> None:
    key = load_or_create_key(key_path)
    cert = certificate()
    document = sign(cert, key)
    data = document_bytes(document)
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    assert data == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    assert (
        set(document["signature"]) == {"algorithm", "key", "value"} and document["signature"]["algorithm"] == "ed25519"
    )
    verified = verify_bytes(data, key.public)
    assert verified.certificate == cert and verified.fingerprint == key.public.fingerprint
    assert isinstance(verified.certificate, Certificate) and len(verified.certificate.drives) == 2


def test_a_batch_certificate_signs_and_reads_back(key_path: Path) -> None:
    key = load_or_create_key(key_path)
    lot = batch(count=3)
    verified = verify_bytes(document_bytes(sign(lot, key)), key.public)
    assert isinstance(verified.certificate, BatchCertificate) and len(verified.certificate.drives) == 6


def _signed(key_path: Path) -> tuple[bytes, PublicKey]:
    key = load_or_create_key(key_path)
    return document_bytes(sign(certificate(), key)), key.public


def test_one_changed_character_of_a_serial_does_not_verify(key_path: Path) -> None:
    data, public = _signed(key_path)
    tampered = data.replace(NVME_SERIAL.encode(), (NVME_SERIAL[:-1] + "7").encode())
    assert tampered != data and len(tampered) == len(data)
    with pytest.raises(SignatureInvalid, match="changed after it was signed") as caught:
        verify_bytes(tampered, public)
    assert caught.value.facts["field"] == "signature.value"


def test_a_removed_drive_does_not_verify(key_path: Path) -> None:
    data, public = _signed(key_path)
    document = json.loads(data)
    del document["certificate"]["drives"][1]
    with pytest.raises(SignatureInvalid, match="changed after it was signed"):
        verify_bytes(document_bytes(document), public)


def test_another_key_does_not_verify_and_says_which(key_path: Path, tmp_path: Path) -> None:
    data, public = _signed(key_path)
    other = load_or_create_key(tmp_path / "other").public
    with pytest.raises(SignatureInvalid, match=f"signed by key {public.fingerprint}, not by") as caught:
        verify_bytes(data, other)
    assert caught.value.facts["key"] == other.fingerprint and caught.value.facts["field"] == "signature.key"
    document = json.loads(data)  # the fingerprint changed to the other key's: the signature still fails
    document["signature"]["key"] = other.fingerprint
    with pytest.raises(SignatureInvalid, match="changed after it was signed"):
        verify(document, other)


def test_a_space_or_a_reordered_file_does_not_verify(key_path: Path) -> None:
    data, public = _signed(key_path)
    pretty = json.dumps(json.loads(data), indent=1).encode()
    assert verify(json.loads(pretty), public).certificate == verify_bytes(data, public).certificate
    with pytest.raises(SignatureInvalid, match="bytes were changed after signing"):
        verify_bytes(pretty, public)


@pytest.mark.parametrize(
    ("change", "field"),
    [(lambda d: d.pop("signature"), ""), (lambda d: d["signature"].update(algorithm="rsa"), "signature.algorithm"),
     (lambda d: d["signature"].update(value="!!"), "signature.value"), (lambda d: d.update(extra=1), "")],
)  # fmt: skip
def test_malformed_signatures_name_the_field(key_path: Path, change: object, field: str) -> None:
    data, public = _signed(key_path)
    document = json.loads(data)
    change(document)  # type: ignore[operator]
    with pytest.raises(SignatureInvalid) as caught:
        verify(document, public)
    assert caught.value.facts["field"] == field


def test_not_json_does_not_verify(key_path: Path) -> None:
    _data, public = _signed(key_path)
    with pytest.raises(SignatureInvalid, match="not JSON"):
        verify_bytes(b"\xff{", public)


def test_the_documented_python_check_verifies_and_refuses(key_path: Path, tmp_path: Path) -> None:
    """docs/certificates.md's check without provision (only ``cryptography``) agrees with ``verify_bytes``."""
    from cryptography.exceptions import InvalidSignature

    from tests.support.paths import REPO

    text = (REPO / "docs" / "certificates.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    space: dict[str, object] = {}
    exec(compile(code, "docs/certificates.md", "exec"), space)  # the documentation's own code
    check = space["verify"]
    data, public = _signed(key_path)
    (tmp_path / "c.json").write_bytes(data)
    (tmp_path / "k.pub").write_text(f"# fingerprint {public.fingerprint}\n{public.pem()}")
    assert check(str(tmp_path / "c.json"), str(tmp_path / "k.pub"))["id"] == json.loads(data)["certificate"]["id"]  # type: ignore[operator]
    (tmp_path / "c.json").write_bytes(data.replace(NVME_SERIAL.encode(), b"S4EWNX0N123457"))
    with pytest.raises(InvalidSignature):
        check(str(tmp_path / "c.json"), str(tmp_path / "k.pub"))  # type: ignore[operator]
