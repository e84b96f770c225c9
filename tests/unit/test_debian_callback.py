"""The Debian images' boot callback (provision/builder/callback.py): its JSON, built by ``CALLBACK_BODY`` under
dash (the image's /bin/sh) and busybox sh, is what the server's API reads; every value that is not plain is
left out (or ``unknown``) instead of reaching the JSON; the script keeps its markers and parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from provision.builder.callback import (
    CALLBACK_BODY,
    CALLBACK_FAILED,
    CALLBACK_OK,
    FIRSTBOOT_RUN,
    ROUTE_AWK,
    SCRIPT,
    UNIT,
)
from provision.builder.firstboot import SCRIPT as FIRSTBOOT_SCRIPT
from provision.wire.api import FIRSTBOOT_SECRET_PATH, FirstBoot

SHELLS = [s for s in (["dash"], ["busybox", "sh"]) if shutil.which(s[0])]
SECRET = "0123456789abcdef" * 4
MAC = "52:54:00:18:30:01"
PLAIN = {
    "event": "firstboot", "mac": MAC, "image": "debian-mini", "label": "debian-mini-0123456789ab",
    "firmware": "bios", "secure_boot": "false", "machine_id": "b" * 32,
}  # fmt: skip
pytestmark = pytest.mark.skipif(not SHELLS, reason="needs dash or busybox")


def shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def body(shell: list[str], tmp: Path, api: bool = True, **values: str | None) -> dict[str, Any]:
    """Run CALLBACK_BODY with PLAIN's variables (``values`` on top; None: a file left missing); the JSON, which
    the server's API reads (``api``)."""
    files = {"secret_file": SECRET + "\n", "hostname_file": "poste-test\n", "packages_file": "hello=2.10-3\n"}
    setup = ""
    for name, default in {**PLAIN, **files}.items():
        value = values.get(name, default)
        if name in files:
            path = tmp / name
            if value is not None:
                path.write_text(value)
            value = str(path)
        setup += f"{name}={shell_quote(value or '')}\n"
    script = setup + CALLBACK_BODY + 'printf "%s" "$body"\n'
    done = subprocess.run([*shell, "-c", script], capture_output=True, text=True, check=True, timeout=30, cwd=tmp)
    data: dict[str, Any] = json.loads(done.stdout)
    if api:
        FirstBoot.from_dict(data)
    return data


@pytest.fixture(params=SHELLS, ids=[s[0] for s in SHELLS])
def shell(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


def test_a_first_boot_reports_everything(shell: list[str], tmp_path: Path) -> None:
    packages = "apt=2.6.1\nhello=2.10-3\nlibc6=2.36-9+deb12u4\nopenssh-server=1:9.2p1-2+deb12u3\nfoo=1.0~rc1\n"
    assert body(shell, tmp_path, packages_file=packages) == {
        "event": "firstboot", "mac": MAC, "image": "debian-mini", "label": "debian-mini-0123456789ab",
        "firmware": "bios", "secure_boot": False, "machine_id": "b" * 32, "secret": SECRET,
        "hostname": "poste-test",
        "packages": ["apt=2.6.1", "hello=2.10-3", "libc6=2.36-9+deb12u4", "openssh-server=1:9.2p1-2+deb12u3",
                     "foo=1.0~rc1"],
    }  # fmt: skip


def test_missing_files_leave_their_keys_out(shell: list[str], tmp_path: Path) -> None:
    data = body(shell, tmp_path, secret_file=None, hostname_file=None, packages_file=None, machine_id="")
    assert data == {
        "event": "firstboot", "mac": MAC, "image": "debian-mini", "label": "debian-mini-0123456789ab",
        "firmware": "bios", "secure_boot": False, "packages": [],
    }  # fmt: skip


HOSTILE = ['x", "event": "boot', "$(touch ran)", "`touch ran`", "; touch ran", "a b", "é", "a\\", "{}", "x'y"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_never_reach_the_json(shell: list[str], tmp_path: Path, value: str) -> None:
    data = body(  # valid JSON the API refuses: no MAC
        shell, tmp_path, False, event=value, mac=value, image=value, label=value, firmware=value, secure_boot=value,
        machine_id=value, secret_file=value, hostname_file=value, packages_file=f"ok=1\n{value}\n{value}=1\n",
    )  # fmt: skip
    assert data == {
        "event": "boot", "mac": "", "image": "unknown", "label": "unknown", "firmware": "unknown",
        "secure_boot": None, "packages": ["ok=1"],
    }  # fmt: skip
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("content", ["DEADBEEF" * 4, "ab cd", "", "\n"])
def test_a_secret_that_is_not_lower_hex_is_not_sent(shell: list[str], tmp_path: Path, content: str) -> None:
    assert "secret" not in body(shell, tmp_path, secret_file=content)


def test_the_uefi_secure_boot_values_pass(shell: list[str], tmp_path: Path) -> None:
    data = body(shell, tmp_path, firmware="uefi", secure_boot="true", event="boot")
    assert (data["firmware"], data["secure_boot"], data["event"]) == ("uefi", True, "boot")


def test_the_script_holds_the_body_the_paths_and_the_markers() -> None:
    assert CALLBACK_BODY in SCRIPT
    assert f"secret_file={FIRSTBOOT_SECRET_PATH}\n" in SCRIPT and f"[ -e {FIRSTBOOT_RUN} ]" in SCRIPT
    assert f'say "{CALLBACK_OK} $mac"' in SCRIPT and f'say "{CALLBACK_FAILED} $*"' in SCRIPT
    assert "@" + "FAILED@" not in SCRIPT and "@CALLBACK_BODY@" not in SCRIPT and not re.search(r"\beval\s", SCRIPT)
    assert "ConditionKernelCommandLine=provision.callback\n" in UNIT and "After=network-online.target" in UNIT
    assert f": > {FIRSTBOOT_RUN}\n" in FIRSTBOOT_SCRIPT
    for shell in SHELLS:
        for text in (SCRIPT, FIRSTBOOT_SCRIPT):
            checked = subprocess.run([*shell, "-n", "-c", text], capture_output=True, text=True, timeout=30)
            assert checked.returncode == 0, checked.stderr


ROUTE_HEAD = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


@pytest.mark.parametrize(
    ("routes", "iface"),
    [
        # the lab: a DHCP lease without a router, only the on-link route
        ("ens3\t0000C6C6\t00000000\t0001\t0\t0\t1024\t00FFFFFF\t0\t0\t0\n", "ens3"),
        # a router on the second NIC: its default route wins
        ("ens3\t0000C6C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
         "enp2s0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n", "enp2s0"),
        ("lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n", ""),
        ("", ""),
    ],
)  # fmt: skip
def test_the_nic_is_the_default_routes_else_the_first_routes(tmp_path: Path, routes: str, iface: str) -> None:
    table = tmp_path / "route"
    table.write_text(ROUTE_HEAD + routes)
    awk = shutil.which("mawk") or shutil.which("awk")
    assert awk is not None
    done = subprocess.run([awk, ROUTE_AWK, str(table)], capture_output=True, text=True, check=True, timeout=30)
    assert done.stdout.strip() == iface
    assert f"awk '{ROUTE_AWK}' /proc/net/route" in SCRIPT
