"""The first-boot credential written into the installed system's root file system, with a fake debugfs (no
subprocess, no loop device): the exact argument lists and command files, the skips (no GPT, no root, not ext),
the failures with their facts, the read-back, and the secret never in a log, an argv, an error or the result."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from provision.agent.errors import SeedError, SeedToolFailed, TargetError
from provision.agent.rootpart import LINUX_FS, MiB, Tools
from provision.agent.seed import (
    SeedResult,
    debugfs_errors,
    parse_stats,
    write_firstboot_secret,
)
from provision.builder.layout import ESP, LINUX_SWAP, NewPartition
from provision.images.partitions import read_partition_table
from provision.wire.api import FIRSTBOOT_SECRET_PATH
from tests.support.agent import FakeDebugfs, FakeInode, fake_ext4, make_grow_disk

SECRET = "5e" * 16 + "0123456789abcdef" * 2  # 64 hex digits
DIRS = ["/var", "/var/lib", "/var/lib/provision"]
FILE = FIRSTBOOT_SECRET_PATH


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_grow_disk(tmp_path / "disk.img", None)


def root_offset(path: Path) -> int:
    return root_range(path)[0]


def root_range(path: Path) -> tuple[int, int]:
    """Offset and size in bytes of the disk's last partition (the root, on make_grow_disk's layout)."""
    with path.open("rb") as f:
        root = read_partition_table(f, path.stat().st_size).partitions[-1]
    return root.start * 512, root.size * 512


def seed(path: Path, run: FakeDebugfs, tmp_path: Path, secret: str = SECRET) -> SeedResult:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return write_firstboot_secret(path, secret, run=run, tmp_dir=tmp_path / "tmp")


def no_secret_anywhere(run: FakeDebugfs, *texts: object) -> None:
    for argv in run.calls:
        assert all(SECRET not in arg for arg in argv), argv
    for script in run.scripts:
        assert all(SECRET not in line for line in script), script
    for text in texts:
        assert SECRET not in str(text)


def test_the_secret_is_written_with_argument_lists_and_read_back(
    disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run = FakeDebugfs()
    result = seed(disk, run, tmp_path)
    assert (result.written, result.reason, result.summary()) == (True, None, "written")
    assert (result.partition, result.fs_type, result.path) == (3, "ext4", FILE)
    assert result.created == tuple(DIRS) and not result.replaced and result.notes == ()
    assert result.fs_device == f"/dev/loop9 (loop at offset {root_offset(disk)} of {disk})"
    offset, size = root_range(disk)
    [inspect, write, verify] = [c[-2] for c in run.calls if c[:2] in (["debugfs", "-f"], ["debugfs", "-w"])]
    assert run.calls == [
        ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), str(disk)],
        ["debugfs", "-f", inspect, "/dev/loop9"],
        ["debugfs", "-w", "-f", write, "/dev/loop9"],
        ["debugfs", "-f", verify, "/dev/loop9"],
        ["debugfs", "-R", f"cat {FILE}", "/dev/loop9"],
        ["losetup", "-d", "/dev/loop9"],
    ]
    stats = [f"stat {p}" for p in ["/", *DIRS, FILE]]
    secret_file = run.scripts[1][run.scripts[1].index("cd /var/lib/provision") + 1].split()[1]
    assert run.scripts == [
        stats,
        [
            "mkdir /var", "sif /var mode 040755", "sif /var uid 0", "sif /var gid 0",
            "mkdir /var/lib", "sif /var/lib mode 040755", "sif /var/lib uid 0", "sif /var/lib gid 0",
            "mkdir /var/lib/provision", "sif /var/lib/provision mode 040700", "sif /var/lib/provision uid 0",
            "sif /var/lib/provision gid 0",
            "cd /var/lib/provision", f"write {secret_file} firstboot-secret",
            f"sif {FILE} mode 0100600", f"sif {FILE} uid 0", f"sif {FILE} gid 0",
        ],
        stats,
    ]  # fmt: skip
    assert Path(secret_file).parent.parent == tmp_path / "tmp" and list((tmp_path / "tmp").iterdir()) == []
    written = run.inodes[FILE]
    assert (written.type, written.mode, written.uid, written.gid, written.data) == (
        "regular", 0o600, 0, 0, SECRET.encode()
    )  # fmt: skip
    assert [(run.inodes[d].mode, run.inodes[d].uid) for d in DIRS] == [(0o755, 0), (0o755, 0), (0o700, 0)]
    no_secret_anywhere(run, caplog.text, json.dumps(result.to_dict()), result.summary())
    assert "first-boot credential" in caplog.text and "written" in caplog.text


def test_existing_folders_are_kept_and_an_old_file_is_replaced(disk: Path, tmp_path: Path) -> None:
    """/var and /var/lib keep their modes; /var/lib/provision becomes 0700 root; the old file goes first."""
    tree = {
        "/var": FakeInode("directory", 0o755), "/var/lib": FakeInode("directory", 0o775, 0, 50),
        "/var/lib/provision": FakeInode("directory", 0o755, 1000, 1000),
        FILE: FakeInode("regular", 0o644, 1000, 1000, b"an old secret"),
    }  # fmt: skip
    run = FakeDebugfs(tree)
    result = seed(disk, run, tmp_path)
    assert result.written and result.created == () and result.replaced
    assert result.notes == ("/var/lib/provision existed with another mode or owner: set to 0700 root",)
    write = run.scripts[1]
    assert write[:5] == [
        "sif /var/lib/provision mode 040700", "sif /var/lib/provision uid 0", "sif /var/lib/provision gid 0",
        f"rm {FILE}", "cd /var/lib/provision",
    ]  # fmt: skip
    assert not any(line.startswith(("mkdir", "sif /var ", "sif /var/lib ")) for line in write)
    assert (run.inodes["/var/lib"].mode, run.inodes["/var/lib"].gid) == (0o775, 50)
    assert (run.inodes["/var/lib/provision"].mode, run.inodes["/var/lib/provision"].uid) == (0o700, 0)
    assert run.inodes[FILE].data == SECRET.encode() and run.inodes[FILE].mode == 0o600

    again = FakeDebugfs(dict(run.inodes))  # everything right already: only the file is replaced
    assert seed(disk, again, tmp_path).notes == () and again.scripts[1][0] == f"rm {FILE}"


@pytest.mark.parametrize(
    ("at", "magic", "kind"),
    [(0, b"XFSB", "xfs"), (82, b"FAT32   ", "vfat"), (3, b"NTFS    ", "ntfs"), (0, b"", "unknown")],
)
def test_a_root_that_is_not_ext_is_skipped(disk: Path, tmp_path: Path, at: int, magic: bytes, kind: str) -> None:
    with disk.open("r+b") as f:
        f.seek(root_offset(disk))
        head = bytearray(4096)
        head[at : at + len(magic)] = magic
        f.write(head)
    run = FakeDebugfs()
    result = seed(disk, run, tmp_path)
    assert not result.written and run.calls == [] and result.fs_type == kind and result.partition == 3
    assert result.summary() == f"skipped: root file system is {kind}, not ext2/3/4: debugfs cannot write it"


def test_no_gpt_or_no_root_partition_is_skipped(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(MiB))
    run = FakeDebugfs()
    result = seed(blank, run, tmp_path)
    assert not result.written and result.summary().startswith("skipped: no usable GPT: no GPT signature at LBA 1")
    data = make_grow_disk(tmp_path / "data.img", None, [NewPartition(8 * MiB, ESP), NewPartition(0, LINUX_FS, "data")])
    assert seed(data, run, tmp_path).summary() == "skipped: no root partition" and run.calls == []


def test_a_root_that_is_not_last_is_still_found(tmp_path: Path) -> None:
    parts = [NewPartition(8 * MiB, ESP, "esp"), NewPartition(40 * MiB, LINUX_FS, "root"), NewPartition(0, LINUX_SWAP)]
    path = make_grow_disk(tmp_path / "disk.img", None, parts)
    with path.open("rb") as f:
        root = read_partition_table(f, 64 * MiB).partitions[1]
    fake_ext4(path, root.start * 512, root.size * 512)  # make_grow_disk put one in the last partition only
    run = FakeDebugfs()
    result = seed(path, run, tmp_path)
    assert result.written and result.partition == 2 and run.calls[0][4:7] == [str(root.start * 512), "--sizelimit",
                                                                             str(root.size * 512)]  # fmt: skip


def test_a_failing_write_fails_with_every_fact(disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    run = FakeDebugfs(broken=("write",))
    with pytest.raises(SeedToolFailed) as exc:
        seed(disk, run, tmp_path)
    err = exc.value
    assert err.argv[:3] == ["debugfs", "-w", "-f"] and err.argv[-1] == "/dev/loop9" and err.returncode == 0
    assert err.meaning == "debugfs reported 4 errors, the first: write: Could not allocate block in ext2 filesystem"
    assert "write: Could not allocate block" in err.stderr and err.meaning in str(err) and not err.retryable
    facts = err.facts
    assert facts["device"] == str(disk) and facts["partition"] == 3 and facts["fs_type"] == "ext4"
    assert str(facts["fs_device"]).startswith("/dev/loop9 (loop at offset") and facts["path"] == FILE
    assert "mkdir /var" in facts["commands"] and facts["stderr"] == err.stderr  # type: ignore[operator]
    assert run.calls[-1] == ["losetup", "-d", "/dev/loop9"] and list((tmp_path / "tmp").iterdir()) == []
    no_secret_anywhere(run, caplog.text, err, err.facts)


def test_debugfs_that_cannot_open_the_file_system(disk: Path, tmp_path: Path) -> None:
    run = FakeDebugfs(unopenable=True)
    with pytest.raises(SeedToolFailed, match="could not read the file system") as exc:
        seed(disk, run, tmp_path)
    assert "Bad magic number" in exc.value.stderr and exc.value.argv[:2] == ["debugfs", "-f"]
    assert [c[0] for c in run.calls] == ["losetup", "debugfs", "losetup"]  # nothing written, the loop detached


@pytest.mark.parametrize("tool", ["debugfs", "losetup"])
def test_a_missing_tool_is_named(disk: Path, tmp_path: Path, tool: str) -> None:
    with pytest.raises(SeedToolFailed, match=f"{tool} not installed") as exc:
        seed(disk, FakeDebugfs(missing=tool), tmp_path)
    assert exc.value.returncode is None and exc.value.argv[0] == tool


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ({"flip": True}, f"{FILE}: content differs (64 bytes read, 64 written)"),
        (
            {"ignore_sif": (FILE,), "write_owner": 1000},
            f"{FILE}: mode 0600 owner 1000:1000 size 64, expected mode 0600 owner 0:0 size 64",
        ),
        ({"ignore_sif": tuple(DIRS)}, "/var/lib/provision: mode 0755 owner 0:0, expected 0700 0:0"),
    ],
)
def test_a_write_that_does_not_read_back_right_fails(
    disk: Path, tmp_path: Path, fault: dict[str, Any], problem: str
) -> None:
    run = FakeDebugfs(**fault)
    with pytest.raises(SeedError, match="did not read back right") as exc:
        seed(disk, run, tmp_path)
    assert problem in exc.value.facts["problems"] and problem in str(exc.value)  # type: ignore[operator]
    assert not isinstance(exc.value, SeedToolFailed) and run.calls[-1] == ["losetup", "-d", "/dev/loop9"]
    no_secret_anywhere(run, exc.value, exc.value.facts)


@pytest.mark.parametrize(
    ("tree", "problem"),
    [
        ({"/var": FakeInode("symlink", 0o777)}, "/var is a symlink, not a directory"),
        ({"/var": FakeInode("directory", 0o755), "/var/lib": FakeInode("regular", 0o644)}, "/var/lib is a regular"),
        ({**{d: FakeInode("directory", 0o700) for d in DIRS}, FILE: FakeInode("directory", 0o700)}, "is a directory"),
    ],
)
def test_a_path_in_the_way_stops_before_writing(
    disk: Path, tmp_path: Path, tree: dict[str, FakeInode], problem: str
) -> None:
    run = FakeDebugfs(tree)
    with pytest.raises(SeedError, match=problem) as exc:
        seed(disk, run, tmp_path)
    assert exc.value.facts["problem"] and not any("-w" in c for c in run.calls) and len(run.scripts) == 1


@pytest.mark.parametrize("secret", ["", "abc", "AB" * 16, "g" * 32, "a" * 129, "ab" * 16 + "\n"])
def test_a_secret_that_is_not_hex_is_refused(disk: Path, tmp_path: Path, secret: str) -> None:
    run = FakeDebugfs()
    with pytest.raises(SeedError, match="is not") as exc:
        seed(disk, run, tmp_path, secret)
    assert run.calls == [] and (not secret.strip() or secret.strip() not in str(exc.value))


def test_a_target_that_is_not_a_disk(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not a block device"):
        seed(tmp_path, FakeDebugfs(), tmp_path)


def test_debugfs_output_is_read() -> None:
    """Real debugfs 1.47 output, and 1.46's owner line without the project."""
    stdout = (
        "debugfs: stat /\nInode: 2   Type: directory    Mode:  0755   Flags: 0x80000\n"
        "Generation: 0    Version: 0x00000000:00000000\nUser:     0   Group:     0   Project:     0   Size: 4096\n"
        "debugfs: stat /var\n"
        "debugfs: stat /etc/x\nInode: 13   Type: regular    Mode:  0644   Flags: 0x80000\n"
        "User:  1000   Group:    50   Size: 3\nFile ACL: 0\n"
    )
    found = parse_stats(stdout, ["/", "/var", "/etc/x", "/never"])
    assert found["/"] is not None and (found["/"].type, found["/"].mode, found["/"].size) == ("directory", 0o755, 4096)
    assert found["/var"] is None and found["/never"] is None
    assert found["/etc/x"] is not None and (found["/etc/x"].uid, found["/etc/x"].gid) == (1000, 50)
    stderr = b"debugfs 1.47.0 (5-Feb-2023)\n/var: File not found by ext2_lookup \n\n"
    assert debugfs_errors(stderr) == ["/var: File not found by ext2_lookup "]
    assert debugfs_errors(b"debugfs 1.46.2 (28-Feb-2021)\n") == []


