"""The server's SSH key pair (cryptography, no ssh-keygen) and authorized key parsing."""

from __future__ import annotations

import base64
import hashlib
import stat
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provision.sshkeys import SshKeyError, ensure_server_key, fingerprint, parse_public_key
from tests.support.sshkeys import authorized_key_line


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_once_with_private_modes(tmp_path):
    key = ensure_server_key(tmp_path, comment="provision@test")
    assert key.private_path == tmp_path / "ssh" / "id_ed25519"
    assert key.public_path == tmp_path / "ssh" / "id_ed25519.pub"
    assert mode(key.private_path) == 0o600 and mode(key.private_path.parent) == 0o700
    assert key.private_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert key.public_line.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5") and key.public_line.endswith(
        " provision@test"
    )
    assert key.public_path.read_text() == key.public_line + "\n"
    private = serialization.load_ssh_private_key(key.private_path.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    again = ensure_server_key(tmp_path, comment="other")
    assert again == key  # kept, comment included
    assert not list((tmp_path / "ssh").glob(".*tmp"))


def test_first_uses_at_once_end_with_one_key(tmp_path):
    # two commands starting on a fresh machine (the tests' two pytest processes: scripts/test) each make a key;
    # the first one written is kept and every caller gets it, never a key the file no longer holds
    start = threading.Barrier(8)
    keys = []

    def first_use():
        start.wait()
        keys.append(ensure_server_key(tmp_path, comment="provision@test"))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    on_disk = ensure_server_key(tmp_path, comment="provision@test")
    assert len(keys) == 8 and all(k.public_line == on_disk.public_line for k in keys)
    assert on_disk.public_path.read_text() == on_disk.public_line + "\n"
    assert not list((tmp_path / "ssh").glob(".*tmp"))


def test_public_file_is_derived_from_the_private_key(tmp_path):
    key = ensure_server_key(tmp_path, comment="a")
    key.public_path.unlink()
    restored = ensure_server_key(tmp_path, comment="b")
    assert restored.public_line.split()[:2] == key.public_line.split()[:2]
    key.public_path.write_text(authorized_key_line(comment="someone-else") + "\n")  # not this key's public half
    fixed = ensure_server_key(tmp_path, comment="c")
    assert fixed.public_line.split()[:2] == key.public_line.split()[:2] and fixed.public_line.endswith(" c")


def test_loose_private_key_mode_is_tightened(tmp_path, caplog):
    key = ensure_server_key(tmp_path)
    key.private_path.chmod(0o644)
    ensure_server_key(tmp_path)
    assert mode(key.private_path) == 0o600
    assert "readable by others" in caplog.text


def test_unusable_private_key_is_an_error(tmp_path):
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "id_ed25519").write_text("not a key")
    with pytest.raises(SshKeyError, match="not an unencrypted OpenSSH private key"):
        ensure_server_key(tmp_path)


def test_fingerprint_is_ssh_keygens():
    line = authorized_key_line()
    blob = base64.b64decode(line.split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert fingerprint(line) == expected


def test_parse_public_key_normalises():
    line = authorized_key_line(comment="root@host")
    assert parse_public_key(f"# the server\n\n  {line}  \n") == line
    assert parse_public_key(authorized_key_line()) == authorized_key_line()
    rsa = authorized_key_line("ssh-rsa")
    assert parse_public_key(rsa) == rsa


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "exactly one public key line, found 0"),
        (authorized_key_line() + "\n" + authorized_key_line(), "exactly one public key line, found 2"),
        ('command="reboot" ' + authorized_key_line(), "not an OpenSSH public key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not an OpenSSH public key"),
        ("ssh-ed25519", "not an OpenSSH public key"),
        ("ssh-ed25519 not*base64", "not base64"),
        ("ssh-ed25519 AAAA=AAA", "not base64"),
        ("ssh-ed25519 AAAAB3NzaC1yc2E=", "not a ssh-ed25519 key"),
        ("ssh-ed25519 AA==", "truncated"),
        (authorized_key_line("ssh-ed25519", blob_kind="ssh-rsa"), "not a ssh-ed25519 key"),
        (authorized_key_line(comment="evil\x1b[2J"), "control or non-ASCII"),
    ],
)
def test_parse_public_key_refuses(text, message):
    with pytest.raises(SshKeyError, match=message.replace("*", r"\*")):
        parse_public_key(text, source="key.pub")
