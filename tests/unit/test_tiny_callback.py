"""The tiny image's callback JSON, built by busybox sh from ``CALLBACK_BODY`` as ``/sbin/init`` builds it: with
the first-boot secret when the imaging agent wrote one (hex only), without it otherwise; ``ROOT_INIT`` holds
that code, reads the secret from ``FIRSTBOOT_SECRET_PATH`` and keeps its markers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from provision.builder.tinyinit import (
    BOOT_MARKER,
    CALLBACK_BODY,
    CALLBACK_FAILED,
    CALLBACK_OK,
    FIRSTBOOT_MARKER,
    POWEROFF,
    ROOT_INIT,
)
from provision.wire.api import FIRSTBOOT_SECRET_PATH, FirstBoot

BUSYBOX = shutil.which("busybox")
SECRET = "0123456789abcdef" * 4
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox")


def body(secret_file: Path, hostname_file: Path | None = None) -> dict[str, Any]:
    """Run CALLBACK_BODY under busybox sh with a first boot's variables; the JSON it builds."""
    hostname_file = hostname_file or secret_file.with_name("no-hostname")
    setup = (
        "event=firstboot; mac=52:54:00:18:02:01; PROVISION_IMAGE=tiny; PROVISION_LABEL=tiny-0123456789ab; "
        f"firmware=uefi; secure_boot=true; machine_id={'a' * 32}; secret_file='{secret_file}'; "
        f"hostname_file='{hostname_file}'\n"
    )
    script = setup + CALLBACK_BODY + 'printf "%s" "$body"\n'
    done = subprocess.run([str(BUSYBOX), "sh", "-c", script], capture_output=True, text=True, check=True, timeout=30)
    data: dict[str, Any] = json.loads(done.stdout)
    FirstBoot.from_dict(data)  # what the server's API reads
    return data


@pytest.mark.parametrize(("content", "sent"), [(SECRET, SECRET), (SECRET + "\n", SECRET), ("ab" * 64, "ab" * 64)])
def test_the_secret_is_sent_when_the_file_holds_hex(tmp_path: Path, content: str, sent: str) -> None:
    secret_file = tmp_path / "firstboot-secret"
    secret_file.write_text(content)
    assert body(secret_file) == {
        "event": "firstboot", "mac": "52:54:00:18:02:01", "image": "tiny", "label": "tiny-0123456789ab",
        "firmware": "uefi", "secure_boot": True, "machine_id": "a" * 32, "secret": sent,
    }  # fmt: skip


@pytest.mark.parametrize("content", [None, "", "\n", 'ab", "event": "x', "DEADBEEF" * 4, "ab cd", "ab\ncd"])
def test_no_secret_is_sent_without_a_hex_file(tmp_path: Path, content: str | None) -> None:
    secret_file = tmp_path / "firstboot-secret"
    if content is not None:
        secret_file.write_text(content)
    data = body(secret_file)
    assert "secret" not in data and data["event"] == "firstboot" and data["machine_id"] == "a" * 32


@pytest.mark.parametrize(
    ("content", "sent"),
    [("poste-eleve-3\n", "poste-eleve-3"), ("pc.example\nsecond line\n", "pc.example"), (None, None), ("", None),
     ('x", "event": "boot', None), ("a b", None), ("$(reboot)", None), ("é", None)],
)  # fmt: skip
def test_the_host_name_is_sent_when_it_is_plain(tmp_path: Path, content: str | None, sent: str | None) -> None:
    hostname_file = tmp_path / "hostname"
    if content is not None:
        hostname_file.write_text(content)
    data = body(tmp_path / "firstboot-secret", hostname_file)
    assert data.get("hostname") == sent and data["event"] == "firstboot"


def test_root_init_reads_the_secret_file_and_keeps_its_markers() -> None:
    assert f"secret_file={FIRSTBOOT_SECRET_PATH}\nhostname_file=/etc/hostname\n" + CALLBACK_BODY in ROOT_INIT
    assert "@SECRET_PATH@" not in ROOT_INIT and "@CALLBACK_BODY@" not in ROOT_INIT
    assert "machine_id=$(cat /etc/machine-id)\n" in ROOT_INIT
    for marker in (FIRSTBOOT_MARKER, BOOT_MARKER, f"{CALLBACK_OK} $mac", CALLBACK_FAILED, POWEROFF):
        assert marker in ROOT_INIT
    checked = subprocess.run([str(BUSYBOX), "sh", "-n", "-c", ROOT_INIT], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
