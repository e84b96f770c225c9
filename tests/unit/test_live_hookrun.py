"""What the live environment needs for the hook runner (provision.agent.hookrun): mount, umount and chroot are
required programs of its tree (the build stops without them), the ext4 and loop modules are selected, and the
runner's modules are part of the agent payload (standard library only)."""

from __future__ import annotations

from provision.live import modules, packages, payload


def test_the_tools_of_the_hook_runner_are_required_programs() -> None:
    for program in ("usr/bin/mount", "usr/bin/umount", "usr/sbin/chroot", "usr/sbin/losetup", "usr/bin/python3"):
        assert program in packages.REQUIRED_PROGRAMS
    assert "mount" in packages.PACKAGES and "util-linux" in packages.PACKAGES  # coreutils (chroot) is essential
    assert "fs/ext4" in modules.TREES and "loop" in modules.MODULES


def test_the_runner_travels_with_the_agent() -> None:
    files = payload.agent_files()
    for name in ("hookrun", "hookmount", "hookproc"):
        assert f"provision/agent/{name}.py" in files
    assert "provision/wire/hooks.py" in files and payload.required_sources(files) == []
