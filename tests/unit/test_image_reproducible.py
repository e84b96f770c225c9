"""Reproducible images: what the builder pins (times, inodes in use, build-time state, SOURCE_DATE_EPOCH),
checked without running a tool (dumpe2fs output, mmdebstrap and dpkg-query faked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from provision.builder import RecordingRunner, build_image
from provision.builder.bootloader import BootPackages
from provision.builder.debian import RESOLV_CONF
from provision.builder.definition import load_definition
from provision.builder.inputs import Inputs
from provision.builder.reproducible import (
    clamp_tree,
    inode_time_script,
    newest_changelog,
    pin_inode_times,
    remove_build_state,
    used_inodes,
)
from provision.builder.runner import BuildLog, Command
from provision.builder.tiny import StagedRoot
from provision.images.store import ImageStore
from tests.support.builder import RELEASE, FakeCache, FakeStore, cache
from tests.support.files import write_tree

__all__ = ["cache"]  # the fixture, from tests/support/builder.py

DUMPE2FS = """\
Inode count:              5856
Inodes per group:         1952
Group 0: (Blocks 1-8192) csum 0x3f50 [ITABLE_ZEROED]
  Free inodes: 15-20, 25-1952
Group 1: (Blocks 8193-16384) csum 0xadd8 [INODE_UNINIT, ITABLE_ZEROED]
  Free inodes: 1953-3904
Group 2: (Blocks 16385-24576) csum 0xd9ec [ITABLE_ZEROED]
  Free inodes: 3905, 3907-5856
"""
EPOCH = 1_700_000_000


def test_used_inodes_complement_the_free_ranges_of_each_group():
    assert used_inodes(DUMPE2FS) == [*range(1, 15), 21, 22, 23, 24, 3906]
    assert used_inodes("") == []  # nothing parsed: nothing touched


def test_inode_time_script_sets_ctime_and_atime_of_each_inode():
    script = inode_time_script([12, 13], EPOCH)
    assert script.splitlines() == [
        f"set_inode_field <12> ctime @{EPOCH}",
        f"set_inode_field <12> atime @{EPOCH}",
        f"set_inode_field <13> ctime @{EPOCH}",
        f"set_inode_field <13> atime @{EPOCH}",
    ]


def test_pin_inode_times_runs_debugfs_on_the_inodes_in_use_with_the_fake_clock(tmp_path):
    runner = RecordingRunner(lambda command: DUMPE2FS if command.argv[0] == "dumpe2fs" else "")
    runner.bind("tiny", BuildLog(None))
    assert pin_inode_times(runner, "filesystems", "disk.raw?offset=1048576", EPOCH) == 19
    dumpe2fs, debugfs = runner.commands
    assert dumpe2fs.argv == ("dumpe2fs", "disk.raw?offset=1048576")
    assert debugfs.argv == ("debugfs", "-w", "-f", "-", "disk.raw?offset=1048576")
    assert debugfs.env == {"E2FSPROGS_FAKE_TIME": str(EPOCH)}  # the superblock's write time too
    assert debugfs.input is not None and f"set_inode_field <3906> atime @{EPOCH}" in debugfs.input


def test_clamp_tree_keeps_older_times_and_clamps_newer_ones_links_included(tmp_path):
    root = write_tree(tmp_path / "root", {"old": "a", "new/file": "b"})
    (root / "link").symlink_to("/nowhere")
    os.utime(root / "old", (EPOCH - 100, EPOCH - 100))
    clamp_tree(root, EPOCH)
    assert os.lstat(root / "old").st_mtime == EPOCH - 100  # a package's own time stays
    for rel in ("new/file", "new", "link", ""):
        st = os.lstat(root / rel)
        assert (st.st_mtime, st.st_atime) == (EPOCH, EPOCH), rel


def test_remove_build_state_removes_logs_backups_seeds_and_man_caches(tmp_path):
    root = write_tree(
        tmp_path / "root",
        {
            "var/log/dpkg.log": "log",
            "var/log/apt/term.log": "log",
            "var/lib/systemd/random-seed": b"\x01",
            "etc/shadow-": "backup",
            "var/cache/man/index.db": b"db",
            "var/cache/man/fr/index.db": b"db",
            "etc/shadow": "kept",
        },
    )
    removed = remove_build_state(root)
    assert "var/log/dpkg.log" in removed and "var/cache/man/fr" in removed
    assert not (root / "var/lib/systemd/random-seed").exists() and not (root / "etc/shadow-").exists()
    assert (root / "var/cache/man").is_dir() and not list((root / "var/cache/man").iterdir())
    assert (root / "etc/shadow").read_text() == "kept"


def test_newest_changelog_is_the_newest_package_date(tmp_path):
    root = write_tree(
        tmp_path / "root",
        {"usr/share/doc/a/changelog.Debian.gz": b"a", "usr/share/doc/b/changelog.Debian.gz": b"b"},
    )
    os.utime(root / "usr/share/doc/a/changelog.Debian.gz", (EPOCH, EPOCH))
    os.utime(root / "usr/share/doc/b/changelog.Debian.gz", (EPOCH - 5, EPOCH - 5))
    assert newest_changelog(root) == EPOCH
    assert newest_changelog(tmp_path / "empty") is None


def test_staged_root_epoch_given_or_the_kernel_files(tmp_path):
    tree = write_tree(tmp_path / "root", {"boot/vmlinuz": b"MZ"})
    os.utime(tree / "boot/vmlinuz", (EPOCH, EPOCH))
    assert StagedRoot(tree, "/boot/vmlinuz", "/boot/initrd").epoch() == EPOCH
    assert StagedRoot(tree, "/boot/vmlinuz", "/boot/initrd", EPOCH - 9).epoch() == EPOCH - 9


MINI_DEF = """\
name: mini-test
builder: debian
suite: bookworm
disk:
  size: 1GiB
