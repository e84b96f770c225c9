"""Fault matrix (docs/reliability.md): a target disk that fails writes. ``provision serve`` is a process on
127.0.0.1 (tests/support/runs.py); root only (tmpfs mounts and loop devices).

This kernel has no device-mapper (no ``dm_mod``: ``dmsetup`` cannot reach the driver), so the failing targets
are: a file on a 2 MiB tmpfs (the disk fills up after 2 MiB: ENOSPC on a regular-file target, buffered
writes), a loop device whose backing file is on a 2 MiB tmpfs (a block device that fails writes part-way
with ENOSPC, written with O_DIRECT: the nearest to dm's ``error`` target here), and a read-only loop device
(every write refused: EPERM). The block devices reach the agent as the real lsblk would show them (a
stand-in lsblk answer naming the loop device; the agent's own disk choice, O_EXCL and O_DIRECT paths run).

Shown for each: the run ends failed with the OS error in plain words (and the error's type and facts in its
``run-failed`` event), no verification is recorded, the machine's next boot is the live environment again.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provision.agent.main import EXIT_FAILED
from tests.support.agent import loop
from tests.support.chunk_server import SIZE
from tests.support.faults import tmpfs
from tests.support.files import sparse_file
from tests.support.images import MiB
from tests.support.runs import Site, agent_process, assert_ends, disks, in_process, make_site, result

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs mounts and loop devices need root")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with make_site(tmp_path) as site:
        yield site


class Lsblk:
    """``run`` for the agent: ``lsblk --json -b -O`` answers one internal SATA disk, the loop ``device``."""

    def __init__(self, device: str) -> None:
        self.name = Path(device).name
        self.size = int(subprocess.run(["blockdev", "--getsize64", device], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        assert argv[0] == "lsblk", argv
        disk = {"name": self.name, "type": "disk", "size": self.size, "rm": False, "hotplug": False, "tran": "sata",
                "model": "fault target", "log-sec": 512, "phy-sec": 512, "mountpoints": [None]}  # fmt: skip
        return subprocess.CompletedProcess(argv, 0, json.dumps({"blockdevices": [disk]}).encode(), b"")


def block_device_run(site: Site, tmp_path: Path, mac: str, device: str) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mounts").write_text("")
    (proc / "cmdline").write_text("")
    outcome = in_process(site, tmp_path, mac, disks_from=None, proc_root=proc, agent={"run": Lsblk(device)})
    assert outcome.code == EXIT_FAILED, outcome


def test_disk_full_a_file_target_on_a_full_file_system_fails_the_run(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:fc:01:01"
    with tmpfs(tmp_path / "small", 2 * MiB) as small:
        folder = disks(small / "pc", ("vda", SIZE, None))
        code, last, err = result(agent_process(site.url, mac, site.token(mac), folder))
    assert code == EXIT_FAILED and "No space left on device" in last, (last, err[-3000:])
    failed = assert_ends(site, mac, "failed", "No space left on device")
    assert f"TargetError: {folder / 'vda'}: writing " in failed["reason"], failed["reason"]
    [event] = site.events(mac, "run-failed")
    assert event["error"]["retryable"] is False and event["error"]["facts"]["errno"] == errno.ENOSPC


def test_write_errors_a_block_device_that_fails_part_way_fails_the_run(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:fc:01:02"
    with tmpfs(tmp_path / "small", 2 * MiB) as small:
        backing = small / "backing"
        sparse_file(backing, 9 * MiB)
        with loop(backing) as device:
            block_device_run(site, tmp_path, mac, device)
        written = backing.stat().st_blocks * 512
    failed = assert_ends(site, mac, "failed", "No space left on device")
    assert f"TargetError: {device}: writing " in failed["reason"], failed["reason"]
    [event] = site.events(mac, "run-failed")
    facts = event["error"]["facts"]
    assert (facts["target"], facts["errno"]) == (device, errno.ENOSPC) and facts["offset"] > 0
    assert written > MiB  # it failed part-way: the first MiBs went to the disk


def test_write_errors_a_read_only_block_device_fails_the_run(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:fc:01:03"
    backing = tmp_path / "backing"
    sparse_file(backing, 9 * MiB)
    with loop(backing, "--read-only") as device:
        block_device_run(site, tmp_path, mac, device)
    failed = assert_ends(site, mac, "failed", "Operation not permitted")
    assert f"TargetError: {device}: writing " in failed["reason"], failed["reason"]
    [event] = site.events(mac, "run-failed")
    assert event["error"]["facts"]["errno"] == errno.EPERM
    assert backing.stat().st_blocks == 0  # nothing reached it
