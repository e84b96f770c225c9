"""The initramfs toolkit's busybox pieces: the applet list of a busybox binary."""

from __future__ import annotations

from provision.initramfs import busybox_applets
from tests.support.initramfs import fake_busybox


def test_applets_are_listed_by_the_binary(tmp_path):
    assert busybox_applets(fake_busybox(tmp_path)) == ["bin/sh", "sbin/poweroff", "usr/bin/wget", "bin/busybox"]


def test_a_busybox_that_cannot_run_gives_the_shell_only(tmp_path):
    broken = tmp_path / "busybox"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert busybox_applets(broken) == ["bin/sh"]
    assert busybox_applets(tmp_path / "absent") == ["bin/sh"]
