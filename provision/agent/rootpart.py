"""The root partition of a written disk, as the steps after the write reach it: grow (``grow.py``) and the
first-boot credential (``seed.py``) find it the same way.

- ``RawDisk`` opens the disk (a block device ``O_EXCL``, or a regular file standing in for one) and knows
  its sector size; ``Gpt`` reads and checks the primary GPT (pure Python: struct + zlib.crc32), raising
  ``GptInvalid`` with every fact; ``find_root`` picks the root partition (type root x86-64, or Linux
  filesystem named ``root``; the one ending last).
- ``read_fs`` names the file system at an offset (ext2/3/4 with its size from the superblock, xfs, ntfs,
  vfat, or ``unknown``).
- ``tell_kernel`` has the kernel re-read the partition table (``BLKRRPART``, ``partx -u`` when busy);
  ``find_partition_node`` finds ``/dev/<disk><N>`` through sysfs; ``Tools`` runs the file-system tools
  (argument lists, ``LC_ALL=C``, a timeout) and gives an offset loop device (``losetup --offset
  --sizelimit``) when there is no partition node, always detached afterwards.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from provision.agent.disk_io import BLKSSZGET
from provision.agent.errors import GptInvalid, TargetError, WriteError
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
EXT_TYPES = ("ext2", "ext3", "ext4")
_OTHER_FS = ((0, b"XFSB", "xfs"), (3, b"NTFS    ", "ntfs"), (82, b"FAT32   ", "vfat"), (54, b"FAT", "vfat"))
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # the 92 bytes of a GPT header


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


class RawDisk:
    """The disk opened for the GPT (read-write unless ``writable=False``; a block device ``O_EXCL``, so a
    mounted file system on it stops the step), its size and sector size. Close ``fd`` when done."""

    def __init__(self, path: Path, sector_size: int | None, *, writable: bool = True) -> None:
        self.name = str(path)
        try:
            mode = path.stat().st_mode
            self.block = stat.S_ISBLK(mode)
            if not (self.block or stat.S_ISREG(mode)):
                raise TargetError(f"{path}: not a block device or a regular file", target=self.name)
            access = os.O_RDWR if writable else os.O_RDONLY
            self.fd = os.open(path, access | os.O_CLOEXEC | (os.O_EXCL if self.block else 0))
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
class Part:
    number: int
    first: int  # LBA
    last: int
    type: str  # type GUID, upper case
    name: str


def gpt_crc(header: bytearray, size: int) -> int:
    """Set the header's CRC field to the CRC of its first ``size`` bytes (computed with the field zeroed)."""
    struct.pack_into("<I", header, 16, 0)
    crc = zlib.crc32(header[:size])
    struct.pack_into("<I", header, 16, crc)
    return crc


class Gpt:
    """The primary GPT, checked: its fields, the header sector and the entry array (bytearrays)."""

    def __init__(self, disk: RawDisk) -> None:
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
        computed = gpt_crc(bytearray(self.header), self.size)
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
        self.parts: list[Part] = []
        for i in range(self.count):
            raw = bytes(self.entries[i * self.entry_size : i * self.entry_size + 128])
            if raw[:16] == bytes(16):
                continue
            first, last = struct.unpack_from("<QQ", raw, 32)
            if not self.first <= first <= last <= self.last:
                problem = f"partition {i + 1} at LBA {first}-{last} is outside the usable LBAs {self.first}-{self.last}"
                raise GptInvalid(name, problem, partition=i + 1, **facts)
            label = raw[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
            self.parts.append(Part(i + 1, first, last, str(uuid.UUID(bytes_le=raw[:16])).upper(), label))


def find_root(parts: Sequence[Part]) -> tuple[Part | None, str | None]:
    """The root partition, and why it cannot grow when it is not the last one (or there is none)."""
    roots = [p for p in parts if p.type == ROOT_X86_64 or (p.type == LINUX_FS and p.name == "root")]
    if not roots:
        return None, f"no root partition (type {ROOT_X86_64}, or {LINUX_FS} named 'root')"
    root = max(roots, key=lambda p: p.last)
    last = max(parts, key=lambda p: p.last)
    if last.last > root.last:
        return root, f"root partition {root.number} is not the last: partition {last.number} ends after it"
    return root, None


def text_tail(data: object, limit: int = 2000) -> str:
    """A tool's output as text, its last ``limit`` characters."""
    return (data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data or ""))[-limit:]


