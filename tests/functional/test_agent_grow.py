"""Growing a real ext4 root with the real tools: on a file (offset loop), on a loop block device without
partition nodes (offset loop over the device) and with them (BLKRRPART busy -> partx -u -> the node).

The disk: 64 MiB, GPT by builder.layout (bios, esp, root x86-64 like the builder's, the root ending 1 MiB before
the end), ext4 by ``mke2fs -E offset= -d`` holding a few files; then the file is made 200 MiB. Every check
uses other tools: ``sgdisk -v`` (else ``sfdisk --verify``), ``e2fsck -fn``, ``dumpe2fs -h`` and ``debugfs``
on an offset loop device. Loop devices are detached by name in ``finally``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from provision.agent import GrowResult, grow_root
from provision.images.partitions import PartitionTable, read_partition_table
from tests.support.agent import loop, make_ext4_disk
from tests.support.agent import run_tool as run

MiB = 1 << 20
TOOLS = ("losetup", "mke2fs", "e2fsck", "resize2fs", "dumpe2fs", "debugfs")
FILES = {"x": b"hello from the image\n", "etc/hostname": b"poste-eleve\n", "big": os.urandom(3 * MiB)}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS), reason=f"needs root and {', '.join(TOOLS)}"
)


def check_disk(path: Path, table: PartitionTable, result: GrowResult) -> None:
    """The GPT is valid for the 200 MiB disk, and the root file system is clean, fills it, and has its files."""
    ss = table.sector_size
    with path.open("rb") as f:
        after = read_partition_table(f, 200 * MiB, sector_size=ss)
    root = after.partitions[2]
    assert after.partitions[:2] == table.partitions[:2] and root.start == table.partitions[2].start
    assert table.partitions[2].start * ss == 10 * MiB  # after bios (1-2 MiB) and esp (2-10 MiB)
    assert root.size * ss == result.new_size_bytes == 189 * MiB  # up to the last whole MiB before the backup GPT
    assert after.last_lba == 200 * MiB // ss - 2 - 16384 // ss
    with loop(path, "--sector-size", str(ss)) as disk:
        if shutil.which("sgdisk"):
            out = run(["sgdisk", "-v", disk]).stdout
            assert "No problems found" in out, out
        else:
            done = run(["sfdisk", "--verify", disk])
            assert "No errors detected" in done.stdout and "error" not in done.stderr.lower(), done
    with loop(path, "--offset", str(root.start * ss), "--sizelimit", str(root.size * ss)) as fs:
        fsck = run(["e2fsck", "-fn", fs], check=False)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        head = run(["dumpe2fs", "-h", fs]).stdout
        blocks = int(re.search(r"^Block count:\s+(\d+)", head, re.M).group(1))  # type: ignore[union-attr]
        size = int(re.search(r"^Block size:\s+(\d+)", head, re.M).group(1))  # type: ignore[union-attr]
        assert blocks * size == root.size * ss == result.fs_size_after
        for name, data in FILES.items():
            cat = subprocess.run(["debugfs", "-R", f"cat /{name}", fs], capture_output=True, check=True)
            assert cat.stdout == data, name


def check_result(result: GrowResult) -> None:
    assert (result.grown, result.partition_grown, result.fs_resized, result.gpt_moved) == (True, True, True, True)
    assert result.partition == 3 and result.fs_type == "ext4" and result.reason is None
    assert result.old_size_bytes == result.fs_size_before == 53 * MiB
    print(f"\n{result.device}: {result.seconds:.3f} s, kernel: {result.kernel}, fs on {result.fs_device}")


def test_a_file_grows(tmp_path: Path) -> None:
    path, table = make_ext4_disk(tmp_path, FILES)
    result = grow_root(path)
    check_result(result)
    assert result.kernel == "regular file: nothing to tell" and "loop at offset 10485760" in str(result.fs_device)
    assert run(["losetup", "-j", str(path)]).stdout == ""  # the offset loop was detached
    check_disk(path, table, result)
    again = grow_root(path)
    assert not again.grown and "nothing to grow" in str(again.reason) and again.fs_note == "already fills its partition"


@pytest.mark.parametrize("ss", [512, 4096])
def test_a_loop_device_without_partition_nodes(tmp_path: Path, ss: int) -> None:
    path, table = make_ext4_disk(tmp_path, FILES, ss)
    with loop(path, "--sector-size", str(ss)) as disk:
        result = grow_root(disk, node_timeout=1.0)
        check_result(result)
        assert result.sector_size == ss and f"of {disk})" in str(result.fs_device)
        assert "EINVAL" in result.kernel and result.notes and "offset loop" in result.notes[0]
        assert run(["losetup", "-j", disk]).stdout == ""  # the offset loop over the device was detached
        again = grow_root(disk, node_timeout=0.1)
        assert not again.grown and "nothing to grow" in str(again.reason)
    check_disk(path, table, result)


def test_a_loop_device_with_partition_nodes_and_a_busy_table(tmp_path: Path) -> None:
    """An open partition makes BLKRRPART fail with EBUSY: partx -u resizes partition 3, whose node is used."""
    if shutil.which("partx") is None:
        pytest.skip("needs partx")
    path, table = make_ext4_disk(tmp_path, FILES)
    with loop(path, "--partscan") as disk:
        if not Path(f"{disk}p3").exists():
            run(["partx", "-a", disk], check=False)  # a kernel without the EFI partition parser (this VM's)
        if not Path(f"{disk}p3").is_block_device():
            pytest.skip(f"no partition nodes for {disk}")
        esp = os.open(f"{disk}p2", os.O_RDONLY)
        try:
            result = grow_root(disk)
        finally:
            os.close(esp)
        check_result(result)
        assert result.kernel == "partx -u (BLKRRPART busy)" and result.fs_device == f"{disk}p3" and not result.notes
        sysfs = Path("/sys/class/block") / Path(disk).name / f"{Path(disk).name}p3" / "size"
        assert int(sysfs.read_text()) * 512 == result.new_size_bytes
    check_disk(path, table, result)
