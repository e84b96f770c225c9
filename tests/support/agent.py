"""Fakes for the agent's writer and fetcher, and disks for the steps after the write (unit and functional).

- ``KiB``, ``MiB``, ``CHUNK`` (64 KiB), ``SERVER`` (the fake server's URL), ``INDEX_PATH``, ``FAST`` (a quick
  RetryPolicy).
- ``sha(data)``: the sha256 hex digest of bytes; ``frame(plain)``: one zstd frame of them.
- ``FakeImage`` / ``build_image(raw)``: an index dict (format 1, as the store writes it) and the zstd frames of a
  raw disk, in memory.
- ``random_disk(size, data)``: a raw disk of random chunks (listed, or a fraction) and zeros.
- ``FakeSession``: serves a FakeImage like provision's HTTP routes, with faults scripted per chunk, and counts
  every GET. It is a plain object with ``get()``, as the agent's ``HttpSession`` protocol asks; a chunk GET
  with ``Range:`` is a 206 of those bytes (several: ``multipart/byteranges``), each range recorded in ``ranges``.
- ``RecordingTarget``: a real ``DiskTarget`` that records the sha256 of every write (and can lie).
- ``GROW_LAYOUT``, ``fake_ext4(path, offset, size)``, ``make_grow_disk(path, grow_to)``: a 64 MiB GPT disk file
  (builder.layout) whose root partition holds only an ext4 superblock, for grow and seed with fake tools.
- ``run_tool(argv)``, ``loop(backing, *options)``, ``make_ext4_disk(tmp_path, files)``: real tools, a loop
  device detached afterwards, a GPT disk file whose root is a real ext4 made by ``mke2fs -E offset= -d``.
- ``FakeDebugfs`` / ``FakeInode``: ``losetup`` and ``debugfs`` over an in-memory file system, with faults.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import requests
import zstandard

from provision.agent import DiskTarget, RetryPolicy
from provision.agent.disk_io import AlignedBuffer, Kind
from provision.agent.rootpart import ROOT_X86_64
from provision.builder.layout import BIOS_BOOT, ESP, NewPartition, write_gpt
from provision.images.partitions import PartitionTable
from provision.wire.byteranges import closing, content_range, parse_ranges, part_head
from tests.support.files import write_tree

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
SERVER = "http://agent.test:8080"
INDEX_PATH = "/images/educ/current/index.json"
FAST = RetryPolicy(deadline=0.5, initial_delay=0.001, max_delay=0.02, connect_timeout=2, read_timeout=5)


def sha(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def frame(plain: bytes, *, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_content_size=content_size).compress(plain)


@dataclass
class FakeImage:
    raw: bytes
    chunk_size: int
    index: dict[str, object]
    frames: dict[str, bytes]
    plain: dict[str, bytes]

    @property
    def chunks(self) -> list[dict[str, object]]:
        return self.index["chunks"]  # type: ignore[return-value]

    def data_indexes(self) -> list[int]:
        return [i for i, c in enumerate(self.chunks) if c["sha256"] is not None]


def build_image(raw: bytes, chunk_size: int = CHUNK, *, name: str = "educ") -> FakeImage:
    chunks: list[dict[str, object]] = []
    frames: dict[str, bytes] = {}
    plain: dict[str, bytes] = {}
    for offset in range(0, len(raw), chunk_size):
        piece = raw[offset : offset + chunk_size]
        if piece.count(0) == len(piece):
            chunks.append({"sha256": None, "length": len(piece)})
            continue
        digest = sha(piece)
        frames[digest], plain[digest] = frame(piece), piece
        chunks.append({"sha256": digest, "length": len(piece)})
    index: dict[str, object] = {
        "format_version": 1, "name": name, "created": "2026-11-27T00:00:00Z", "disk_size": len(raw),
        "sector_size": 512, "chunk_size": chunk_size, "layout": {"label": "gpt", "partitions": []},
        "chunks": chunks, "provenance": {},
    }  # fmt: skip
    return FakeImage(raw, chunk_size, index, frames, plain)


def random_disk(size: int, data: list[int] | float, *, chunk_size: int = CHUNK, seed: int = 0) -> bytes:
    """A raw disk of ``size`` bytes: random bytes in the chunks listed (or in that fraction of chunks, chosen
    at random), zeros elsewhere."""
    rng = random.Random(seed)
    count = -(-size // chunk_size)
    chosen = data if isinstance(data, list) else [i for i in range(count) if rng.random() < data]
    raw = bytearray(size)
    for i in chosen:
        start = i * chunk_size
        end = min(size, start + chunk_size)
        raw[start:end] = rng.randbytes(end - start)
    return bytes(raw)


class FakeResponse:
    def __init__(self, status: int, body: bytes, *, declared: int | None = None, cut: bool = False) -> None:
        self.status_code = status
        self.headers = {"Content-Length": str(len(body) if declared is None else declared)}
        self._body = body
        self._cut = cut
        self.closed = False

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        if self._cut:
            yield self._body[: len(self._body) // 2]
            raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
        for start in range(0, len(self._body), chunk_size):
            yield self._body[start : start + chunk_size]

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeSession:
    """Serves ``image``. ``faults[sha]`` lists what the next GETs of that chunk get, one per GET:

    ``corrupt`` (a valid frame of other bytes), ``garbage`` (the frame with a byte flipped), ``bomb`` (a frame
    claiming 1 GiB), ``500``, ``404``, ``refused`` (connection refused), ``truncated`` (body shorter than its
    Content-Length), ``cut`` (the connection drops mid-body). ``down`` refuses every GET while true.
    """

    image: FakeImage
    faults: dict[str, deque[str]] = field(default_factory=dict)
    down: bool = False
    down_after: int | None = None  # chunk GETs served before the server goes down for good
    on_get: Callable[[str], None] | None = None
    gets: list[str] = field(default_factory=list)
    chunk_gets: Counter[str] = field(default_factory=Counter)
    ranges: list[tuple[str, int, int]] = field(default_factory=list)  # (sha256, first, last) of each range asked
    range_gets: int = 0  # GETs with a Range header (several ranges in one count once)

    def fault(self, digest: str, *kinds: str) -> None:
        self.faults.setdefault(digest, deque()).extend(kinds)

    def get(
        self, url: str, *, timeout: tuple[float, float], stream: bool, headers: Mapping[str, str] | None = None
    ) -> FakeResponse:
        assert url.startswith(SERVER + "/"), url
        assert stream and timeout[0] > 0 and timeout[1] > 0
        self.gets.append(url)
        if self.on_get is not None:
            self.on_get(url)
        path = url.removeprefix(SERVER)
        if path == INDEX_PATH:
            return FakeResponse(200, _canonical(self.image.index))
        if not path.startswith("/chunks/"):
            return FakeResponse(404, b'{"error": "not found"}')
        digest = path.removeprefix("/chunks/")
        if self.down or (self.down_after is not None and sum(self.chunk_gets.values()) >= self.down_after):
            raise requests.ConnectionError(f"HTTPConnectionPool: Max retries exceeded with url: {path} (refused)")
        self.chunk_gets[digest] += 1
        if digest not in self.image.frames:
            return FakeResponse(404, b'{"error": "no chunk"}')
        body = self.image.frames[digest]
        if headers and "Range" in headers:
            return self._ranges(digest, body, headers["Range"])
        queue = self.faults.get(digest)
        kind = queue.popleft() if queue else "ok"
        if kind == "corrupt":
            bad = bytearray(self.image.plain[digest])
            bad[len(bad) // 2] ^= 0xFF
            return FakeResponse(200, frame(bytes(bad)))
        if kind == "garbage":
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0x55
            return FakeResponse(200, bytes(flipped))
        if kind == "bomb":
            return FakeResponse(200, zstandard.ZstdCompressor().compress(bytes(1 << 30)))
        if kind in ("500", "404"):
            return FakeResponse(int(kind), b'{"error": "fault"}')
        if kind == "refused":
            raise requests.ConnectionError("[Errno 111] Connection refused")
        if kind == "truncated":
            return FakeResponse(200, body[: len(body) // 2], declared=len(body))
        if kind == "cut":
            return FakeResponse(200, body, cut=True)
        assert kind == "ok", kind
        return FakeResponse(200, body)

    def _ranges(self, digest: str, body: bytes, header: str) -> FakeResponse:
        """The ranges asked, as provision's ``GET /chunks/`` answers them (``provision.wire.byteranges``)."""
        wanted = parse_ranges(header, len(body))
        assert wanted, header  # the agent asks only for ranges the server serves
        self.ranges += [(digest, first, last) for first, last in wanted]
        self.range_gets += 1
        if len(wanted) == 1:
            [(first, last)] = wanted
            response = FakeResponse(206, body[first : last + 1])
            response.headers["Content-Range"] = content_range(first, last, len(body))
            return response
        parts = b"".join(
            part_head("fake-boundary", a, b, len(body), "application/zstd", leading=i == 0) + body[a : b + 1]
            for i, (a, b) in enumerate(wanted)
        )
        response = FakeResponse(206, parts + closing("fake-boundary"))
        response.headers["Content-Type"] = "multipart/byteranges; boundary=fake-boundary"
        return response


