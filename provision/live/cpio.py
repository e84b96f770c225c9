"""A streaming cpio "newc" writer for whole trees: what the kernel unpacks as the initramfs.

Unlike the lab's small in-memory ``CpioWriter``, entries are written straight to a sink (the zstd
stream), file bodies are streamed from disk, and everything a Debian tree holds is kept: directories,
regular files with their mode bits, symlinks, device nodes and hard links. Owner is always root (uid and
gid 0). Hard links follow GNU cpio's newc convention: every name of an inode carries the same inode number
and link count, and the data travels with the last one (the others have size 0); the kernel and
``cpio -i`` both rebuild the link from that. Missing parent folders are added (0755); a name given twice
is refused, and so is a name under a symlink (the kernel would follow it).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20
TRAILER = "TRAILER!!!"


class CpioError(ValueError):
    """An entry cannot be written as asked (duplicate, under a symlink, file changed while read)."""


class Sink(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def header(name: str, *, ino: int, mode: int, size: int, nlink: int, mtime: int, rdev: tuple[int, int]) -> bytes:
    """One newc header with its name and padding (no body)."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, max(mtime, 0), size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
    head = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
    return head + encoded + _pad(len(head) + len(encoded))


class CpioStream:
    """Writes newc entries to ``sink`` as they come; ``close()`` writes the trailer."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.size = 0  # bytes written (the uncompressed archive size)
        self.entries = 0
        self.file_bytes = 0
        self._ino = 0
        self._names: set[str] = set()
        self._dirs: set[str] = {""}
        self._symlinks: set[str] = set()
        self._closed = False

    def _write(self, data: bytes) -> None:
        if data:
            self.sink.write(data)
            self.size += len(data)

    def next_ino(self) -> int:
        self._ino += 1
        return self._ino

    def _begin(self, name: str) -> str:
        if self._closed:
            raise CpioError("archive already closed")
        name = name.strip("/")
        if not name or name in self._names:
            raise CpioError(f"duplicate or empty archive entry {name!r}")
        self._parents(name)
        self._names.add(name)
        self.entries += 1
        return name

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in self._symlinks:
                raise CpioError(f"{name}: its parent {parent} is a symlink in the archive")
            if parent not in self._dirs:
                self.directory(parent)

    def has(self, name: str) -> bool:
        return name.strip("/") in self._names

    def directory(self, name: str, mode: int = 0o755, mtime: int = 0) -> None:
        name = self._begin(name)
        self._dirs.add(name)
        self._write(
            header(name, ino=self.next_ino(), mode=stat.S_IFDIR | mode, size=0, nlink=2, mtime=mtime, rdev=(0, 0))
        )

    def file(self, name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        name = self._begin(name)
        self._write(
            header(
                name, ino=self.next_ino(), mode=stat.S_IFREG | mode, size=len(data), nlink=1, mtime=mtime, rdev=(0, 0)
            )
        )
        self._write(data)
        self._write(_pad(len(data)))
        self.file_bytes += len(data)

    def file_from(
        self, name: str, path: Path, size: int, mode: int, mtime: int = 0, *, ino: int | None = None, nlink: int = 1
    ) -> None:
        """A regular file whose ``size`` bytes are read from ``path`` (an error if it changed size)."""
        name = self._begin(name)
        number = ino if ino is not None else self.next_ino()
        self._write(
            header(name, ino=number, mode=stat.S_IFREG | mode, size=size, nlink=nlink, mtime=mtime, rdev=(0, 0))
        )
        done = 0
        with path.open("rb") as handle:
            while done < size:
                block = handle.read(min(CHUNK, size - done))
                if not block:
                    break
                self._write(block)
                done += len(block)
            if done != size or handle.read(1):
                raise CpioError(f"{path} changed size while being archived")
        self._write(_pad(size))
        self.file_bytes += size

    def link_name(self, name: str, mode: int, mtime: int, *, ino: int, nlink: int) -> None:
        """A hard link's name without data (the data comes with the inode's last name)."""
        name = self._begin(name)
        self._write(header(name, ino=ino, mode=stat.S_IFREG | mode, size=0, nlink=nlink, mtime=mtime, rdev=(0, 0)))

    def symlink(self, name: str, target: str, mtime: int = 0) -> None:
        name = self._begin(name)
        self._symlinks.add(name)
        data = target.encode()
        self._write(
            header(
                name, ino=self.next_ino(), mode=stat.S_IFLNK | 0o777, size=len(data), nlink=1, mtime=mtime, rdev=(0, 0)
            )
        )
        self._write(data)
        self._write(_pad(len(data)))

    def device(self, name: str, kind: str, major: int, minor: int, mode: int = 0o600, mtime: int = 0) -> None:
        """A character (``kind`` "c") or block ("b") device node."""
        if kind not in ("c", "b"):
            raise CpioError(f"device kind {kind!r} (c or b)")
        name = self._begin(name)
        fmt = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
        self._write(
            header(name, ino=self.next_ino(), mode=fmt | mode, size=0, nlink=1, mtime=mtime, rdev=(major, minor))
        )

    def close(self) -> None:
        if not self._closed:
            self._write(header(TRAILER, ino=0, mode=0, size=0, nlink=1, mtime=0, rdev=(0, 0)))
            self._closed = True


def read_newc(data: bytes) -> Iterable[tuple[str, int, int, int, bytes, tuple[int, int]]]:
    """(name, mode, ino, nlink, body, rdev) of each entry of an uncompressed newc archive (tests, tools)."""
    pos = 0
    while True:
        if data[pos : pos + 6] != b"070701":
            raise CpioError(f"bad newc magic at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, nlink, size, rmaj, rmin, namesize = (fields[i] for i in (0, 1, 4, 6, 9, 10, 11))
        start = pos + 110
        name = data[start : start + namesize - 1].decode()
        body_start = start + namesize + (-(110 + namesize) % 4)
        body = data[body_start : body_start + size]
        pos = body_start + size + (-size % 4)
        if name == TRAILER:
            return
        yield name, mode, ino, nlink, body, (rmaj, rmin)
