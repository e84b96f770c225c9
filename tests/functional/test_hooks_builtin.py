"""The built-in hooks (hooks/), run for real with the environment provision.hooks.env makes from their parameters.

`target` hooks run in a chroot of a tiny root tree (busybox-static from the .deb cache, its applets linked,
plus the files the hook edits; Debian's useradd and usermod copied in for `account`), in namespaces of their
own; the `live` hook (firmware) runs here under busybox's sh with busybox's applets first on PATH, fetching
from a local HTTP server; the `server` hook (label) runs here with a record on stdin. Hostile values
(tests/support/hooks.py) either arrive verbatim in the files the hook writes or are refused with a plain
message, and execute nothing (no `pwned` file, the tree intact).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.facts.derive import FACT_NAMES, FactValue
from provision.hooks import HookFile, builtin_dir, hook_env, load_catalog
from tests.support.hooks import (
    BUSYBOX,
    HOSTILE,
    MARKERS,
    applets_dir,
    copy_program,
    needs_busybox,
    run_direct,
    run_target,
    tiny_root,
)

CATALOG = load_catalog([builtin_dir()])
MAC = "52:54:00:12:34:56"


def hook(name: str) -> HookFile:
    found = CATALOG.get(name)
    assert found is not None
    return found


def env_of(name: str, params: dict[str, object], **facts: FactValue) -> dict[str, str]:
    machine: dict[str, FactValue] = dict.fromkeys(FACT_NAMES)
    machine.update(facts)
    return hook_env(hook(name).header, params, machine, mac=MAC, run="run-1")


def target(root: Path, hook_name: str, /, **params: object) -> tuple[int, str]:
    done = run_target(root, hook(hook_name).path, env_of(hook_name, params))
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(params=["busybox", "dash"])
def sh(request: pytest.FixtureRequest) -> str:
    """The /bin/sh of a target tree: busybox's ash, or dash (Debian's)."""
    return str(request.param)


def intact(root: Path) -> bool:
    """Nothing ran that a hostile value held: no marker, busybox still there."""
    return not (root / "pwned").exists() and (root / "bin" / "busybox").is_file()


# ------------------------------------------------------------------------------------------------ hostname
HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\tmaster.example\tmaster\n::1\tlocalhost ip6-localhost\n"


@needs_busybox
def test_hostname_writes_hostname_and_the_127_0_1_1_line(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"etc/hostname": "master\n", "etc/hosts": HOSTS}, shell=sh)
    code, out = target(root, "hostname", hostname="ecole-a1b2c3")
    assert code == 0, out
    assert (root / "etc/hostname").read_text() == "ecole-a1b2c3\n"
    assert (root / "etc/hosts").read_text() == HOSTS.replace("master.example\tmaster", "ecole-a1b2c3")
    (root / "etc/hosts").unlink()
    assert target(root, "hostname", hostname="PC-2")[0] == 0
    assert (root / "etc/hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tPC-2\n"


@needs_busybox
@pytest.mark.parametrize("name", [*HOSTILE, "", "a" * 64, "-pc", "pc-", "pc.example", "élève"])
def test_hostname_refuses_what_is_not_a_label(tmp_path: Path, name: str, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"etc/hostname": "master\n", "etc/hosts": HOSTS}, shell=sh)
    code, out = target(root, "hostname", hostname=name)
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
    code, out = target(root, "identity")
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
    for wants in ("multi-user.target.wants", "ssh.service.wants"):
        link = root / "etc/systemd/system" / wants / "provision-ssh-hostkeys.service"
        assert os.readlink(link) == "../provision-ssh-hostkeys.service"
    assert "3 SSH host key file(s) removed" in out
    code, out = target(root, "identity")  # again: nothing left to remove, still fine
    assert code == 0 and "0 SSH host key file(s) removed" in out, out


@needs_busybox
def test_identity_without_openssh_server_adds_no_unit(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"etc/machine-id": "abc\n"}, shell=sh)
    code, out = target(root, "identity")
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
    code, out = target(root, "locale")
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
    code, out = target(root, "locale", lang="de_CH.UTF-8", keymap="ch", variant="fr")
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
    code, out = target(root, "locale", **{key: value})
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
    code, out = target(
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
    code, out = target(root, "account", full_name="Élève", autologin=False)
    assert code == 0 and "eleve exists" in out, out
    assert passwd_entry(root, "eleve")[4] == "Élève" and not lightdm.exists()
    assert [x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("eleve:")] != []
    assert len([x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("eleve:")]) == 1


@needs_busybox
def test_account_full_name_arrives_verbatim_or_is_refused(tmp_path: Path, sh: str) -> None:
    root = account_root(tmp_path, sh)
    for i, value in enumerate(HOSTILE):
        name = f"pupil{i}"
        code, out = target(root, "account", name=name, full_name=value)
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
    code, out = target(root, "account", **params)
    assert code == 1 and message in out, out
    assert (root / "etc/shadow").read_text() == before and intact(root)


# -------------------------------------------------------------------------------------------------- portal
@needs_busybox
def test_portal_writes_firefox_and_chromium_policies_with_titles_verbatim(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"usr/bin/chromium": "#!/bin/sh\n"}, shell=sh)
    (root / "usr/bin/chromium").chmod(0o755)
    (root / "usr/lib/firefox-esr").mkdir(parents=True)
    titles = [v for v in HOSTILE if "\n" not in v] + ["Lycée « ENT »"]
    marks = [f"{t}|https://ent.example.org/p{i}?a=1&b=%22" for i, t in enumerate(titles)]
    home = "https://ent.example.org/?x=1&y=2"
    code, out = target(root, "portal", homepage=home, bookmarks=marks, folder='Favoris "école" \\', locked=True)
    assert code == 0, out
    for path in ("etc/firefox-esr/policies/policies.json", "usr/lib/firefox-esr/distribution/policies.json"):
        policies = json.loads((root / path).read_text())["policies"]
        assert policies["Homepage"] == {"URL": home, "Locked": True, "StartPage": "homepage"}
        assert [(b["Title"], b["URL"]) for b in policies["Bookmarks"]] == [tuple(m.split("|", 1)) for m in marks]
    chromium = json.loads((root / "etc/chromium/policies/managed/provision-portal.json").read_text())
    assert chromium["HomepageLocation"] == home and chromium["RestoreOnStartupURLs"] == [home]
    assert chromium["ManagedBookmarks"][0] == {"toplevel_name": 'Favoris "école" \\'}
    assert [b["name"] for b in chromium["ManagedBookmarks"][1:]] == titles
    assert intact(root)


@needs_busybox
def test_portal_without_bookmarks_and_without_a_browser(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", shell=sh)
    (root / "usr/lib/firefox-esr").mkdir(parents=True)
    assert target(root, "portal", homepage="http://portal.lan/")[0] == 0
    policies = json.loads((root / "etc/firefox-esr/policies/policies.json").read_text())["policies"]
    assert policies["Bookmarks"] == [] and policies["Homepage"]["Locked"] is False
    bare = tiny_root(tmp_path / "bare", shell=sh)
    code, out = target(bare, "portal", homepage="http://portal.lan/")
    assert code == 0 and "neither Firefox nor Chromium is installed" in out
    assert not (bare / "etc/firefox-esr").exists()


@needs_busybox
@pytest.mark.parametrize(
    "params",
    [
        *({"homepage": f"https://x.org/{v}"} for v in HOSTILE if any(c in v for c in ' "\\\n')),
        {"homepage": "javascript:alert(1)"},
        {"homepage": "https://x.org/", "bookmarks": ["no separator"]},
        {"homepage": "https://x.org/", "bookmarks": ["|https://x.org/"]},
        {"homepage": "https://x.org/", "bookmarks": ["T|file:///etc/shadow"]},
        {"homepage": "https://x.org/", "bookmarks": ['T|https://x.org/"];rm -rf /']},
        {"homepage": "https://x.org/", "folder": "a\nb"},
    ],
)
def test_portal_refuses(tmp_path: Path, params: dict[str, object], sh: str) -> None:
    root = tiny_root(tmp_path / "root", shell=sh)
    (root / "usr/lib/firefox-esr").mkdir(parents=True)
    code, out = target(root, "portal", **params)
    assert code == 1 and out.startswith("portal: "), out
    assert not (root / "etc/firefox-esr").exists() and intact(root)


# ------------------------------------------------------------------------------- zram-swap, laptop-power
@needs_busybox
def test_zram_swap_with_zram_tools_or_the_generator_or_neither(tmp_path: Path, sh: str) -> None:
    tools = tiny_root(tmp_path / "tools", {"etc/default/zramswap": "#ALGO=lz4\n"}, shell=sh)
    assert target(tools, "zram-swap", percent=60)[0] == 0
    assert (tools / "etc/default/zramswap").read_text().endswith("ALGO=zstd\nPERCENT=60\n")
    generator = tiny_root(
        tmp_path / "gen", {"usr/lib/systemd/system-generators/zram-generator": "#!/bin/sh\n"}, shell=sh
    )
    (generator / "usr/lib/systemd/system-generators/zram-generator").chmod(0o755)
    assert target(generator, "zram-swap", algorithm="lz4")[0] == 0
    conf = (generator / "etc/systemd/zram-generator.conf").read_text()
    assert "[zram0]\nzram-size = ram * 50 / 100\ncompression-algorithm = lz4\n" in conf
    neither = tiny_root(tmp_path / "neither", shell=sh)
    code, out = target(neither, "zram-swap")
    assert code == 1 and "neither zram-tools nor systemd-zram-generator" in out
    assert hook("zram-swap").header.on_failure.value == "warn"
    for params in ({"percent": 5}, {"algorithm": "$(reboot)"}):
        assert target(tools, "zram-swap", **params)[0] == 1 and intact(tools)


@needs_busybox
def test_laptop_power_writes_a_logind_drop_in(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", shell=sh)
    assert target(root, "laptop-power", lid_close="suspend", lid_close_on_power="lock")[0] == 0
    conf = (root / "etc/systemd/logind.conf.d/50-provision-lid.conf").read_text()
    assert "[Login]\nHandleLidSwitch=suspend\nHandleLidSwitchExternalPower=lock\n" in conf
    for value in HOSTILE:
        assert target(root, "laptop-power", lid_close=value)[0] == 1
    assert "HandleLidSwitchExternalPower=lock" in conf and intact(root)


# ------------------------------------------------------------------------------------------ firmware (live)
FIRMWARE = {"rtl_nic/rtl8168e-3.fw": b"\x01\x02rtl" * 1000, "iwlwifi-6000-4.ucode": b"\x00intel" * 3000}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def firmware_server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    for name, data in FIRMWARE.items():
        (served / "firmware" / name).parent.mkdir(parents=True, exist_ok=True)
        (served / "firmware" / name).write_bytes(data)

    def handler(*args: object, **kwargs: object) -> _Quiet:
        return _Quiet(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/firmware"
    finally:
        server.shutdown()
        server.server_close()


def live(tmp_path: Path, root: Path, **params: object) -> tuple[int, str]:
    assert BUSYBOX is not None
    applets = tmp_path / "applets"
    if not applets.exists():
        applets_dir(applets)
    env = {**env_of("firmware", params), "PROVISION_ROOT": str(root)}
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    done = run_direct(hook("firmware").path, env, work, path=str(applets), shell=(str(BUSYBOX), "sh"))
    assert not (work / "pwned").exists()
    return done.returncode, done.stdout + done.stderr


def merged_usr_root(tmp_path: Path) -> Path:
    root = tmp_path / "target"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    return root


def listed(*names: str) -> list[str]:
    return [f"{n}:{hashlib.sha256(FIRMWARE[n]).hexdigest()}" for n in names]


@needs_busybox
def test_firmware_fetches_checks_and_places_each_file(tmp_path: Path, firmware_server: str) -> None:
    root = merged_usr_root(tmp_path)
    code, out = live(tmp_path, root, base_url=firmware_server, files=listed(*FIRMWARE))
    assert code == 0, out
    for name, data in FIRMWARE.items():
        placed = root / "usr/lib/firmware" / name
        assert placed.read_bytes() == data and (placed.stat().st_mode & 0o777) == 0o644
    assert "2 file(s) in /usr/lib/firmware" in out
    assert not list((root / "usr/lib/firmware").rglob(".provision-firmware.*"))


@needs_busybox
def test_firmware_a_wrong_sum_or_a_missing_file_fails_and_leaves_nothing(tmp_path: Path, firmware_server: str) -> None:
    root = merged_usr_root(tmp_path)
    wrong = [f"iwlwifi-6000-4.ucode:{'0' * 64}"]
    code, out = live(tmp_path, root, base_url=firmware_server + "/", files=wrong)
    assert (
        code == 1
        and f"iwlwifi-6000-4.ucode: sha256 is {hashlib.sha256(FIRMWARE['iwlwifi-6000-4.ucode']).hexdigest()}" in out
    )
    code, out = live(tmp_path, root, base_url=firmware_server, files=[f"absent.bin:{'0' * 64}"])
    assert code == 1 and "absent.bin: cannot fetch" in out
    assert [p.name for p in (root / "usr/lib/firmware").iterdir()] == []


@needs_busybox
@pytest.mark.parametrize(
    "item",
    [
        *(f"{v}:{'0' * 64}" for v in MARKERS if "\n" not in v),  # a line break: refused by hook_env
        f"../../etc/passwd:{'0' * 64}",
        f"/etc/passwd:{'0' * 64}",
        f"a/../../x:{'0' * 64}",
        f"a//b:{'0' * 64}",
        "iwlwifi-6000-4.ucode:ABC",
        "iwlwifi-6000-4.ucode",
    ],
)
def test_firmware_refuses_names_and_sums_that_are_not_plain(tmp_path: Path, firmware_server: str, item: str) -> None:
    root = merged_usr_root(tmp_path)
    code, out = live(tmp_path, root, base_url=firmware_server, files=[item])
    assert code == 1 and out.startswith("firmware: "), out
    assert list((root / "usr/lib/firmware").iterdir()) == []


@needs_busybox
def test_firmware_refuses_a_base_url_and_a_folder_leading_outside(tmp_path: Path, firmware_server: str) -> None:
    root = merged_usr_root(tmp_path)
    for base in ("ftp://x/", "http://x/a b", *(f"{firmware_server}/{v}" for v in MARKERS)):
        code, out = live(tmp_path, root, base_url=base, files=listed("iwlwifi-6000-4.ucode"))
        assert code == 1 and out.startswith("firmware: "), (base, out)
    (root / "usr/lib/firmware").mkdir(exist_ok=True)
    (root / "usr/lib/firmware/rtl_nic").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    code, out = live(tmp_path, root, base_url=firmware_server, files=listed("rtl_nic/rtl8168e-3.fw"))
    assert code == 1 and "resolves outside" in out and list((tmp_path / "elsewhere").iterdir()) == []


# ------------------------------------------------------------------------------------------- label (server)
RECORD = {
    "mac": MAC,
    "run": "run-1",
    "vendor": "Dell Inc.",
    "product": "OptiPlex 780",
    "model": "OptiPlex 780",
    "serial": HOSTILE[0],
    "cpu": HOSTILE[5],
    "ram_mb": 4096,
    "disk": 'ST500 "500 GB" $(touch pwned)',
    "image": "educ",
    "version": "20240101-120000-abcdef012345",
    "date": "2024-01-02",
    "hostname": "ecole-123456",
}


def label(tmp_path: Path, record: object, **params: object) -> tuple[int, str, Path]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {**env_of("label", params), "PROVISION_STATE": str(tmp_path / "state")}
    done = run_direct(hook("label").path, env, work, stdin=json.dumps(record))
    assert not (work / "pwned").exists()
    return done.returncode, done.stdout + done.stderr, tmp_path / "state" / "labels"


def test_label_writes_text_and_json_with_values_as_data(tmp_path: Path) -> None:
    code, out, folder = label(tmp_path, RECORD, school="Lycée Jean Moulin")
    assert code == 0, out
    text = (folder / "52-54-00-12-34-56.txt").read_text()
    assert text.splitlines() == [
        "Lycée Jean Moulin",
        "Asset:   ecole-123456",
        "Machine: Dell Inc. OptiPlex 780",
        "Serial:  ; rm -rf / #",
        "CPU:     line one line two",  # a line break is a space in the text file
        "RAM:     4096 MiB",
        'Disk:    ST500 "500 GB" $(touch pwned)',
        "Image:   educ 20240101-120000-abcdef012345",
        "Date:    2024-01-02",
        f"MAC:     {MAC}",
    ]
    data = json.loads((folder / "52-54-00-12-34-56.json").read_text())
    assert {k: data[k] for k in RECORD} == RECORD  # verbatim
    assert data["asset"] == "ecole-123456" and data["school"] == "Lycée Jean Moulin"


def test_label_reads_the_record_the_server_sends(tmp_path: Path) -> None:
    """provision.postinstall.machine_record's shape: cpu_model and cpu_cores, disk_gb, no hostname."""
    record = {"mac": MAC, "run": "r", "recipe": "laptop", "image": "educ", "version": "v1", "digest": "ab" * 32,
              "date": "2024-01-02", "vendor": "LENOVO", "product": "7360AB1", "model": "ThinkCentre M58",
              "serial": "MJ12345", "cpu_model": "Intel(R) Core(TM)2 Duo CPU E8400", "cpu_cores": 2,
              "ram_mb": 4096, "disk_gb": 250, "form_factor": "desktop"}  # fmt: skip
    code, out, folder = label(tmp_path, record)
    assert code == 0, out
    text = (folder / "52-54-00-12-34-56.txt").read_text()
    assert "Asset:   MJ12345\n" in text and "Machine: LENOVO ThinkCentre M58\n" in text
    assert "CPU:     Intel(R) Core(TM)2 Duo CPU E8400 (2 cores)\n" in text and "Disk:    250 GB\n" in text
    assert json.loads((folder / "52-54-00-12-34-56.json").read_text())["recipe"] == "laptop"


def test_label_folder_asset_and_unknown_values(tmp_path: Path) -> None:
    code, out, _ = label(tmp_path, {"mac": MAC}, folder=str(tmp_path / "mine"), asset="INV-0042")
    assert code == 0, out
    text = (tmp_path / "mine" / "52-54-00-12-34-56.txt").read_text()
    assert "Asset:   INV-0042\n" in text and "RAM:     unknown\n" in text and "Machine: unknown unknown\n" in text


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"mac": "../../etc/passwd"}, "label: the record's mac '../../etc/passwd' is not a MAC address"),
        ([1, 2], "label: the record on stdin is not a JSON object"),
        ("not json", "label: the record on stdin is not a JSON object"),
    ],
)
def test_label_refuses_a_bad_record(tmp_path: Path, record: object, message: str) -> None:
    code, out, folder = label(tmp_path, record)
    assert code == 1 and out.startswith(message), out
    assert not folder.exists()