def _canonical(value: object) -> bytes:
    from provision.agent.index import canonical_json

    return canonical_json(value)


class RecordingTarget(DiskTarget):
    """A real target that records ``(offset, sha256)`` of every write; ``lie_at`` offsets get a byte flipped
    on the way to the disk (a disk that does not store what it is given)."""

    def __init__(self, path: Path, kind: Kind, size: int, block_size: int, fd: int, direct_fd: int | None) -> None:
        super().__init__(path, kind, size, block_size, fd, direct_fd)
        self.writes: list[tuple[int, str]] = []
        self.lie_at: set[int] = set()

    def write(self, data: bytes | memoryview, offset: int, buf: AlignedBuffer) -> None:
        self.writes.append((offset, sha(data)))
        if offset in self.lie_at:
            bad = bytearray(data)
            bad[0] ^= 1
            data = bytes(bad)
        super().write(data, offset, buf)


# ----------------------------------------------------------------------------- disks for grow and seed
GROW_LAYOUT = [
    NewPartition(MiB, BIOS_BOOT, "bios"),
    NewPartition(8 * MiB, ESP, "esp"),
    NewPartition(0, ROOT_X86_64, "root"),
]


def fake_ext4(path: Path, offset: int, size: int, *, wide: bool = False) -> None:
    """An ext4 superblock (4 KiB blocks) saying ``size`` bytes; ``wide``: the 64bit feature."""
    sb = bytearray(1024)
    blocks = size // 4096
    struct.pack_into("<I", sb, 4, blocks & 0xFFFFFFFF)
    struct.pack_into("<I", sb, 24, 2)
    struct.pack_into("<H", sb, 56, 0xEF53)
    struct.pack_into("<II", sb, 0x5C, 0x4, 0x40 | (0x80 if wide else 0))
    struct.pack_into("<I", sb, 0x150, blocks >> 32 if wide else 0)
    with path.open("r+b") as f:
        f.seek(offset + 1024)
        f.write(sb)


