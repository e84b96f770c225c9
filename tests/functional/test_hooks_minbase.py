"""The built-in target hooks one after the other on a real Debian system: a copy of a ``mmdebstrap --variant=minbase``
tree (Debian's dash, coreutils, mawk, passwd's useradd and usermod, login.defs), each run in a chroot of it as the
live runner runs a target hook, with the environment the server makes from a recipe's parameters. What each
changes is read back from the tree's files; hostile values arrive verbatim or are refused, and nothing runs.

The tiny busybox/dash trees of test_hooks_builtin*.py check every branch of each hook; this checks that they
work on the Debian system they are written for. Needs root, mmdebstrap and the archive once (the tree is
cached: tests/support/bundles.minbase_tree); skipped otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.bundles import minbase_tree, needs_root, tree_copy
from tests.support.hooks import HOSTILE, run_builtin

pytestmark = needs_root

HASH = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
CLONED_ID = "0123456789abcdef0123456789abcdef\n"


@pytest.fixture(scope="module")
def minbase() -> Path:
    tree = minbase_tree()
    if tree is None:
        pytest.skip("no Debian minbase tree: needs root, mmdebstrap and the archive once")
    return tree


@pytest.fixture
def root(tmp_path: Path, minbase: Path) -> Path:
    tree = tree_copy(minbase, tmp_path / "root")
    (tree / "etc/machine-id").write_text(CLONED_ID)  # as a master image that kept its id would have
    (tree / "var/lib/dbus").mkdir(parents=True, exist_ok=True)
    (tree / "var/lib/dbus/machine-id").write_text(CLONED_ID)
    (tree / "etc/hostname").write_text("master\n")
    return tree


def ok(root: Path, hook: str, **params: object) -> str:
    code, out = run_builtin(root, hook, **params)
    assert code == 0, f"{hook}: exit {code}\n{out}"
    return out


def passwd_entry(root: Path, name: str) -> list[str]:
    [line] = [x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith(f"{name}:")]
    return line.split(":")


def test_a_recipes_hooks_give_a_debian_system_its_identity(root: Path) -> None:
    ok(root, "hostname", hostname="ecole-a1b2c3")
    assert (root / "etc/hostname").read_text() == "ecole-a1b2c3\n"
    assert "127.0.1.1\tecole-a1b2c3" in (root / "etc/hosts").read_text()

    ok(root, "identity")
    assert (root / "etc/machine-id").read_bytes() == b""  # systemd makes a new one at first boot
    assert os.readlink(root / "var/lib/dbus/machine-id") == "/etc/machine-id"

    out = ok(root, "locale")  # fr_FR and a French keyboard by default
    assert (root / "etc/default/locale").read_text() == "LANG=fr_FR.UTF-8\n"
    assert 'XKBLAYOUT="fr"' in (root / "etc/default/keyboard").read_text()
    assert "locale-gen is not installed" in out  # minbase has no locales package

    ok(root, "account", full_name="Élève Dupont", password_hash=HASH, groups=["audio", "video"])
    assert passwd_entry(root, "eleve")[4:6] == ["Élève Dupont", "/home/eleve"]
    assert f"\neleve:{HASH}:" in (root / "etc/shadow").read_text()
    group = (root / "etc/group").read_text()
    assert "\naudio:x:29:eleve\n" in group and "\nvideo:x:44:eleve\n" in group
    assert (root / "home/eleve/.bashrc").is_file()  # Debian's /etc/skel, copied by the real useradd

    out = ok(root, "portal", homepage="https://ent.example.fr/", bookmarks=["ENT|https://ent.example.fr/"])
    assert "neither Firefox nor Chromium is installed: nothing written" in out  # minbase: no browser
    (root / "usr/lib/firefox-esr").mkdir(parents=True)  # as the educ image has it
    ok(root, "portal", homepage="https://ent.example.fr/", bookmarks=["ENT|https://ent.example.fr/"])
    policies = json.loads((root / "etc/firefox-esr/policies/policies.json").read_text())["policies"]
    assert policies["Homepage"]["URL"] == "https://ent.example.fr/"
    assert (root / "usr/lib/firefox-esr/distribution/policies.json").is_file()

    ok(root, "laptop-power", lid_close="suspend")
    assert "HandleLidSwitch=suspend" in (root / "etc/systemd/logind.conf.d/50-provision-lid.conf").read_text()

    code, out = run_builtin(root, "zram-swap")  # on_failure warn in its header: a plain reason
    assert code == 1 and "neither zram-tools nor systemd-zram-generator" in out


def test_hostile_values_change_nothing_on_a_debian_system(root: Path) -> None:
    before = (root / "etc/passwd").read_text()
    for i, value in enumerate(HOSTILE):
        assert run_builtin(root, "hostname", hostname=value)[0] == 1
        assert run_builtin(root, "locale", lang=value)[0] == 1
        code, out = run_builtin(root, "account", name=f"pupil{i}", full_name=value)
        if code == 0:  # a value without ':', ',' or a line break is a full name like any other
            assert passwd_entry(root, f"pupil{i}")[4] == value
        else:
            assert "full_name may not hold" in out
    assert (root / "etc/hostname").read_text() == "master\n"
    assert not (root / "pwned").exists() and not list(root.glob("**/pwned"))
    assert (root / "etc/passwd").read_text().startswith(before)
