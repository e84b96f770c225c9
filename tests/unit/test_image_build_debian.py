"""The build plan of a Debian image, checked without running a tool (mmdebstrap and dpkg-query faked)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from provision.builder import DEBIAN_STEPS, Inputs, PackageNotFound, RecordingRunner, build_image
from provision.builder.bootloader import BootPackages
from provision.builder.callback import UNIT_NAME as CALLBACK_UNIT
from provision.builder.debian import REQUIRED_PACKAGES
from provision.builder.definition import load_definition
from provision.builder.disk import DiskLayout
from provision.builder.firstboot import UNIT_NAME
from provision.builder.resolve import ArchiveEntry
from provision.images.store import ImageStore
from tests.support.builder import RELEASE, FakeCache, FakeStore, MiB, cache
from tests.support.files import write_tree

__all__ = ["cache"]  # the fixture, from tests/support/builder.py


DEBIAN_DEF = """\
name: educ-test
builder: debian
suite: bookworm
components: [main, non-free-firmware]
disk:
  size: 1GiB
packages:
  base: [openssh-server]
  educ: [gcompris-qt, tuxpaint]
keyboard: {layout: fr, variant: oss}
users:
  - {name: eleve, groups: [audio, nosuchgroup]}
enable_units: [ssh.service]
overlays: [overlay/x]
"""


def fake_bootstrap(command) -> str:
    """What mmdebstrap and dpkg-query would leave or print."""
    if command.argv[0] == "mmdebstrap":
        target = Path(command.argv[command.argv.index("bookworm") + 1])
        write_tree(
            target,
            {
                "etc/group": "root:x:0:\naudio:x:29:\n",
                "usr/share/zoneinfo/Europe/Paris": b"TZif",
                f"boot/vmlinuz-{RELEASE}": b"MZ",
                f"boot/initrd.img-{RELEASE}": b"initrd",
                "etc/ssh/ssh_host_ed25519_key": "secret",
                "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
            },
        )
    if command.argv[0] == "dpkg-query":
        return "openssh-server\t1:9.2p1-2\tii \nremoved-pkg\t1.0\trc \ngcompris-qt:amd64\t3.1-2\tii \n"
    return ""


def test_debian_command_sequence(tmp_path, cache):
    images = tmp_path / "images"
    write_tree(images / "overlay" / "x", {"etc/motd": "Bienvenue\n"})
    (images / "educ.yaml").write_text(DEBIAN_DEF)
    loaded = load_definition(images / "educ.yaml")
    fake = cast(FakeCache, cache)
    boot = BootPackages(fake.get("shim-signed"), fake.get("grub-efi-amd64-signed"), fake.get("grub-pc-bin"))
    archive = (ArchiveEntry("http://mirror.example/debian", "bookworm", ("main", "non-free-firmware"), "/k.gpg"),)
    inputs = Inputs(loaded, {"openssh-server": "1:9.2p1-2"}, boot, "", "bookworm", archive=archive)
    runner = RecordingRunner(fake_bootstrap)
    store = FakeStore()
    result = build_image(
        loaded,
        cast(ImageStore, store),
        inputs=inputs,
        runner=runner,
        workdir=tmp_path / "work",
        log_dir=tmp_path / "logs",
        keep_workdir=True,
    )
    assert runner.steps == list(DEBIAN_STEPS)
    mmdebstrap = runner.argvs("mmdebstrap")[0]
    assert mmdebstrap[1:5] == ("--mode=root", "--format=directory", "--variant=important", "--architectures=amd64")
    assert '--aptopt=APT::Install-Recommends "false"' in mmdebstrap
    include = next(a for a in mmdebstrap if a.startswith("--include=")).removeprefix("--include=").split(",")
    assert include == [*REQUIRED_PACKAGES, "openssh-server", "gcompris-qt", "tuxpaint"]
    assert mmdebstrap[-1] == "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main non-free-firmware"
    programs = [argv[0] for argv in runner.argvs()]
    assert programs[:8] == ["mmdebstrap", "chroot", "chroot", "chroot", "systemctl", "dpkg-query", "sfdisk", "mkfs.fat"]
    chroots = runner.argvs("chroot")
    assert chroots[0][2:] == ("locale-gen",)
    assert chroots[2][2:] == (
        "useradd",
        "--create-home",
        "--shell",
        "/bin/bash",
        "--comment",
        "",
        "--groups",
        "audio",
        "eleve",
    )
    selections = next(c.input for c in runner.commands if c.argv[-1] == "debconf-set-selections")
    assert "keyboard-configuration/layoutcode string fr" in (selections or "")
    assert runner.argvs("systemctl")[0][2:] == ("enable", UNIT_NAME, CALLBACK_UNIT, "ssh.service")
    (work,) = [p for p in (tmp_path / "work").iterdir() if p.is_dir()]
    root = work / "root"
    layout = DiskLayout("educ-test", 1 << 30, 64 * MiB)
    fstab = (root / "etc" / "fstab").read_text()
    assert f"UUID={layout.root_uuid}\t/\text4" in fstab and f"UUID={layout.esp_fs_uuid}\t/boot/efi\tvfat" in fstab
    assert 'XKBLAYOUT="fr"' in (root / "etc" / "default" / "keyboard").read_text()
    assert (root / "etc" / "locale.gen").read_text() == "fr_FR.UTF-8 UTF-8\n"
    assert (root / "etc" / "localtime").readlink() == Path("/usr/share/zoneinfo/Europe/Paris")
    assert (root / "etc" / "motd").read_text() == "Bienvenue\n"  # overlay
    assert (root / "etc" / "machine-id").read_text() == ""  # identity reset
    assert not list((root / "etc" / "ssh").glob("ssh_host_*"))
    assert (root / "etc" / "systemd" / "system" / UNIT_NAME).is_file()
    assert (root / "etc" / "systemd" / "system" / CALLBACK_UNIT).is_file()
    assert (root / "usr" / "local" / "sbin" / "provision-callback").stat().st_mode & 0o777 == 0o755
    assert result.packages == {"gcompris-qt": "3.1-2", "openssh-server": "1:9.2p1-2"}
    cfg = (root / "boot" / "grub" / "grub.cfg").read_text()
    assert f"linux /boot/vmlinuz-{RELEASE} root=UUID={layout.root_uuid} ro quiet" in cfg
    # the menu entry is the image name: the label changes with every rebuild, and in place each file holding
    # it costs a chunk (/etc/provision/image.json names the version)
    assert f"menuentry '{result.name}' --id provision {{" in cfg and result.label not in cfg
    assert store.imported[0]["provenance"]["resolved"] == {"openssh-server": "1:9.2p1-2"}


def test_mmdebstrap_unknown_package_names_it(tmp_path, cache):
    images = tmp_path / "images"
    write_tree(images / "overlay" / "x", {"etc/motd": "x"})
    (images / "educ.yaml").write_text(DEBIAN_DEF)
    loaded = load_definition(images / "educ.yaml")
    fake = cast(FakeCache, cache)
    boot = BootPackages(fake.get("shim-signed"), fake.get("grub-efi-amd64-signed"), fake.get("grub-pc-bin"))
    archive = (ArchiveEntry("http://mirror.example/debian", "bookworm", ("main",), "/k.gpg"),)
    inputs = Inputs(loaded, {}, boot, "", "bookworm", archive=archive)
    stderr = "I: running apt-get update...\nE: Unable to locate package tuxpaint\nE: mmdebstrap failed to run\n"
    runner = RecordingRunner(fail_on="mmdebstrap", fail_stderr=stderr)
    with pytest.raises(PackageNotFound) as caught:
        build_image(
            loaded,
            cast(ImageStore, FakeStore()),
            inputs=inputs,
            runner=runner,
            workdir=tmp_path / "w",
            log_dir=tmp_path / "l",
        )
    assert (caught.value.package, caught.value.step) == ("tuxpaint", "bootstrap")