def make_grow_disk(path: Path, grow_to: int | None, parts: list[NewPartition] = GROW_LAYOUT, ss: int = 512) -> Path:
    """A 64 MiB GPT disk with an ext4 superblock in its last partition, then made ``grow_to`` bytes."""
    with path.open("w+b") as f:
        table = write_gpt(f, 64 * MiB, parts, sector_size=ss, seed=7)
    last = table.partitions[-1]
    fake_ext4(path, last.start * ss, last.size * ss)
    if grow_to is not None:
        os.truncate(path, grow_to)
    return path


def run_tool(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """A real tool, ``LC_ALL=C``, text output; asserts exit 0 unless ``check=False``."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env={**os.environ, "LC_ALL": "C"})
    assert not check or done.returncode == 0, f"{argv}: {done.returncode} {done.stderr}"
    return done


@contextmanager
def loop(backing: Path | str, *extra: str) -> Iterator[str]:
    """A loop device over ``backing`` (``losetup`` options ``extra``), detached by name afterwards; the test is
    skipped when there is none."""
    attach = run_tool(["losetup", "--find", "--show", *extra, str(backing)], check=False)
    if attach.returncode != 0:
        pytest.skip(f"no loop device: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        yield device
    finally:
        run_tool(["losetup", "-d", device], check=False)


def make_ext4_disk(
    tmp_path: Path, files: Mapping[str, bytes], ss: int = 512, grow_to: int = 200 * MiB, *, tree: Path | None = None
) -> tuple[Path, PartitionTable]:
    """A 64 MiB GPT disk (bios, esp, a 53 MiB root) whose root is a real ext4 (``mke2fs -E offset= -d``)
    holding ``files`` (added to the prepared ``tree`` when given: symlinks, modes), then made ``grow_to`` bytes."""
    tree = write_tree(tree or tmp_path / "tree", files)
    path = tmp_path / "disk.img"
    parts = [NewPartition(MiB, BIOS_BOOT, "bios"), NewPartition(8 * MiB, ESP, "esp")]
    parts.append(NewPartition(53 * MiB, ROOT_X86_64, "root"))
    with path.open("w+b") as f:
        table = write_gpt(f, 64 * MiB, parts, sector_size=ss, seed=3)
    root = table.partitions[2]
    argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "root", "-E", f"offset={root.start * ss}"]
    run_tool([*argv, "-d", str(tree), str(path), f"{root.size * ss // 1024}k"])
    os.truncate(path, grow_to)
    return path, table


# ------------------------------------------------------------------------------------- a fake debugfs
@dataclass
class FakeInode:
    type: str  # "directory", "regular", "symlink"
    mode: int  # permission bits
    uid: int = 0
    gid: int = 0
    data: bytes = b""


_TYPE_BITS = {0o040000: "directory", 0o100000: "regular", 0o120000: "symlink"}


class FakeDebugfs:
    """``losetup``, ``modprobe`` and ``debugfs`` (1.47's output) over an in-memory file system, as a ``run`` for
    the seed step.

    Records every argv in ``calls`` and each command file's lines in ``scripts`` (read when run: the agent
    removes them afterwards). ``stat``, ``cat``, ``mkdir``, ``sif`` (mode, uid, gid), ``rm``, ``cd`` and
    ``write`` act on ``inodes`` (path -> FakeInode); a failing command prints its error on stderr and, like
    debugfs, the exit status stays 0. Faults: ``broken`` commands fail; ``unopenable``: the file system does
    not open; ``flip``: ``write`` stores other bytes; ``write_owner``: the owner ``write`` gives; ``ignore_sif``:
    the paths on which ``sif`` does nothing; ``missing``: a tool that is not installed.
    """

    def __init__(
        self, inodes: Mapping[str, FakeInode] | None = None, *, broken: tuple[str, ...] = (), unopenable: bool = False,
        flip: bool = False, write_owner: int = 0, ignore_sif: tuple[str, ...] = (), missing: str = "",
    ) -> None:  # fmt: skip
        self.inodes: dict[str, FakeInode] = {"/": FakeInode("directory", 0o755), **(inodes or {})}
        self.broken, self.unopenable, self.flip, self.ignore_sif, self.missing = (
            broken, unopenable, flip, ignore_sif, missing
        )  # fmt: skip
        self.write_owner = write_owner
        self.calls: list[list[str]] = []
        self.scripts: list[list[str]] = []
        self.cwd = "/"

    def __call__(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        self.calls.append(list(argv))
        assert kwargs["env"]["LC_ALL"] == "C" and kwargs["check"] is False  # type: ignore[index]
        assert all(isinstance(a, str) for a in argv) and kwargs.get("shell") is not True
        if argv[0] == self.missing:
            raise FileNotFoundError(argv[0])
        if argv[0] == "losetup":
            return subprocess.CompletedProcess(argv, 0, b"/dev/loop9\n" if "--find" in argv else b"", b"")
        if argv[0] == "modprobe":
            return subprocess.CompletedProcess(argv, 0, b"", b"")
        assert argv[0] == "debugfs", argv
        out: list[str | bytes] = []
        err = ["debugfs 1.47.0 (5-Feb-2023)"]
        if self.unopenable:
            err.append(f"debugfs: Bad magic number in super-block while trying to open {argv[-1]}")
        if "-R" in argv:
            lines = [argv[argv.index("-R") + 1]]
        else:
            lines = Path(argv[argv.index("-f") + 1]).read_text().splitlines()
            self.scripts.append(lines)
        writable, self.cwd = "-w" in argv, "/"
        for line in lines:
            if "-f" in argv:
                out.append(f"debugfs: {line}")
            words = line.split()
            if self.unopenable:
                err.append(f"{words[0]}: Filesystem not open")
                continue
            if words[0] in self.broken:
                err.append(f"{words[0]}: Could not allocate block in ext2 filesystem")
                continue
            problem = self._do(words, out, writable)
            if problem:
                err.append(problem)
        stdout = b"".join(x if isinstance(x, bytes) else (x + "\n").encode() for x in out)
        return subprocess.CompletedProcess(argv, 0, stdout, ("\n".join(err) + "\n").encode())

    def _path(self, name: str) -> str:
        return str(PurePosixPath(name if name.startswith("/") else f"{self.cwd}/{name}"))

    def _do(self, words: list[str], out: list[str | bytes], writable: bool) -> str | None:
        cmd, path = words[0], self._path(words[1])
        inode = self.inodes.get(path)
        if cmd in ("stat", "cat") and inode is None:
            return f"{words[1]}: File not found by ext2_lookup "
        if cmd == "stat" and inode is not None:
            out.append(f"Inode: 12   Type: {inode.type}    Mode:  {inode.mode:04o}   Flags: 0x80000")
            out.append("Generation: 0    Version: 0x00000000:00000000")
            out.append(f"User: {inode.uid:5d}   Group: {inode.gid:5d}   Project:     0   Size: {len(inode.data)}")
            return None
        if cmd == "cat" and inode is not None:
            out.append(inode.data)
            return None
        if not writable:
            return f"{cmd}: Filesystem opened read/only"
        if cmd == "cd":
            self.cwd = path
        elif cmd == "mkdir":
            if inode is not None:
                return f'ext2fs_mkdir: Ext2 directory already exists while creating directory "{words[1]}"'
            self.inodes[path] = FakeInode("directory", 0o755)
        elif cmd == "rm":
            if inode is None:
                return "rm: File not found by ext2_lookup while trying to resolve filename"
            del self.inodes[path]
        elif cmd == "write":
            target = self._path(words[2])
            if target in self.inodes:
                return "write: Ext2 file already exists "
            source = Path(words[1])
            data = source.read_bytes()
            mode, owner = source.stat().st_mode & 0o777, self.write_owner
            self.inodes[target] = FakeInode("regular", mode, owner, owner, data[::-1] if self.flip else data)
            out.append("Allocated inode: 17")
        elif cmd == "sif":
            if inode is None:
                return "sif: File not found by ext2_lookup"
            if path not in self.ignore_sif:
                value = int(words[3], 0) if words[2] != "mode" else int(words[3], 8)
                if words[2] == "mode":
                    inode.mode, inode.type = value & 0o7777, _TYPE_BITS[value & 0o170000]
                else:
                    setattr(inode, words[2], value)
        else:
            return f"{cmd}: Unknown request"
        return None
