"""The first-boot credential written by the real debugfs into a real ext4 root, and read back with other tools.

The disk: 64 MiB, GPT by builder.layout (bios, esp, root x86-64 like the builder's), ext4 by ``mke2fs -E
offset= -d``, made 200 MiB and grown first, as the agent does (grow, then the credential). Written on a file
(offset loop), on a loop block device without partition nodes (offset loop over the device) and with them
(the partition node). Each time ``debugfs -R "stat ..."``/``cat`` on an offset loop device of our own read the
file back (0600, root, the secret), the folders are checked, ``e2fsck -fn`` is clean and the image's files are
still there. Loop devices are detached by name in ``finally``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from provision.agent.grow import grow_root
from provision.agent.seed import SeedResult, write_firstboot_secret
from provision.images.partitions import PartitionTable, read_partition_table
from provision.wire.api import FIRSTBOOT_SECRET_PATH
from tests.support.agent import loop, make_ext4_disk
from tests.support.agent import run_tool as run
from tests.support.files import sha256_file

MiB = 1 << 20
TOOLS = ("losetup", "mke2fs", "e2fsck", "resize2fs", "debugfs")
FILES = {"etc/hostname": b"poste-eleve\n", "var/cache/x": b"cached\n", "sbin/init": b"#!/bin/sh\n"}
SECRET = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 2

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS), reason=f"needs root and {', '.join(TOOLS)}"
)


def stat(fs: str, path: str) -> dict[str, str]:
    """``debugfs -R "stat PATH"``: type, mode, user, group, size (empty when the path is missing)."""
    out = run(["debugfs", "-R", f"stat {path}", fs]).stdout
    found = re.search(r"Type:\s*(\S+)\s+Mode:\s*(\d+).*?User:\s*(\d+)\s+Group:\s*(\d+).*?Size:\s*(\d+)", out, re.S)
    return dict(zip(("type", "mode", "user", "group", "size"), found.groups(), strict=True)) if found else {}


def check_root(path: Path, table: PartitionTable, secret: str, modes: dict[str, str] | None = None) -> None:
    """Read the root file system back on an offset loop device of our own."""
    ss = table.sector_size
    with path.open("rb") as f:
        root = read_partition_table(f, path.stat().st_size, sector_size=ss).partitions[2]
    with loop(path, "--offset", str(root.start * ss), "--sizelimit", str(root.size * ss)) as fs:
        cat = subprocess.run(["debugfs", "-R", f"cat {FIRSTBOOT_SECRET_PATH}", fs], capture_output=True, check=True)
        assert cat.stdout == secret.encode()
        assert stat(fs, FIRSTBOOT_SECRET_PATH) == {
            "type": "regular", "mode": "0600", "user": "0", "group": "0", "size": str(len(secret))
        }  # fmt: skip
        expected = {"/var": "0755", "/var/lib": "0755", "/var/lib/provision": "0700", **(modes or {})}
        for folder, mode in expected.items():
            assert stat(fs, folder)["type"] == "directory" and stat(fs, folder)["mode"] == mode, folder
            assert (stat(fs, folder)["user"], stat(fs, folder)["group"]) == ("0", "0"), folder
        fsck = run(["e2fsck", "-fn", fs], check=False)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        for name, data in FILES.items():
            back = subprocess.run(["debugfs", "-R", f"cat /{name}", fs], capture_output=True, check=True)
            assert back.stdout == data, name


def check_result(result: SeedResult, created: tuple[str, ...] = ("/var/lib", "/var/lib/provision")) -> None:
    """Written; /var came with the image (FILES), /var/lib and /var/lib/provision were made."""
    assert (result.written, result.reason, result.summary()) == (True, None, "written")
    assert (result.partition, result.fs_type, result.created) == (3, "ext4", created)
    assert SECRET not in str(result.to_dict()) and OTHER not in str(result.to_dict())
    print(f"\n{result.device}: {result.seconds:.3f} s on {result.fs_device} {result.notes}")


def test_written_into_a_file_then_replaced(tmp_path: Path) -> None:
    files = {**FILES, "var/lib/provision/old": b"kept\n"}
    path, table = make_ext4_disk(tmp_path, files)
    assert grow_root(path).grown
    result = write_firstboot_secret(path, SECRET, tmp_dir=tmp_path)
    check_result(result, created=())  # the image's tree has /var/lib/provision (0755, made 0700)
    assert result.notes == ("/var/lib/provision existed with another mode or owner: set to 0700 root",)
    assert "loop at offset 10485760" in str(result.fs_device) and run(["losetup", "-j", str(path)]).stdout == ""
    assert not list(tmp_path.glob("provision-seed-*"))  # the temporary secret file is gone
    check_root(path, table, SECRET)

    again = write_firstboot_secret(path, OTHER, tmp_dir=tmp_path)  # a second run of the same disk
    assert again.written and again.replaced and again.created == () and again.notes == ()
    check_root(path, table, OTHER)


@pytest.mark.parametrize("ss", [512, 4096])
def test_written_through_a_loop_device_without_partition_nodes(tmp_path: Path, ss: int) -> None:
    path, table = make_ext4_disk(tmp_path, FILES, ss)
    with loop(path, "--sector-size", str(ss)) as disk:
        assert grow_root(disk, node_timeout=0.5).grown
        result = write_firstboot_secret(disk, SECRET, node_timeout=0.5)
        check_result(result)
        assert f"of {disk})" in str(result.fs_device) and "offset loop" in result.notes[-1]
        assert result.notes[0] == "partition table re-read: not told: the device does not scan partitions " \
            "(BLKRRPART: EINVAL)"  # fmt: skip
        assert run(["losetup", "-j", disk]).stdout == ""  # the offset loop over the device was detached
    check_root(path, table, SECRET)


def test_written_through_the_partition_node(tmp_path: Path) -> None:
    if shutil.which("partx") is None:
        pytest.skip("needs partx")
    path, table = make_ext4_disk(tmp_path, FILES)
    with loop(path, "--partscan") as disk:
        if not Path(f"{disk}p3").exists():
            run(["partx", "-a", disk], check=False)  # a kernel without the EFI partition parser (this VM's)
        if not Path(f"{disk}p3").is_block_device():
            pytest.skip(f"no partition nodes for {disk}")
        esp = os.open(f"{disk}p2", os.O_RDONLY)  # BLKRRPART busy: partx -u keeps the nodes (no EFI parser here)
        try:
            assert grow_root(disk).grown
            result = write_firstboot_secret(disk, SECRET)
        finally:
            os.close(esp)
        check_result(result)
        assert result.fs_device == f"{disk}p3" and result.notes == ()
    check_root(path, table, SECRET)


def test_a_vfat_root_is_skipped(tmp_path: Path) -> None:
    if shutil.which("mkfs.fat") is None:
        pytest.skip("needs mkfs.fat")
    path, table = make_ext4_disk(tmp_path, FILES)
    root = table.partitions[2]
    run(["mkfs.fat", "-F", "32", "--offset", str(root.start), str(path), str(root.size * 512 // 1024)])
    before = sha256_file(path)
    result = write_firstboot_secret(path, SECRET)
    assert not result.written and result.fs_type == "vfat" and result.summary().startswith("skipped: root file sys")
    assert sha256_file(path) == before


def test_the_kernel_rereads_a_table_older_than_the_write(tmp_path: Path) -> None:
    """The image written through a --partscan loop device that had no partitions, and no grow: the kernel's
    table is stale, so the partition table is re-read (BLKRRPART) before looking for the node again."""
    path, table = make_ext4_disk(tmp_path, FILES)
    blank = tmp_path / "blank.img"
    blank.touch()
    os.truncate(blank, path.stat().st_size)
    with loop(blank, "--partscan") as disk:
        assert not Path(f"{disk}p3").exists()
        run(["dd", f"if={path}", f"of={disk}", "bs=1M", "conv=sparse,fsync", "status=none"])
        result = write_firstboot_secret(disk, SECRET, node_timeout=2.0)
        check_result(result)
        assert result.notes[0] == "partition table re-read: BLKRRPART"
        if Path(f"{disk}p3").is_block_device():  # a kernel with the EFI partition parser
            assert result.fs_device == f"{disk}p3" and len(result.notes) == 1
        else:  # this VM's kernel: still no nodes, the offset loop over the device
            assert f"of {disk})" in str(result.fs_device) and "after 2 s: offset loop" in result.notes[1]
    check_root(blank, table, SECRET)
