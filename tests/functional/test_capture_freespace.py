"""The capture's free-space readers on real file systems (mke2fs, mkfs.vfat, mkntfs; files written with
debugfs, mtools and ntfs-3g), in disk files partitioned by sfdisk (GPT, and MBR with a logical partition).

Two checks on each file system:
1. what the tools say is free: ext, exactly the free block ranges dumpe2fs lists for every group; vfat, the free
   cluster count of ``fsck.vfat -n -v``; NTFS, the free clusters of ``ntfsinfo -m``. ``partitions()`` finds what
   sfdisk wrote.
2. data safety, the one that matters: every range found free is overwritten in a copy of the partition, once with
   random bytes and once with zeros (what the capture sends); each copy must stay clean by the file system's own
   checker (``e2fsck -fn``, ``fsck.vfat -n``, ``ntfsfix -n``) and give back every file as written (debugfs cat,
   mcopy, ntfscat). Before the files are written the free space holds random bytes, and files are written then
   removed, so free space holds stale data as on a real PC.

Damage made with debugfs: a data block freed in the bitmap (and its count) is taken as free: a bitmap is trusted
as the file system trusts it, and e2fsck is what finds that damage; a freed inode table block and a journal
needing recovery give a note and nothing free.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from provision.agent.capture import FreeSpace, Partition, free_space, partitions
from tests.support.agent import run_tool as run
from tests.support.realfs import (
    GONE,
    MiB,
    assemble,
    check,
    content,
    ext_free_blocks,
    files,
    make_ext,
    make_ntfs,
    make_vfat,
    ntfs_free,
    vfat_free,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ntfs-3g mounts, tools in /usr/sbin)")


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


class Disk:
    def __init__(self, path: Path) -> None:
        self.path, self.size = path, path.stat().st_size
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        os.close(self.fd)


def read_disk(tmp: Path, label: str, images: list[Path]) -> tuple[Disk, list[Partition]]:
    """The disk assembled from ``images``, and its partitions, which must be what sfdisk wrote."""
    found = [Partition(*p) for p in assemble(tmp / "disk.img", label, images)]
    disk = Disk(tmp / "disk.img")
    assert partitions(disk.read, disk.size, 512) == tuple(found)
    return disk, found


def overwrite_free(disk: Disk, part: Partition, space: FreeSpace, out: Path, fill: str) -> Path:
    """A copy of the partition with every free range overwritten (``random`` or ``zero``)."""
    with out.open("wb") as f:
        for at in range(0, part.size, 4 * MiB):
            f.write(disk.read(part.offset + at, min(4 * MiB, part.size - at)))
        for start, length in space.free:
            for at in range(start, start + length, 4 * MiB):
                n = min(4 * MiB, start + length - at)
                data = bytes(n) if fill == "zero" else os.urandom(16) * (n // 16) + os.urandom(n % 16)
                os.pwrite(f.fileno(), data, at - part.offset)
    return out


def safe(disk: Disk, part: Partition, space: FreeSpace, kind: str, tmp: Path, how: str = "") -> None:
    for fill in ("random", "zero"):
        check(kind, overwrite_free(disk, part, space, tmp / f"part{part.number}-{fill}.img", fill), how)


EXT_CASES = [
    ("ext4", ["-t", "ext4", "-b", "4096", "-g", "2048"], "gpt"),
    ("ext4", ["-t", "ext4", "-b", "1024"], "dos"),
    ("ext4", ["-t", "ext4", "-b", "4096", "-g", "2048", "-O", "^flex_bg,^64bit,^metadata_csum,uninit_bg"], "gpt"),
    ("ext4", ["-t", "ext4", "-b", "1024", "-g", "256", "-O", "meta_bg,^resize_inode"], "dos"),
    ("ext4", ["-t", "ext4", "-b", "4096", "-g", "2048", "-O", "sparse_super2"], "gpt"),
    ("ext3", ["-t", "ext3"], "dos"),
    ("ext2", ["-t", "ext2", "-b", "2048"], "gpt"),
]


@pytest.mark.parametrize(("kind", "options", "label"), EXT_CASES, ids=[" ".join(c[1]) for c in EXT_CASES])
def test_ext_free_blocks_are_dumpe2fs_and_safe(tmp_path: Path, kind: str, options: list[str], label: str) -> None:
    need("mke2fs", "dumpe2fs", "debugfs", "e2fsck", "sfdisk")
    make_ext(tmp_path / "ext.img", 64 * MiB, options)
    listed = ext_free_blocks(tmp_path / "ext.img")
    if "metadata_csum" not in " ".join(options) and kind == "ext4":  # the default features: flex_bg, 64bit, csum
        assert "BLOCK_UNINIT" in run(["dumpe2fs", str(tmp_path / "ext.img")]).stdout
    disk, (part,) = read_disk(tmp_path, label, [tmp_path / "ext.img"])
    space = free_space(disk.read, part.offset, part.size)
    assert (space.fs, space.note, space.label) == (kind, None, None)
    bs = space.block_size
    assert [((s - part.offset) // bs, n // bs) for s, n in space.free] == listed
    assert space.free_bytes > 40 * MiB
    safe(disk, part, space, kind, tmp_path)


@pytest.mark.parametrize("label", ["gpt", "dos"])
def test_a_disk_of_vfat_ext4_and_ntfs(tmp_path: Path, label: str) -> None:
    need("mkfs.vfat", "fsck.vfat", "mcopy", "mdel", "mmd", "mke2fs", "dumpe2fs", "debugfs", "e2fsck", "sfdisk")
    need("mkntfs", "ntfsinfo", "ntfsfix", "ntfscat", "ntfscp")
    make_vfat(tmp_path / "esp.img", 48 * MiB, 32 if label == "gpt" else 16)
    make_ext(tmp_path / "root.img", 64 * MiB, ["-t", "ext4"])
    how = make_ntfs(tmp_path / "win.img", 48 * MiB)
    tool_says = {
        "vfat": vfat_free(tmp_path / "esp.img")[0],
        "ext4": sum(n for _, n in ext_free_blocks(tmp_path / "root.img")),
        "ntfs": ntfs_free(tmp_path / "win.img"),
    }
    disk, parts = read_disk(tmp_path, label, [tmp_path / "esp.img", tmp_path / "root.img", tmp_path / "win.img"])
    assert [p.number for p in parts] == ([1, 2, 3] if label == "gpt" else [1, 2, 5])
    for part, kind in zip(parts, ("vfat", "ext4", "ntfs"), strict=True):
        space = free_space(disk.read, part.offset, part.size)
        assert (space.fs, space.note) == (kind, None)
        assert space.free_bytes // space.block_size == tool_says[kind], kind
        assert space.label == {"vfat": "ESP", "ext4": None, "ntfs": "WIN"}[kind]
        assert space.free_bytes > 30 * MiB
        safe(disk, part, space, kind, tmp_path, how)
        wrong = with_a_file_block(disk, part, space)
        with pytest.raises(AssertionError):  # the check sees a used block called free
            check(kind, overwrite_free(disk, part, wrong, tmp_path / f"part{part.number}-wrong.img", "random"), how)


def with_a_file_block(disk: Disk, part: Partition, space: FreeSpace) -> FreeSpace:
    """``space`` with the allocation unit holding the start of /big added to its free ranges."""
    image = disk.read(part.offset, part.size)
    at = image.find(content("big", 4096))
    assert at >= 0 and at % space.block_size == 0
    free = (*space.free, (part.offset + at, space.block_size))
    return FreeSpace(space.fs, space.offset, space.size, space.block_size, free)


def ext_with(tmp: Path, block: int, *, fix_count: bool) -> tuple[Path, str]:
    """A 1 KiB-block ext4 with the files whose ``block`` debugfs marked free in its bitmap (``freeb``, which
    leaves the group's free count as it was), the count raised to match with ``fix_count``; e2fsck -fn's say."""
    image = tmp / "ext.img"
    make_ext(image, 32 * MiB, ["-t", "ext4", "-b", "1024"])
    group = (block - 1) // 8192
    counts = run(["dumpe2fs", str(image)]).stdout.split(f"Group {group}: ")[1]
    count = int(counts.split(" free blocks")[0].rsplit("\n", 1)[1].strip())
    requests = [f"freeb {block}"]
    if fix_count:
        requests += [f"set_bg {group} free_blocks_count {count + 1}", f"set_bg {group} checksum calc"]
    (tmp / "damage.cmd").write_text("\n".join(requests) + "\n")
    run(["debugfs", "-w", "-f", str(tmp / "damage.cmd"), str(image)])
    return image, run(["e2fsck", "-fn", str(image)], check=False).stdout


def probe_ext(tmp: Path) -> tuple[int, int]:
    """A block of /big and the first block of group 1's inode table, in the file system ``ext_with`` makes."""
    need("mke2fs", "dumpe2fs", "debugfs", "e2fsck")
    (tmp / "probe").mkdir()
    image = tmp / "probe" / "ext.img"
    make_ext(image, 32 * MiB, ["-t", "ext4", "-b", "1024"])
    block = int(run(["debugfs", "-R", "blocks /big", str(image)]).stdout.split()[10])
    table = int(run(["dumpe2fs", str(image)]).stdout.split("Inode table at ")[2].split("-")[0])
    return block, table


def test_a_file_block_freed_in_the_bitmap_and_its_count_is_trusted(tmp_path: Path) -> None:
    """A block of /big cleared in the bitmap and the group's free count raised, as a damaged file system
    would have it: the bitmap is trusted as the kernel trusts it (it would allocate that block too); finding
    this damage is e2fsck's job. Nothing crashes."""
    block, _ = probe_ext(tmp_path)
    image, fsck = ext_with(tmp_path, block, fix_count=True)
    assert "block bitmap differences" in fsck.lower()
    space = free_space(Disk(image).read, 0, image.stat().st_size)
    assert space.note is None and any(s <= block * 1024 < s + n for s, n in space.free)


def test_a_file_block_freed_without_its_count_is_refused(tmp_path: Path) -> None:
    block, _ = probe_ext(tmp_path)
    image, _ = ext_with(tmp_path, block, fix_count=False)
    space = free_space(Disk(image).read, 0, image.stat().st_size)
    group = (block - 1) // 8192
    assert space.free == () and (space.note or "").startswith(f"group {group}: bitmap has ")


def test_an_inode_table_block_freed_is_refused(tmp_path: Path) -> None:
    _, table = probe_ext(tmp_path)
    image, _ = ext_with(tmp_path, table, fix_count=True)
    space = free_space(Disk(image).read, 0, image.stat().st_size)
    assert space.free == () and space.note == f"block {table} holds file system metadata but a bitmap marks it free"


def test_a_journal_needing_recovery_is_refused(tmp_path: Path) -> None:
    need("mke2fs", "debugfs")
    image = tmp_path / "ext.img"
    make_ext(image, 32 * MiB, ["-t", "ext4"])
    run(["debugfs", "-w", "-R", "feature needs_recovery", str(image)])
    space = free_space(Disk(image).read, 0, image.stat().st_size)
    assert space.free == () and "the journal needs recovery" in (space.note or "")


def test_ext4_written_by_the_kernel(tmp_path: Path) -> None:
    """The file system as a PC leaves it: written through the kernel's ext4 (a loop mount), cleanly unmounted."""
    need("mke2fs", "dumpe2fs", "debugfs", "e2fsck", "sfdisk", "mount", "umount")
    image, mnt = tmp_path / "ext.img", tmp_path / "mnt"
    image.write_bytes(b"")
    os.truncate(image, 128 * MiB)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-g", "4096", "-E", "lazy_itable_init=1", str(image)])
    mnt.mkdir()
    mounted = run(["mount", "-o", "loop", str(image), str(mnt)], check=False)
    if mounted.returncode:
        pytest.skip(f"no loop mount here: {mounted.stderr.strip()}")
    try:
        (mnt / "dir").mkdir()
        for name, src in files(tmp_path).items():
            shutil.copyfile(src, mnt / name)
        for name in GONE:
            (mnt / name).unlink()
    finally:
        run(["umount", str(mnt)])
    listed = ext_free_blocks(image)
    disk, (part,) = read_disk(tmp_path, "gpt", [image])
    space = free_space(disk.read, part.offset, part.size)
    assert space.note is None
    assert [((s - part.offset) // 4096, n // 4096) for s, n in space.free] == listed
    safe(disk, part, space, "ext4", tmp_path)
