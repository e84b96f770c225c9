"""The built-in hooks that give a PC its identity (hostname, identity, locale, account), run for real.

Each runs in a chroot of a tiny root tree (busybox-static from the .deb cache, its applets linked, plus the
files the hook edits; Debian's useradd and usermod copied in for `account`), in PID, UTS, IPC and mount
namespaces of its own, under busybox's ash and under dash (Debian's /bin/sh), with the environment
provision.hooks.env makes from its parameters. Hostile values (tests/support/hooks.py) either arrive verbatim
in the files the hook writes or are refused with a plain message, and execute nothing (no `pwned` file, the
tree intact). The other built-in hooks: test_hooks_builtin_extras.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.builder.firstboot import UNIT_NAME as FIRSTBOOT_UNIT
from tests.support.hooks import HOSTILE, copy_program, intact, needs_busybox, run_builtin, tiny_root


@pytest.fixture(params=["busybox", "dash"])
def sh(request: pytest.FixtureRequest) -> str:
    """The /bin/sh of a target tree: busybox's ash, or dash (Debian's)."""
    return str(request.param)


# ------------------------------------------------------------------------------------------------ hostname
HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\tmaster.example\tmaster\n::1\tlocalhost ip6-localhost\n"


@needs_busybox
def test_hostname_writes_hostname_and_the_127_0_1_1_line(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"etc/hostname": "master\n", "etc/hosts": HOSTS}, shell=sh)
    code, out = run_builtin(root, "hostname", hostname="ecole-a1b2c3")
    assert code == 0, out
    assert (root / "etc/hostname").read_text() == "ecole-a1b2c3\n"
    assert (root / "etc/hosts").read_text() == HOSTS.replace("master.example\tmaster", "ecole-a1b2c3")
    (root / "etc/hosts").unlink()
    assert run_builtin(root, "hostname", hostname="PC-2")[0] == 0
    assert (root / "etc/hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tPC-2\n"


@needs_busybox
@pytest.mark.parametrize("name", [*HOSTILE, "", "a" * 64, "-pc", "pc-", "pc.example", "élève"])
def test_hostname_refuses_what_is_not_a_label(tmp_path: Path, name: str, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"etc/hostname": "master\n", "etc/hosts": HOSTS}, shell=sh)
    code, out = run_builtin(root, "hostname", hostname=name)
    assert code == 1 and out.startswith("hostname: ") and "\n" not in out.rstrip("\n")
    assert (root / "etc/hostname").read_text() == "master\n" and (root / "etc/hosts").read_text() == HOSTS
    assert intact(root)


# ------------------------------------------------------------------------------------------------ identity
CLONED: dict[str, str | bytes] = {
    "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
    "var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n",
    "etc/ssh/ssh_host_ed25519_key": "private",
    "etc/ssh/ssh_host_ed25519_key.pub": "public",
    "etc/ssh/ssh_host_rsa_key": "private",
    "etc/ssh/sshd_config": "PermitRootLogin no\n",
    "var/lib/systemd/random-seed": b"\x01" * 512,
    "var/lib/systemd/credential.secret": b"\x02" * 32,
    "var/lib/NetworkManager/secret_key": b"\x03" * 32,
    "var/lib/NetworkManager/internal-0f1e-enp1s0.lease": "ADDRESS=10.0.0.5\n",
    "var/lib/NetworkManager/NetworkManager.state": "[main]\n",
    "var/lib/dhcp/dhclient.enp1s0.leases": "default-duid ...;\n",
    "etc/hostid": b"\x12\x34\x56\x78",
    "etc/udev/rules.d/70-persistent-net.rules": "# cloned MACs\n",
}


@needs_busybox
def test_identity_removes_every_cloned_id_and_keys_come_back_at_first_boot(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {**CLONED, "usr/sbin/sshd": "#!/bin/sh\n"}, shell=sh)
    (root / "usr/sbin/sshd").chmod(0o755)
    code, out = run_builtin(root, "identity")
    assert code == 0, out
    machine_id = root / "etc/machine-id"
    assert machine_id.read_bytes() == b"" and (machine_id.stat().st_mode & 0o777) == 0o444
    assert os.readlink(root / "var/lib/dbus/machine-id") == "/etc/machine-id"
    assert sorted(p.name for p in (root / "etc/ssh").iterdir()) == ["sshd_config"]
    kept = {"etc/ssh/sshd_config", "var/lib/NetworkManager/NetworkManager.state"}
    for path in set(CLONED) - kept - {"etc/machine-id", "var/lib/dbus/machine-id"}:
        assert not (root / path).exists(), path
    unit = (root / "etc/systemd/system/provision-ssh-hostkeys.service").read_text()
    assert "ExecStart=/usr/bin/ssh-keygen -A" in unit and "Before=ssh.service" in unit
    assert "ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key" in unit
    # provision's Debian images make keys in provision-firstboot.service: one after the other (both ran at once)
    assert f"After=local-fs.target {FIRSTBOOT_UNIT}\n" in unit
    for wants in ("multi-user.target.wants", "ssh.service.wants"):
        link = root / "etc/systemd/system" / wants / "provision-ssh-hostkeys.service"
        assert os.readlink(link) == "../provision-ssh-hostkeys.service"
    assert "3 SSH host key file(s) removed" in out
    code, out = run_builtin(root, "identity")  # again: nothing left to remove, still fine
    assert code == 0 and "0 SSH host key file(s) removed" in out, out


@needs_busybox
def test_identity_without_openssh_server_adds_no_unit(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"etc/machine-id": "abc\n"}, shell=sh)
    code, out = run_builtin(root, "identity")
    assert code == 0, out
    assert (root / "etc/machine-id").read_bytes() == b""
    assert not (root / "etc/systemd").exists() and not (root / "var/lib/dbus").exists()


# -------------------------------------------------------------------------------------------------- locale
LOCALE_GEN = "# en_US.UTF-8 UTF-8\n# fr_FR ISO-8859-1\n#  fr_FR.UTF-8 UTF-8\nde_DE.UTF-8 UTF-8\n"
FAKE_LOCALE_GEN = "#!/bin/sh\ncp /etc/locale.gen /tmp/generated\n"


@needs_busybox
def test_locale_defaults_french(tmp_path: Path, sh: str) -> None:
    files = {"etc/locale.gen": LOCALE_GEN, "usr/sbin/locale-gen": FAKE_LOCALE_GEN}
    files["etc/default/keyboard"] = 'XKBMODEL="pc104"\nXKBLAYOUT="us"\nXKBVARIANT=""\nXKBOPTIONS="ctrl:nocaps"\n'
    root = tiny_root(tmp_path / "root", files, shell=sh)
    (root / "usr/sbin/locale-gen").chmod(0o755)
    code, out = run_builtin(root, "locale")
    assert code == 0, out
    assert (root / "etc/default/locale").read_text() == "LANG=fr_FR.UTF-8\n"
    expected_gen = LOCALE_GEN.replace("#  fr_FR.UTF-8 UTF-8", "fr_FR.UTF-8 UTF-8")
    assert (root / "etc/locale.gen").read_text() == expected_gen
    assert (root / "tmp/generated").read_text() == expected_gen  # locale-gen ran after the edit
    keyboard = (root / "etc/default/keyboard").read_text()
    for line in (
        'XKBMODEL="pc104"',
        'XKBLAYOUT="fr"',
        'XKBVARIANT=""',
        'XKBOPTIONS="ctrl:nocaps"',
        'BACKSPACE="guess"',
    ):
        assert f"\n{line}\n" in keyboard


@needs_busybox
def test_locale_other_values_without_locale_gen(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", shell=sh)
    code, out = run_builtin(root, "locale", lang="de_CH.UTF-8", keymap="ch", variant="fr")
    assert code == 0, out
    assert "locale-gen is not installed" in out
    assert (root / "etc/default/locale").read_text() == "LANG=de_CH.UTF-8\n"
    assert not (root / "etc/locale.gen").exists()
    keyboard = (root / "etc/default/keyboard").read_text()
    assert 'XKBLAYOUT="ch"\nXKBVARIANT="fr"\n' in keyboard and 'XKBMODEL="pc105"' in keyboard


@needs_busybox
@pytest.mark.parametrize("key", ["lang", "keymap", "variant"])
@pytest.mark.parametrize("value", HOSTILE)
def test_locale_refuses_hostile_values(tmp_path: Path, key: str, value: str, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"etc/default/locale": "LANG=C\n"}, shell=sh)
    code, out = run_builtin(root, "locale", **{key: value})
    assert code == 1 and out.startswith("locale: ")
    assert (root / "etc/default/locale").read_text() == "LANG=C\n" and intact(root)


# ------------------------------------------------------------------------------------------------- account
ACCOUNTS = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\naudio:x:29:\nvideo:x:44:\nusers:x:100:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    "etc/gshadow": "root:*::\naudio:*::\nvideo:*::\nusers:*::\n",
    "etc/skel/.profile": "# skel\n",
    "etc/gdm3/daemon.conf": "[daemon]\nAutomaticLoginEnable=false\n#AutomaticLogin=user1\n\n[security]\n",
}
HASH = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"


def account_root(tmp_path: Path, sh: str) -> Path:
    root = tiny_root(tmp_path / "root", ACCOUNTS, shell=sh)
    (root / "etc/shadow").chmod(0o640)
    (root / "etc/lightdm").mkdir()
    if not (copy_program(root, "useradd") and copy_program(root, "usermod")):
        pytest.skip("this machine has no useradd/usermod (package passwd) to copy into the tiny root")
    login_defs = Path("/etc/login.defs")
    if login_defs.is_file():
        (root / "etc/login.defs").write_text(login_defs.read_text())
    return root


def passwd_entry(root: Path, name: str) -> list[str]:
    line = next(x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith(f"{name}:"))
    return line.split(":")


@needs_busybox
def test_account_creates_the_pupil_with_groups_hash_and_autologin(tmp_path: Path, sh: str) -> None:
    root = account_root(tmp_path, sh)
    code, out = run_builtin(
        root,
        "account",
        full_name="Élève Dupont",
        password_hash=HASH,
        groups=["audio", "video", "scanner"],
        autologin=True,
    )
    assert code == 0, out
    assert passwd_entry(root, "eleve")[4:] == ["Élève Dupont", "/home/eleve", "/bin/sh"]
    assert f"\neleve:{HASH}:" in (root / "etc/shadow").read_text()
    groups = (root / "etc/group").read_text()
    assert "\naudio:x:29:eleve\n" in groups and "\nvideo:x:44:eleve\n" in groups
    assert "no group scanner in this system: skipped" in out
    assert (root / "home/eleve/.profile").read_text() == "# skel\n"
    lightdm = root / "etc/lightdm/lightdm.conf.d/50-provision-autologin.conf"
    assert lightdm.read_text() == "[Seat:*]\nautologin-user=eleve\nautologin-user-timeout=0\n"
    daemon = (root / "etc/gdm3/daemon.conf").read_text()
    assert daemon == "[daemon]\nAutomaticLoginEnable=true\nAutomaticLogin=eleve\n#AutomaticLogin=user1\n\n[security]\n"
    # again, as another run of the same machine: the account exists, its full name changes, autologin goes
    code, out = run_builtin(root, "account", full_name="Élève", autologin=False)
    assert code == 0 and "eleve exists" in out, out
    assert passwd_entry(root, "eleve")[4] == "Élève" and not lightdm.exists()
    assert [x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("eleve:")] != []
    assert len([x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("eleve:")]) == 1


@needs_busybox
def test_account_full_name_arrives_verbatim_or_is_refused(tmp_path: Path, sh: str) -> None:
    root = account_root(tmp_path, sh)
    for i, value in enumerate(HOSTILE):
        name = f"pupil{i}"
        code, out = run_builtin(root, "account", name=name, full_name=value)
        if any(c in value for c in ":,\n"):
            assert code == 1 and "full_name may not hold" in out, (value, out)
            assert f"\n{name}:" not in (root / "etc/passwd").read_text()
        else:
            assert code == 0, (value, out)
            assert passwd_entry(root, name)[4] == value
    assert intact(root)


@needs_busybox
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"name": "; rm -rf /"}, "name must be a-z"),
        ({"name": "Eleve"}, "name must be a-z"),
        ({"password_hash": "secret123"}, "password_hash must be a crypt(3) hash"),
        ({"password_hash": "$(reboot)"}, "password_hash must be a crypt(3) hash"),
        ({"password_hash": "$6$salt"}, "password_hash must be a crypt(3) hash"),
        ({"groups": ["audio", "$(reboot)"]}, "group $(reboot): not a group name"),
    ],
)
def test_account_refuses(tmp_path: Path, params: dict[str, object], message: str, sh: str) -> None:
    root = account_root(tmp_path, sh)
    before = (root / "etc/shadow").read_text()
    code, out = run_builtin(root, "account", **params)
    assert code == 1 and message in out, out
    assert (root / "etc/shadow").read_text() == before and intact(root)
