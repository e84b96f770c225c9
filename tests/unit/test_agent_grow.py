"""Growing the root partition: GPT rewrite (both headers, CRCs, MBR), the refusals, and the tool sequence
with a fake runner (no subprocess, no loop device). Disks are sparse files made by builder.layout."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from provision.agent import GptInvalid, GrowToolFailed, TargetError, grow_root
from provision.agent import grow as grow_mod
from provision.agent.grow import LINUX_FS, ROOT_X86_64, find_partition_node, read_fs
from provision.builder.layout import BIOS_BOOT, ESP, LINUX_SWAP, NewPartition
from provision.images.partitions import PartitionTable, read_partition_table
from tests.support.agent import GROW_LAYOUT as LAYOUT
from tests.support.agent import fake_ext4, make_grow_disk

MiB = 1 << 20


class FakeRunner:
    """losetup / e2fsck / resize2fs / partx: records argv; resize2fs rewrites the superblock to the loop's size."""

    def __init__(self, path: Path | None = None, e2fsck: int = 0, missing: str = "") -> None:
        self.path, self.e2fsck, self.missing = path, e2fsck, missing
        self.calls: list[list[str]] = []
        self.loop: tuple[int, int] = (0, 0)

    def __call__(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        self.calls.append(argv)
        assert kwargs["env"]["LC_ALL"] == "C" and kwargs["check"] is False  # type: ignore[index]
        if argv[0] == self.missing:
            raise FileNotFoundError(argv[0])
        out, code, err = b"", 0, b""
        if argv[:2] == ["losetup", "--find"]:
            self.loop = (int(argv[argv.index("--offset") + 1]), int(argv[argv.index("--sizelimit") + 1]))
            out = b"/dev/loop9\n"
        elif argv[0] == "e2fsck":
            code, err = self.e2fsck, b"e2fsck 1.47.0\nroot: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.\n"
        elif argv[0] == "resize2fs" and self.path is not None:
            fake_ext4(self.path, *self.loop)
        return subprocess.CompletedProcess(argv, code if argv[0] == "e2fsck" else 0, out, err)


def headers(path: Path, ss: int) -> tuple[dict[str, object], dict[str, object]]:
    """Both GPT headers (CRCs recomputed and checked) and their entry arrays."""
    found = []
    with path.open("rb") as f:
        sectors = path.stat().st_size // ss
        for lba in (1, sectors - 1):
            f.seek(lba * ss)
            raw = bytearray(f.read(ss))
            fields = struct.unpack_from("<8sIIIIQQQQ16sQIII", raw)
            size, crc = fields[2], fields[3]
            raw[16:20] = bytes(4)
            assert fields[0] == b"EFI PART" and zlib.crc32(raw[:size]) == crc, f"header at LBA {lba}"
            f.seek(fields[10] * ss)
            entries = f.read(fields[11] * fields[12])
            assert zlib.crc32(entries) == fields[13], f"entries of the header at LBA {lba}"
            names = ("sig", "rev", "size", "crc", "res", "my", "alt", "first", "last", "guid", "entries_lba")
            found.append(dict(zip(names, fields, strict=False)) | {"entries": entries})
    return found[0], found[1]


def read_table(path: Path, size: int, sector_size: int = 512) -> PartitionTable:
    with path.open("rb") as f:
        return read_partition_table(f, size, sector_size=sector_size)


def sha(path: Path) -> str:
    """sha256 of the file's data extents and where they are (holes are not read)."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        pos, end = 0, path.stat().st_size
        while pos < end:
            try:
                data = os.lseek(f.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            pos = os.lseek(f.fileno(), data, os.SEEK_HOLE)
            f.seek(data)
            digest.update(f"{data}:".encode() + f.read(pos - data))
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("ss", "root"), [(512, (ROOT_X86_64, "root")), (512, (LINUX_FS, "root")), (4096, (ROOT_X86_64, "root"))]
)
def test_grow_rewrites_both_gpts_the_mbr_and_resizes(tmp_path: Path, ss: int, root: tuple[str, str]) -> None:
    parts = [*LAYOUT[:2], NewPartition(0, *root)]
    path = make_grow_disk(tmp_path / "disk.img", 200 * MiB, parts, ss)
    before = read_table(path, 64 * MiB, sector_size=ss)
    old_alt = 64 * MiB // ss - 1
    run = FakeRunner(path)
    result = grow_root(path, run=run)
    sectors = 200 * MiB // ss
    array = 128 * 128 // ss
    first = before.partitions[2].start
    assert (result.grown, result.partition_grown, result.reason, result.partition) == (True, True, None, 3)
    assert (result.sector_size, result.disk_bytes, result.gpt_moved) == (ss, 200 * MiB, True)
    assert result.old_end_lba == first + before.partitions[2].size - 1
    assert result.new_size_bytes is not None and result.new_size_bytes % MiB == 0
    assert result.new_end_lba == first + result.new_size_bytes // ss - 1
    assert 0 <= (sectors - 2 - array) - result.new_end_lba < MiB // ss
    assert result.kernel == "regular file: nothing to tell" and result.fs_type == "ext4"
    assert result.fs_resized and result.fs_size_before == result.old_size_bytes // 4096 * 4096  # type: ignore[operator]
    assert result.fs_size_after == result.new_size_bytes and "loop at offset" in str(result.fs_device)
    offset = first * ss
    assert run.calls == [
        ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(result.new_size_bytes), str(path)],
        ["e2fsck", "-f", "-p", "/dev/loop9"],
        ["resize2fs", "/dev/loop9"],
        ["losetup", "-d", "/dev/loop9"],
    ]
    primary, backup = headers(path, ss)
    assert (primary["my"], primary["alt"], primary["entries_lba"]) == (1, sectors - 1, 2)
    assert (backup["my"], backup["alt"], backup["entries_lba"]) == (sectors - 1, 1, sectors - 1 - array)
    assert primary["last"] == backup["last"] == sectors - 2 - array
    assert primary["first"] == backup["first"] == before.first_lba
    assert (primary["guid"], primary["rev"], primary["size"]) == (backup["guid"], backup["rev"], backup["size"])
    assert primary["entries"] == backup["entries"]
    after = read_table(path, 200 * MiB, sector_size=ss)
    assert after.partitions[:2] == before.partitions[:2] and after.id == before.id
    assert (
        after.partitions[2].size * ss == result.new_size_bytes and after.partitions[2].uuid == before.partitions[2].uuid
    )
    mbr = path.read_bytes()[:512]
    assert (
        mbr[446 + 4] == 0xEE and struct.unpack_from("<I", mbr, 446 + 12)[0] == sectors - 1 and mbr[510:] == b"\x55\xaa"
    )
    with path.open("rb") as f:
        f.seek(old_alt * ss)
        assert f.read(ss) == bytes(ss)  # the old backup header is gone

    digest = sha(path)
    again = grow_root(path, run=(idle := FakeRunner(path)))
    assert (again.grown, again.partition_grown, again.fs_resized, again.gpt_moved) == (False, False, False, False)
    assert again.reason is not None and again.reason.startswith("nothing to grow") and idle.calls == []
    assert again.fs_note == "already fills its partition" and sha(path) == digest


def test_root_not_last_is_not_grown_but_the_backup_gpt_moves(tmp_path: Path) -> None:
    parts = [NewPartition(8 * MiB, ESP, "esp"), NewPartition(40 * MiB, LINUX_FS, "root"), NewPartition(0, LINUX_SWAP)]
    path = make_grow_disk(tmp_path / "disk.img", 100 * MiB, parts)
    run = FakeRunner(path)
    result = grow_root(path, run=run)
    assert not result.grown and result.partition == 2 and "not the last: partition 3" in str(result.reason)
    assert result.gpt_moved and result.new_end_lba == result.old_end_lba and run.calls == []
    table = read_table(path, 100 * MiB)
    assert table.last_lba == 100 * MiB // 512 - 34 and table.partitions[1].size == 40 * MiB // 512


@pytest.mark.parametrize("extra", [0, 512, 16 * 1024, 512 * 1024])
def test_a_disk_not_bigger_by_a_whole_mib_is_not_grown(tmp_path: Path, extra: int) -> None:
    """The root ends 1 MiB before the image's end, like the builder's; the backup GPT takes 16.5 KiB."""
    parts = [NewPartition(MiB, BIOS_BOOT), NewPartition(61 * MiB, ROOT_X86_64)]
    path = make_grow_disk(tmp_path / "disk.img", 64 * MiB + extra, parts)
    digest = sha(path)
    result = grow_root(path, run=(run := FakeRunner(path)))
    assert result.gpt_moved == (extra > 0) and (sha(path) == digest) == (extra == 0)
    if extra == 512 * 1024:  # 62.5 MiB - 17 KiB from the root's start: one more whole MiB
        assert result.grown and result.new_size_bytes == 62 * MiB and result.fs_size_after == 62 * MiB
        return
    assert not result.grown and "no whole MiB to gain" in str(result.reason) and run.calls == []
    read_table(path, 64 * MiB + extra)
    assert headers(path, 512)[1]["my"] == (64 * MiB + extra) // 512 - 1


def test_no_root_partition(tmp_path: Path) -> None:
    path = make_grow_disk(tmp_path / "disk.img", 100 * MiB, [NewPartition(0, LINUX_FS, "data")])
    result = grow_root(path, run=FakeRunner(path))
    assert not result.grown and result.partition is None and "no root partition" in str(result.reason)
    assert json.loads(json.dumps(result.to_dict()))["notes"] == []


@pytest.mark.parametrize(
    ("offset", "junk", "problem"),
    [(512 + 20, b"\x01", "primary header CRC"), (1024 + 5, b"\x01", "entry array CRC"), (512, b"NOT PART", "no GPT")],
)
def test_a_damaged_gpt_is_refused_and_nothing_written(tmp_path: Path, offset: int, junk: bytes, problem: str) -> None:
    path = make_grow_disk(tmp_path / "disk.img", 100 * MiB)
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(junk)
    digest = sha(path)
    with pytest.raises(GptInvalid) as exc:
        grow_root(path, run=FakeRunner(path))
    assert (
        problem in str(exc.value) and exc.value.facts["device"] == str(path) and "nothing was written" in str(exc.value)
    )
    assert not exc.value.retryable and sha(path) == digest
    if problem != "no GPT":
        assert {"stored_crc", "computed_crc", "lba", "alternate_lba"} <= set(exc.value.facts)


def test_a_truncated_disk_is_refused(tmp_path: Path) -> None:
    path = make_grow_disk(tmp_path / "disk.img", 32 * MiB)
    with pytest.raises(GptInvalid, match="truncated"):
        grow_root(path, run=FakeRunner(path))
    with pytest.raises(TargetError, match="not a block device"):
        grow_root(tmp_path, run=FakeRunner())


def test_the_mbr_size_is_capped_and_64bit_sizes_read(tmp_path: Path) -> None:
    path = make_grow_disk(tmp_path / "disk.img", 3 << 40)
    result = grow_root(path, run=FakeRunner(path))
    with path.open("rb") as f:
        mbr = f.read(512)
    assert result.grown and struct.unpack_from("<I", mbr, 446 + 12)[0] == 0xFFFFFFFF
    assert headers(path, 512)[0]["alt"] == (3 << 40) // 512 - 1
    fake_ext4(path, MiB, 20 << 40, wide=True)
    assert read_fs(path, MiB).size == 20 << 40 and read_fs(path, MiB).type == "ext4"


def test_another_file_system_is_not_resized(tmp_path: Path) -> None:
    path = make_grow_disk(tmp_path / "disk.img", 100 * MiB)
    table = read_table(path, 100 * MiB)
    with path.open("r+b") as f:
        f.seek(table.partitions[2].start * 512)
        f.write(b"XFSB" + bytes(4092))
    result = grow_root(path, run=(run := FakeRunner(path)))
    assert result.grown and result.partition_grown and not result.fs_resized and run.calls == []
    assert (result.fs_type, result.fs_note) == ("xfs", "not resized: xfs")


def test_a_failed_e2fsck_detaches_the_loop_and_the_next_run_resizes(tmp_path: Path) -> None:
    path = make_grow_disk(tmp_path / "disk.img", 100 * MiB)
    with pytest.raises(GrowToolFailed) as exc:
        grow_root(path, run=(run := FakeRunner(path, e2fsck=4)))
    err = exc.value
    assert err.argv == ["e2fsck", "-f", "-p", "/dev/loop9"] and err.returncode == 4
    assert err.meaning == "errors left uncorrected" and "RUN fsck MANUALLY" in err.stderr and "MANUALLY" in str(err)
    assert err.facts["partition_grown"] is True and err.facts["partition"] == 3 and err.facts["new_end_lba"]
    assert run.calls[-1] == ["losetup", "-d", "/dev/loop9"]
    retry = grow_root(path, run=FakeRunner(path, e2fsck=1))  # 1: errors corrected, fine
    assert retry.grown and not retry.partition_grown and retry.fs_resized and retry.reason is None
    assert retry.fs_size_after == retry.new_size_bytes == (err.facts["new_end_lba"] + 1) * 512 - 10 * MiB  # type: ignore[operator]


def test_a_missing_tool_is_named(tmp_path: Path) -> None:
    path = make_grow_disk(tmp_path / "disk.img", 100 * MiB)
    with pytest.raises(GrowToolFailed, match="losetup not installed") as exc:
        grow_root(path, run=FakeRunner(path, missing="losetup"))
    assert exc.value.returncode is None and exc.value.argv[0] == "losetup"


def test_partition_nodes_are_found_in_sysfs(tmp_path: Path) -> None:
    blocks = [p for p in sorted(Path("/dev").glob("loop[0-9]*")) if p.is_block_device()]
    if not blocks:
        pytest.skip("no block device node to stand in for a partition")
    rdev = blocks[0].stat().st_rdev
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    dev_root.mkdir()
    for disk, part in (("sda", "sda3"), ("nvme0n1", "nvme0n1p3")):
        entry = sys_root / "class" / "block" / disk / part
        entry.mkdir(parents=True)
        (entry / "partition").write_text("3\n")
        (entry / "size").write_text(f"{40 * MiB // 512}\n")
        (entry / "dev").write_text(f"{os.major(rdev)}:{os.minor(rdev)}\n")
        (dev_root / part).symlink_to(blocks[0])
        found = find_partition_node(Path(disk), 3, 40 * MiB, timeout=0, sys_root=sys_root, dev_root=dev_root)
        assert found == dev_root / part
        assert find_partition_node(Path(disk), 3, 41 * MiB, timeout=0.2, sys_root=sys_root, dev_root=dev_root) is None
        assert find_partition_node(Path(disk), 2, 40 * MiB, timeout=0, sys_root=sys_root, dev_root=dev_root) is None
    (sys_root / "class" / "block" / "sda" / "sda3" / "dev").write_text("1:1\n")  # another device's node
    assert find_partition_node(Path("sda"), 3, 40 * MiB, timeout=0, sys_root=sys_root, dev_root=dev_root) is None


@pytest.mark.parametrize(("code", "told"), [(None, "BLKRRPART"), (errno.EBUSY, "partx -u"), (errno.EINVAL, "EINVAL")])
def test_the_kernel_is_told(monkeypatch: pytest.MonkeyPatch, code: int | None, told: str) -> None:
    def ioctl(fd: int, request: int) -> None:
        assert request == grow_mod.BLKRRPART
        if code is not None:
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    run = FakeRunner()
    text, scans = grow_mod._tell_kernel(-1, "/dev/sda", 3, run)
    assert told in text and scans == (code != errno.EINVAL)
    assert run.calls == ([["partx", "-u", "--nr", "3", "/dev/sda"]] if code == errno.EBUSY else [])
    text, scans = grow_mod._tell_kernel(-1, "/dev/sda", 3, FakeRunner(missing="partx"))
    assert scans == (code is None) and ("not told" in text) == (code is not None)
