"""The initramfs toolkit's busybox system (busybox_initramfs): its entries, their order, the options.

Its two users are tested on their own: test_lab_initrd.py (the lab's test initrd) and test_image_build.py
(the tiny image's initramfs)."""

from __future__ import annotations

import stat

import pytest

from provision.initramfs import UDHCPC_SCRIPT, ModuleError, busybox_initramfs, module_name
from tests.support.initramfs import RELEASE, fake_busybox, parse_newc, virtio_module_tree

DIRS = ("dev", "proc", "sys", "etc", "bin")


def test_entries_in_order_with_modules_script_and_init(tmp_path):
    modules_dir = virtio_module_tree(tmp_path / "kernel", with_dep_file=False)
    built = busybox_initramfs(modules_dir, fake_busybox(tmp_path), ["virtio_net"], "#!/bin/sh\n", dirs=DIRS)
    entries = parse_newc(built.archive)
    names = list(entries)
    assert names[: len(DIRS)] == list(DIRS)
    assert names[len(DIRS) : len(DIRS) + 3] == ["dev/console", "dev/null", "bin/busybox"]
    assert entries["dev/console"][2] == (5, 1) and entries["dev/null"][2] == (1, 3)
    assert stat.S_IMODE(entries["dev/null"][0]) == 0o666
    assert entries["bin/sh"][1] == b"/bin/busybox" and "bin/busybox" in names  # applets link to it, once
    listed = entries["etc/provision/modules"][1].decode().split()
    assert [module_name(p) for p in listed] == built.modules
    assert built.modules[-1] == "virtio_net" and "failover" in built.modules  # dependencies first
    assert f"/lib/modules/{RELEASE}/kernel/drivers/net/net_failover.ko" in listed  # .xz stripped
    for path in listed:
        assert entries[path.lstrip("/")][1].startswith(b"\x7fELF")  # decompressed
    assert names[-2:] == ["etc/udhcpc.script", "init"]
    assert entries["etc/udhcpc.script"][1].decode() == UDHCPC_SCRIPT
    assert entries["init"][1] == b"#!/bin/sh\n" and stat.S_IMODE(entries["init"][0]) == 0o755


def test_without_udhcpc_script_and_with_extra_files(tmp_path):
    modules_dir = virtio_module_tree(tmp_path / "kernel", with_dep_file=True)
    extra = {"etc/x": b"y", "bin/hook": b"#!/bin/sh\n"}
    built = busybox_initramfs(
        modules_dir, fake_busybox(tmp_path), [], "init", dirs=DIRS, udhcpc=False, extra_files=extra
    )
    entries = parse_newc(built.archive)
    assert "etc/udhcpc.script" not in entries
    assert list(entries)[-3:] == ["init", "etc/x", "bin/hook"]
    assert stat.S_IMODE(entries["etc/x"][0]) == 0o644 and stat.S_IMODE(entries["bin/hook"][0]) == 0o755
    assert built.modules == [] and entries["etc/provision/modules"][1] == b""


def test_reproducible(tmp_path):
    modules_dir = virtio_module_tree(tmp_path / "kernel", with_dep_file=False)
    busybox = fake_busybox(tmp_path)
    first = busybox_initramfs(modules_dir, busybox, ["virtio_blk"], "init", dirs=DIRS)
    assert busybox_initramfs(modules_dir, busybox, ["virtio_blk"], "init", dirs=DIRS) == first


def test_an_unknown_module_is_refused(tmp_path):
    modules_dir = virtio_module_tree(tmp_path / "kernel", with_dep_file=False)
    with pytest.raises(ModuleError):
        busybox_initramfs(modules_dir, fake_busybox(tmp_path), ["no_such_module"], "init", dirs=DIRS)