def tell_kernel(fd: int, disk: str, number: int, run: Runner) -> tuple[str, bool]:
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
        err = f"exit status {done.returncode} {text_tail(done.stderr).strip()}" if done.returncode else ""
    except (OSError, subprocess.SubprocessError) as exc:
        err = str(exc)
    return (f"not told: BLKRRPART busy, {' '.join(argv)}: {err}", False) if err else ("partx -u (BLKRRPART busy)", True)


def find_partition_node(
    disk: Path, number: int, size: int, *, timeout: float = NODE_TIMEOUT, sys_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"), start: int | None = None,
) -> Path | None:  # fmt: skip
    """``/dev/<disk><N>`` or ``/dev/<disk>p<N>`` once sysfs shows it with ``size`` bytes (starting at byte
    ``start`` when given: not a partition of the disk's old table) and the node exists with its device number
    (polled until ``timeout``); ``None`` if it does not."""
    name = disk.resolve().name
    deadline = time.monotonic() + timeout
    while True:
        for part in (f"{name}{number}", f"{name}p{number}"):
            entry = sys_root / "class" / "block" / name / part
            with contextlib.suppress(OSError, ValueError):
                shown = int((entry / "partition").read_text()), int((entry / "size").read_text()) * 512
                major, minor = (int(x) for x in (entry / "dev").read_text().split(":"))
                st = (dev_root / part).stat()
                at = int((entry / "start").read_text()) * 512 if start is not None else None
                if (
                    shown == (number, size)
                    and at == start
                    and stat.S_ISBLK(st.st_mode)
                    and st.st_rdev == os.makedev(major, minor)
                ):
                    return dev_root / part
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def drop_cache(device: Path | str) -> None:
    """Drop a device's cached pages (stale after another device wrote the same blocks); errors ignored."""
    with contextlib.suppress(OSError), Path(device).open("rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class ToolError(Protocol):
    """How a step names a failed tool: ``GrowToolFailed`` or ``SeedToolFailed`` (same arguments)."""

    def __call__(
        self, device: str, argv: Sequence[str], returncode: int | None, stderr: str, meaning: str, **facts: object
    ) -> WriteError: ...


class Tools:
    """Runs the file-system tools (argv lists, ``LC_ALL=C``, a timeout); a failure raises ``error`` with every
    fact: the device, the argv, the exit code, the stderr tail, what it means, and the step's ``facts``."""

    def __init__(
        self, run: Runner, timeout: float, device: str, facts: dict[str, Any], notes: list[str], error: ToolError
    ) -> None:
        self.run, self.timeout, self.device, self.facts, self.notes = run, timeout, device, facts, notes
        self.error = error
        self.loop_control = Path("/dev/loop-control")

    def completed(
        self, argv: list[str], ok: Sequence[int] = (0,), meaning: str = "failed"
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv``; the finished process (stdout as bytes) when its exit code is in ``ok``."""
        env = {**os.environ, "LC_ALL": "C"}
        try:
            done = self.run(argv, capture_output=True, timeout=self.timeout, check=False, env=env)
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            missing = isinstance(exc, FileNotFoundError)
            why = f"{argv[0]} not installed" if missing else f"timed out after {self.timeout:g} s"
            raise self.error(self.device, argv, None, "", why, **self.facts) from None
        if done.returncode not in ok:
            bits = [text for bit, text in E2FSCK_BITS.items() if done.returncode & bit] if argv[0] == "e2fsck" else []
            why = ", ".join(bits) or meaning
            raise self.error(self.device, argv, done.returncode, text_tail(done.stderr), why, **self.facts)
        return done

    def __call__(self, argv: list[str], ok: Sequence[int] = (0,), meaning: str = "failed") -> str:
        return text_tail(self.completed(argv, ok, meaning).stdout).strip()

    @contextlib.contextmanager
    def offset_loop(self, backing: str, offset: int, size: int) -> Iterator[str]:
        """A loop device over ``size`` bytes at ``offset`` of ``backing``, always detached afterwards. Without
        ``/dev/loop-control`` (the loop module not loaded: the live environment loads only the modules its
        hardware asks for) ``modprobe loop`` runs first."""
        argv = ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), backing]
        if not self.loop_control.exists():
            try:
                self(["modprobe", "loop"], meaning="no loop module")
                self.notes.append("loop module loaded (modprobe loop)")
            except WriteError as exc:  # losetup will say what is missing
                log.warning("%s", exc)
                self.notes.append(str(exc))
        loop = self(argv, meaning="no loop device")
        if not loop.startswith("/dev/"):
            raise self.error(self.device, argv, 0, loop, "no loop device named", **self.facts)
        try:
            yield loop
        finally:
            try:
                self(["losetup", "-d", loop], meaning="loop device left attached")
            except WriteError as exc:
                log.warning("%s", exc)
                self.notes.append(str(exc))