def test_the_result_is_json_and_says_what_was_done(disk: Path, tmp_path: Path) -> None:
    result = seed(disk, FakeDebugfs(), tmp_path)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["written"] is True and data["created"] == DIRS and data["seconds"] >= 0
    assert set(data) == {"device", "written", "reason", "path", "partition", "fs_type", "fs_device", "created",
                         "replaced", "seconds", "notes"}  # fmt: skip


def test_the_loop_module_is_loaded_when_there_is_no_loop_control(tmp_path: Path) -> None:
    """The live environment loads only the modules its hardware asks for: no /dev/loop-control, no loop."""
    for missing, note in (("", "loop module loaded (modprobe loop)"), ("modprobe", "modprobe not installed")):
        run, notes = FakeDebugfs(missing=missing), list[str]()
        tools = Tools(run, 10.0, "/dev/vda", {"partition": 3}, notes, SeedToolFailed)
        tools.loop_control = tmp_path / "loop-control"
        with tools.offset_loop("/dev/vda", 4096, 8192) as device:
            assert device == "/dev/loop9"
        assert [c[0] for c in run.calls] == ["modprobe", "losetup", "losetup"] and note in notes[0]
    (tmp_path / "loop-control").touch()
    run = FakeDebugfs()
    with Tools(run, 10.0, "/dev/vda", {}, [], SeedToolFailed).offset_loop("/dev/vda", 0, 512):
        pass
    assert [c[0] for c in run.calls] == ["losetup", "losetup"]  # (this machine's /dev/loop-control)
