"""The lab's test initramfs: its contents, reproducibility, /init and the udhcpc script.

The toolkit it is built with is tested in test_initramfs_*.py.
"""

from __future__ import annotations

import gzip
import stat
import subprocess

import pytest

from provision.initramfs import UDHCPC_SCRIPT, module_name
from provision.lab import TEST_INIT, build_test_initrd, modules_for
from tests.support.initramfs import fake_busybox, parse_newc, virtio_module_tree


def test_build_test_initrd_contents(tmp_path):
    modules_dir = virtio_module_tree(tmp_path / "kernel", with_dep_file=False)
    out = tmp_path / "out" / "initrd.img"
    order = build_test_initrd(out, modules_dir, fake_busybox(tmp_path), modules_for("virtio", "virtio"))
    with gzip.open(out, "rb") as handle:
        entries = parse_newc(handle.read())
    assert entries["init"][1].decode() == TEST_INIT
    assert stat.S_IMODE(entries["init"][0]) == 0o755
    assert entries["etc/udhcpc.script"][1].decode() == UDHCPC_SCRIPT
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert entries["bin/sh"][1] == b"/bin/busybox" and entries["usr/bin/wget"][1] == b"/bin/busybox"
    assert stat.S_ISREG(entries["bin/busybox"][0])
    listed = entries["etc/provision/modules"][1].decode().split()
    assert [module_name(p) for p in listed] == order
    assert "/lib/modules/6.1.0-9-amd64/kernel/drivers/virtio/virtio_pci.ko" in listed  # .xz stripped
    for path in listed:
        assert entries[path.lstrip("/")][1].startswith(b"\x7fELF")  # decompressed for insmod
    again = tmp_path / "again.img"
    build_test_initrd(again, modules_dir, fake_busybox(tmp_path), modules_for("virtio", "virtio"))
    assert again.read_bytes() == out.read_bytes()  # reproducible


def test_build_test_initrd_custom_init_and_extra_files(tmp_path):
    modules_dir = virtio_module_tree(tmp_path / "kernel", with_dep_file=True)
    out = tmp_path / "initrd.img"
    build_test_initrd(out, modules_dir, fake_busybox(tmp_path), [], "#!/bin/sh\necho hi\n", extra_files={"etc/x": b"y"})
    with gzip.open(out, "rb") as handle:
        entries = parse_newc(handle.read())
    assert entries["init"][1] == b"#!/bin/sh\necho hi\n"
    assert entries["etc/provision/modules"][1] == b""
    assert entries["etc/x"][1] == b"y"


@pytest.mark.parametrize("script", [TEST_INIT, UDHCPC_SCRIPT], ids=["init", "udhcpc"])
def test_shell_scripts_parse(tmp_path, script):
    path = tmp_path / "script"
    path.write_text(script)
    done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_init_reports_the_documented_fields():
    for needle in ("provision.server", "provision.token", "provision.mac", "Secure boot enabled", "/sys/firmware/efi"):
        assert needle in TEST_INIT
    for marker in ("PROVISION-CALLBACK-OK", "PROVISION-CALLBACK-FAILED", "poweroff -f", "/api/v1/hello"):
        assert marker in TEST_INIT
