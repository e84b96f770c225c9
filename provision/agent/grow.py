"""Grow the root partition and its ext4 file system to the end of the disk, after a verified write.

Pure-Python GPT (struct + zlib.crc32): checked first (``GptInvalid``, nothing written), then the backup GPT
written at the disk's end (fsync), then the primary and the protective MBR (fsync). The kernel is told with
``BLKRRPART`` (``partx -u`` when busy); ``e2fsck -f -p`` and ``resize2fs`` run on the partition node or on an
offset loop device. Every step and choice: ``docs/agent.md``, "Growing the root file system".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from provision.agent.disk_io import BLKSSZGET
from provision.agent.errors import GptInvalid, GrowToolFailed, TargetError
from provision.agent.inventory import Runner

log = logging.getLogger(__name__)

ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # discoverable partitions: root (x86-64)
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # a root when named "root"
BLKRRPART = 0x125F  # _IO(0x12, 95): re-read the partition table
MiB = 1 << 20
NODE_TIMEOUT = 5.0  # seconds to wait for the partition node (udev / devtmpfs)
TOOL_TIMEOUT = 3600.0  # seconds for one e2fsck or resize2fs
E2FSCK_BITS = {1: "errors corrected", 2: "reboot needed (mounted?)", 4: "errors left uncorrected",
               8: "operational error", 16: "usage error", 32: "cancelled", 128: "shared library error"}  # fmt: skip
EXT_MAGIC = 0xEF53
_OTHER_FS = ((0, b"XFSB", "xfs"), (3, b"NTFS    ", "ntfs"), (82, b"FAT32   ", "vfat"), (54, b"FAT", "vfat"))
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # the 92 bytes of a GPT header


@dataclass(frozen=True)
class GrowResult:
    """What ``grow_root`` did. ``grown``: the root partition or its file system got bigger in this run."""

    device: str
    grown: bool
    reason: str | None  # why nothing grew
    partition: int | None
    sector_size: int
    disk_bytes: int
    partition_grown: bool = False
    old_end_lba: int | None = None
    new_end_lba: int | None = None
    old_size_bytes: int | None = None
    new_size_bytes: int | None = None
    gpt_moved: bool = False  # the backup GPT was moved to the end of the disk
    kernel: str = "unchanged"  # how the kernel learned the new partition size
    fs_type: str | None = None
    fs_resized: bool = False
    fs_note: str = ""
    fs_size_before: int | None = None
    fs_size_after: int | None = None
    fs_device: str | None = None  # where e2fsck and resize2fs ran
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


@dataclass(frozen=True)
class FsInfo:
    type: str  # ext4 / ext3 / ext2, a few others by their magic, or "unknown"
    size: int | None = None  # bytes (ext only): s_blocks_count_lo/hi * block size
    block_size: int | None = None


def read_fs(path: Path | str, offset: int) -> FsInfo:
    """The file system at ``offset`` of ``path``: ext2/3/4 with its size from the superblock, or a name."""
    with Path(path).open("rb") as f:
        f.seek(offset)
        head = f.read(4096)
    sb = head[1024:2048]
    if len(sb) == 1024 and struct.unpack_from("<H", sb, 56)[0] == EXT_MAGIC:
        compat, incompat = struct.unpack_from("<II", sb, 0x5C)
        blocks = struct.unpack_from("<I", sb, 4)[0]
        if incompat & 0x80:  # 64bit: s_blocks_count_hi counts
            blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
        kind = "ext4" if incompat & 0x2C0 else "ext3" if compat & 0x4 else "ext2"  # extents, 64bit, flex_bg
        block_size = 1024 << struct.unpack_from("<I", sb, 24)[0]
        return FsInfo(kind, blocks * block_size, block_size)
    found = [name for at, magic, name in _OTHER_FS if head[at : at + len(magic)] == magic]
    return FsInfo(found[0] if found else "unknown")


class _Disk:
    def __init__(self, path: Path, sector_size: int | None) -> None:
        self.name = str(path)
        try:
            mode = path.stat().st_mode
            self.block = stat.S_ISBLK(mode)
            if not (self.block or stat.S_ISREG(mode)):
                raise TargetError(f"{path}: not a block device or a regular file", target=self.name)
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if self.block else 0))
        except OSError as exc:
            hint = " (mounted or in use?)" if exc.errno == errno.EBUSY else ""
            raise TargetError(f"{path}: cannot open: {exc.strerror}{hint}", target=self.name) from None
        try:
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
            if self.block:
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)  # no stale pages from before the write
                sector_size = sector_size or struct.unpack("i", fcntl.ioctl(self.fd, BLKSSZGET, b"\0" * 4))[0]
            elif sector_size is None:  # a file standing in for a 4Kn disk has its GPT at 4096
                at_4k = self.read(512, 8) != b"EFI PART" and self.read(4096, 8) == b"EFI PART"
                sector_size = 4096 if at_4k else 512
        except BaseException:
            os.close(self.fd)
            raise
        self.ss = sector_size
        self.sectors = self.size // sector_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data: bytes) -> None:
        if os.pwrite(self.fd, data, offset) != len(data):
            raise OSError(errno.EIO, f"{self.name}: short write of {len(data)} bytes at {offset}")


@dataclass(frozen=True)
class _Part:
    number: int
    first: int
    last: int
    type: str
    name: str


def _crc(header: bytearray, size: int) -> int:
    struct.pack_into("<I", header, 16, 0)
    crc = zlib.crc32(header[:size])
    struct.pack_into("<I", header, 16, crc)
    return crc


class _Gpt:
    """The primary GPT, checked: its fields, the header sector and the entry array (bytearrays)."""

    def __init__(self, disk: _Disk) -> None:
        name, ss = disk.name, disk.ss
        self.header = bytearray(disk.read(ss, ss))
        if len(self.header) < 92 or self.header[:8] != b"EFI PART":
            found = bytes(self.header[:8]).hex()
            raise GptInvalid(name, f"no GPT signature at LBA 1 ({ss}-byte sectors)", lba=1, sector_size=ss, found=found)
        fields = _HEADER.unpack_from(self.header)
        self.size, stored, my_lba, self.alt, self.first, self.last = fields[2], fields[3], *fields[5:9]
        self.entries_lba, self.count, self.entry_size, entries_crc = fields[10:14]
        facts: dict[str, Any] = {"sector_size": ss, "disk_sectors": disk.sectors, "alternate_lba": self.alt,
                                 "first_usable_lba": self.first, "last_usable_lba": self.last}  # fmt: skip
        if not 92 <= self.size <= ss:
            raise GptInvalid(name, f"header size {self.size} not in 92..{ss}", header_size=self.size, **facts)
        computed = _crc(bytearray(self.header), self.size)
        if computed != stored:
            problem = f"primary header CRC 0x{stored:08x} stored, 0x{computed:08x} computed"
            raise GptInvalid(name, problem, lba=1, stored_crc=stored, computed_crc=computed, **facts)
        array = self.count * self.entry_size
        self.array_sectors = -(-array // ss)
        if my_lba != 1 or self.entry_size < 128 or self.entry_size % 8 or array > MiB or self.entries_lba < 2:
            problem = f"my LBA {my_lba}, {self.count} entries of {self.entry_size} bytes at LBA {self.entries_lba}"
            raise GptInvalid(name, f"header fields out of range ({problem})", my_lba=my_lba, **facts)
        if not self.entries_lba + self.array_sectors <= self.first <= self.last < self.alt < disk.sectors:
            problem = f"usable LBAs {self.first}-{self.last}, backup LBA {self.alt}: not in {disk.sectors} sectors"
            raise GptInvalid(name, f"{problem} (truncated?)", **facts)
        self.entries = bytearray(disk.read(self.entries_lba * ss, array))
        computed = zlib.crc32(self.entries)
        if computed != entries_crc:
            problem, lba = f"entry array CRC 0x{entries_crc:08x} stored, 0x{computed:08x} computed", self.entries_lba
            raise GptInvalid(name, problem, lba=lba, stored_crc=entries_crc, computed_crc=computed, **facts)
        self.parts: list[_Part] = []
        for i in range(self.count):
            raw = bytes(self.entries[i * self.entry_size : i * self.entry_size + 128])
            if raw[:16] == bytes(16):
                continue
            first, last = struct.unpack_from("<QQ", raw, 32)
            if not self.first <= first <= last <= self.last:
                problem = f"partition {i + 1} at LBA {first}-{last} is outside the usable LBAs {self.first}-{self.last}"
                raise GptInvalid(name, problem, partition=i + 1, **facts)
            label = raw[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
            self.parts.append(_Part(i + 1, first, last, str(uuid.UUID(bytes_le=raw[:16])).upper(), label))

    def header_for(self, my: int, alt: int, last: int, entries_lba: int) -> bytes:
        header = bytearray(self.header)
        struct.pack_into("<QQ", header, 24, my, alt)
        struct.pack_into("<Q", header, 48, last)
        struct.pack_into("<Q", header, 72, entries_lba)
        struct.pack_into("<I", header, 88, zlib.crc32(self.entries))
        _crc(header, self.size)
        return bytes(header)

    def write(self, disk: _Disk, root: _Part | None, new_end: int | None) -> None:
        """Move the backup GPT to the end of the disk and give ``root`` its ``new_end``, in the safe order."""
        ss, old_alt = disk.ss, self.alt
        self.alt, self.last = disk.sectors - 1, disk.sectors - 2 - self.array_sectors
        if root is not None and new_end is not None:
            struct.pack_into("<Q", self.entries, (root.number - 1) * self.entry_size + 40, new_end)
        disk.write((self.last + 1) * ss, bytes(self.entries))
        disk.write(self.alt * ss, self.header_for(self.alt, 1, self.last, self.last + 1))
        os.fsync(disk.fd)
        disk.write(self.entries_lba * ss, bytes(self.entries))
        disk.write(ss, self.header_for(1, self.alt, self.last, self.entries_lba))
        mbr = bytearray(disk.read(0, 512))
        protective = [at for at in range(446, 510, 16) if mbr[at + 4] == 0xEE] if mbr[510:] == b"\x55\xaa" else []
        if protective:
            struct.pack_into("<I", mbr, protective[0] + 12, min(disk.sectors - 1, 0xFFFFFFFF))
            disk.write(0, bytes(mbr))
        os.fsync(disk.fd)
        if old_alt <= self.last:  # the old backup header, now free space (or inside the root): not a GPT any more
            disk.write(old_alt * ss, bytes(ss))
            os.fsync(disk.fd)


def _root(parts: Sequence[_Part]) -> tuple[_Part | None, str | None]:
    """The root partition, and why it cannot grow when it is not the last one (or there is none)."""
    roots = [p for p in parts if p.type == ROOT_X86_64 or (p.type == LINUX_FS and p.name == "root")]
    if not roots:
        return None, f"no root partition (type {ROOT_X86_64}, or {LINUX_FS} named 'root')"
    root = max(roots, key=lambda p: p.last)
    last = max(parts, key=lambda p: p.last)
    if last.last > root.last:
        return root, f"root partition {root.number} is not the last: partition {last.number} ends after it"
    return root, None


def _text(data: object) -> str:
    return (data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data or ""))[-2000:]


def _tell_kernel(fd: int, disk: str, number: int, run: Runner) -> tuple[str, bool]:
    """Have the kernel learn the new size: BLKRRPART, or ``partx -u`` for the one partition when busy.
    Returns what was done and whether partition nodes may show it."""
    try:
        fcntl.ioctl(fd, BLKRRPART)
        return "BLKRRPART", True
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return "not told: the device does not scan partitions (BLKRRPART: EINVAL)", False
        if exc.errno != errno.EBUSY:
            return f"not told: BLKRRPART: {exc.strerror}", False
    argv = ["partx", "-u", "--nr", str(number), disk]
    try:
        done = run(argv, capture_output=True, timeout=60, check=False, env={**os.environ, "LC_ALL": "C"})
        err = f"exit status {done.returncode} {_text(done.stderr).strip()}" if done.returncode else ""
    except (OSError, subprocess.SubprocessError) as exc:
        err = str(exc)
    return (f"not told: BLKRRPART busy, {' '.join(argv)}: {err}", False) if err else ("partx -u (BLKRRPART busy)", True)


def find_partition_node(
    disk: Path, number: int, size: int, *, timeout: float = NODE_TIMEOUT, sys_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"),
) -> Path | None:  # fmt: skip
    """``/dev/<disk><N>`` or ``/dev/<disk>p<N>`` once sysfs shows it with ``size`` bytes and the node exists
    with its device number (polled until ``timeout``); ``None`` if it does not."""
    name = disk.resolve().name
    deadline = time.monotonic() + timeout
    while True:
        for part in (f"{name}{number}", f"{name}p{number}"):
            entry = sys_root / "class" / "block" / name / part
            with contextlib.suppress(OSError, ValueError):
                shown = int((entry / "partition").read_text()), int((entry / "size").read_text()) * 512
                major, minor = (int(x) for x in (entry / "dev").read_text().split(":"))
                st = (dev_root / part).stat()
                if shown == (number, size) and stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(major, minor):
                    return dev_root / part
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


class _Tools:
    """Runs the file-system tools (argv lists, ``LC_ALL=C``, a timeout); a failure raises with every fact."""

    def __init__(self, run: Runner, timeout: float, device: str, facts: dict[str, Any], notes: list[str]) -> None:
        self.run, self.timeout, self.device, self.facts, self.notes = run, timeout, device, facts, notes

    def __call__(self, argv: list[str], ok: Sequence[int] = (0,), meaning: str = "failed") -> str:
        device, env = self.device, {**os.environ, "LC_ALL": "C"}
        try:
            done = self.run(argv, capture_output=True, timeout=self.timeout, check=False, env=env)
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            missing = isinstance(exc, FileNotFoundError)
            why = f"{argv[0]} not installed" if missing else f"timed out after {self.timeout:g} s"
            raise GrowToolFailed(device, argv, None, "", why, **self.facts) from None
        if done.returncode not in ok:
            bits = [text for bit, text in E2FSCK_BITS.items() if done.returncode & bit] if argv[0] == "e2fsck" else []
            why = ", ".join(bits) or meaning
            raise GrowToolFailed(device, argv, done.returncode, _text(done.stderr), why, **self.facts)
        return _text(done.stdout).strip()

    @contextlib.contextmanager
    def offset_loop(self, backing: str, offset: int, size: int) -> Iterator[str]:
        """A loop device over ``size`` bytes at ``offset`` of ``backing``, always detached afterwards."""
        argv = ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), backing]
        loop = self(argv, meaning="no loop device")
        if not loop.startswith("/dev/"):
            raise GrowToolFailed(self.device, argv, 0, loop, "no loop device named", **self.facts)
        try:
            yield loop
        finally:
            try:
                self(["losetup", "-d", loop], meaning="loop device left attached")
            except GrowToolFailed as exc:
                log.warning("%s", exc)
                self.notes.append(str(exc))


def grow_root(
    target: Path | str, *, run: Runner = subprocess.run, sector_size: int | None = None,
    node_timeout: float = NODE_TIMEOUT, tool_timeout: float = TOOL_TIMEOUT, sys_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"),
) -> GrowResult:  # fmt: skip
    """Grow the root partition of ``target`` (a disk, or a file standing in for one) and its ext file system
    to the end of the disk. Raises ``GptInvalid``, ``GrowToolFailed`` or ``TargetError``."""
    started, path, notes = time.monotonic(), Path(target), list[str]()
    disk = _Disk(path, sector_size)
    try:
        gpt = _Gpt(disk)
        root, reason = _root(gpt.parts)
        last_ok, new_end, new_last = reason is None, None, disk.sectors - 2 - gpt.array_sectors
        if root is not None and reason is None:
            end = root.first + (new_last + 1 - root.first) * disk.ss // MiB * MiB // disk.ss - 1
            new_end = end if end > root.last else None
            if new_end is None:
                reason = (f"nothing to grow: root partition {root.number} ends at LBA {root.last}, the last usable "
                          f"LBA is {new_last}: no whole MiB to gain")  # fmt: skip
        moved = gpt.alt != disk.sectors - 1
        if new_end is not None or moved:
            gpt.write(disk, root, new_end)
        kernel, scans = ("unchanged", True) if disk.block else ("regular file: nothing to tell", False)
        if disk.block and root is not None and new_end is not None:
            kernel, scans = _tell_kernel(disk.fd, disk.name, root.number, run)
    finally:
        os.close(disk.fd)
    ss = disk.ss
    result = GrowResult(disk.name, new_end is not None, reason, None, ss, disk.size, gpt_moved=moved, kernel=kernel)
    if root is None:
        return _done(result, started, notes)
    end = new_end or root.last
    part_bytes, offset = (end - root.first + 1) * ss, root.first * ss
    result = replace(result, partition=root.number, partition_grown=new_end is not None, old_end_lba=root.last,
                     new_end_lba=end, old_size_bytes=(root.last + 1 - root.first) * ss,
                     new_size_bytes=part_bytes)  # fmt: skip
    if not last_ok:
        return _done(result, started, notes)
    fs = read_fs(path, offset)
    result = replace(result, fs_type=fs.type, fs_size_before=fs.size)
    if fs.size is None or fs.block_size is None:
        return _done(result, started, notes, fs_note=f"not resized: {fs.type}")
    if fs.size >= part_bytes // fs.block_size * fs.block_size:
        return _done(result, started, notes, fs_size_after=fs.size, fs_note="already fills its partition")
    facts = {"partition": root.number, "partition_grown": result.partition_grown,
             "old_end_lba": root.last, "new_end_lba": result.new_end_lba, "fs_size": fs.size}  # fmt: skip
    tools = _Tools(run, tool_timeout, disk.name, facts, notes)
    with contextlib.ExitStack() as stack:
        node = None
        if disk.block:
            wait = node_timeout if scans else 0.0
            node = find_partition_node(path, root.number, part_bytes, timeout=wait, sys_root=sys_root,
                                       dev_root=dev_root)  # fmt: skip
            if node is None:
                notes.append(f"no partition node {root.number} of {part_bytes} bytes after {wait:g} s: offset loop")
            else:
                _drop_cache(node)  # pages cached before the write (a probe of the old disk's partition)
        device = str(node) if node else stack.enter_context(tools.offset_loop(disk.name, offset, part_bytes))
        tools(["e2fsck", "-f", "-p", device], ok=(0, 1))
        tools(["resize2fs", device], meaning="resize failed")
        after = read_fs(device, 0) if disk.block else read_fs(path, offset)  # a file's loop shares its page cache
    if disk.block:
        _drop_cache(path)  # the disk's own cached pages of the file system are stale now
    return _done(result, started, notes, grown=True, reason=None, fs_resized=True, fs_size_after=after.size,
                 fs_device=device if node else f"{device} (loop at offset {offset} of {disk.name})",
                 fs_note=f"resized from {fs.size} to {after.size} bytes")  # fmt: skip


def _drop_cache(device: Path) -> None:
    with contextlib.suppress(OSError), device.open("rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _done(result: GrowResult, started: float, notes: list[str], **changes: Any) -> GrowResult:
    done = replace(result, seconds=round(time.monotonic() - started, 3), notes=tuple(notes), **changes)
    log.info("grow %s: %s", done.device, done.fs_note or done.reason or "grown")
    return done