packages:
  base: [openssh-server]
users:
  - {name: eleve}
"""
CHANGELOG = EPOCH - 3600


def fake_bootstrap(command: Command) -> str:
    """What mmdebstrap would leave (with the build machine's resolv.conf and a log) and dpkg-query print."""
    if command.argv[0] == "mmdebstrap":
        target = Path(command.argv[command.argv.index("bookworm") + 1])
        write_tree(
            target,
            {
                "etc/group": "root:x:0:\n",
                "etc/resolv.conf": "nameserver 10.255.255.53\n",
                "usr/share/zoneinfo/Europe/Paris": b"TZif",
                "usr/share/doc/openssh-server/changelog.Debian.gz": b"gz",
                f"boot/vmlinuz-{RELEASE}": b"MZ",
                f"boot/initrd.img-{RELEASE}": b"initrd",
                "var/log/alternatives.log": "update-alternatives: ...",
            },
        )
        os.utime(target / "usr/share/doc/openssh-server/changelog.Debian.gz", (CHANGELOG, CHANGELOG))
    if command.argv[0] == "dpkg-query":
        return "openssh-server\t1:9.2p1-2\tii \n"
    return ""


def test_debian_build_runs_with_source_date_epoch_and_leaves_no_build_state(tmp_path, cache):
    (tmp_path / "mini.yaml").write_text(MINI_DEF)
    loaded = load_definition(tmp_path / "mini.yaml")
    fake = cast(FakeCache, cache)
    boot = BootPackages(fake.get("shim-signed"), fake.get("grub-efi-amd64-signed"), fake.get("grub-pc-bin"))
    for package in (boot.shim, boot.grub_efi, boot.grub_pc):
        for path in package.root.rglob("*"):
            os.utime(path, (EPOCH - 50, EPOCH - 50))
    os.utime(boot.grub_pc.file("/usr/lib/grub/i386-pc/boot.img"), (EPOCH, EPOCH))
    assert boot.epoch() == EPOCH
    inputs = Inputs(loaded, {"openssh-server": "1:9.2p1-2"}, boot, "", "bookworm")
    runner = RecordingRunner(fake_bootstrap)
    build_image(
        loaded,
        cast(ImageStore, FakeStore()),
        inputs=inputs,
        runner=runner,
        workdir=tmp_path / "work",
        log_dir=tmp_path / "logs",
        keep_workdir=True,
    )
    env = {"SOURCE_DATE_EPOCH": str(EPOCH)}
    for command in runner.commands:
        if command.argv[0] in ("mmdebstrap", "chroot", "systemctl"):
            assert command.env == env, command.argv
    (mke2fs,) = [c for c in runner.commands if c.argv[0] == "mke2fs"]
    assert mke2fs.env == {"E2FSPROGS_FAKE_TIME": str(CHANGELOG)}  # the tree's epoch: the newest package
    (work,) = [p for p in (tmp_path / "work").iterdir() if p.is_dir()]
    root = work / "root"
    assert (root / "etc/resolv.conf").read_text() == RESOLV_CONF
    assert not (root / "var/log/alternatives.log").exists()
    assert os.lstat(root / "etc/hostname").st_mtime == CHANGELOG  # written by the build: clamped
