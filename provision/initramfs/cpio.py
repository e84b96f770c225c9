"""The cpio "newc" writer: ``CpioStream`` streams entries to a sink, ``CpioWriter`` is the same writer over
memory.

``CpioStream`` writes each entry straight to its sink (the live build's zstd stream), streams file bodies
from disk, and keeps everything a Debian tree holds: directories, regular files with their mode bits,
symlinks, device nodes and hard links. Owner is always root (uid and gid 0). Hard links follow GNU cpio's
newc convention: every name of an inode carries the same inode number and link count, and the data travels
with the last one (the others have size 0); the kernel and ``cpio -i`` both rebuild the link from that.
Missing parent folders are added (0755); a name given twice is refused, and so is a name under a symlink
(the kernel would follow it). ``close()`` writes the trailer.

``CpioWriter`` is that writer over a ``BytesIO`` for the small initramfs images built in one piece (the
lab's test initrd, the tiny image's): ``add_dir`` (a folder added twice is one entry), ``add_file``,
``add_symlink``, ``add_char_device``, then ``getvalue()`` is the archive with its trailer.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import Protocol

from provision.initramfs.errors import CpioError
from provision.initramfs.newc import header, pad, trailer

CHUNK = 1 << 20


class Sink(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


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
        if not name:
            raise CpioError("empty initramfs entry name")
        if name in self._names:
            raise CpioError(f"duplicate initramfs entry {name}", path=name)
        self._parents(name)
        self._names.add(name)
        self.entries += 1
        return name

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in self._symlinks:
                raise CpioError(f"{name}: its parent {parent} is a symlink in the archive", path=name)
            if parent not in self._dirs:
                self.directory(parent)

    def has(self, name: str) -> bool:
        """Whether the archive has an entry ``name``."""
        return name.strip("/") in self._names

    def is_dir(self, name: str) -> bool:
        """Whether ``name`` is a folder of the archive (the root always is)."""
        return name.strip("/") in self._dirs

    def names(self) -> set[str]:
        """The names written so far (without the trailer)."""
        return set(self._names)

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
        self._write(pad(len(data)))
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
                raise CpioError(f"{path} changed size while being archived", path=str(path))
        self._write(pad(size))
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
        self._write(pad(len(data)))

    def device(self, name: str, kind: str, major: int, minor: int, mode: int = 0o600, mtime: int = 0) -> None:
        """A character (``kind`` "c") or block ("b") device node."""
        if kind not in ("c", "b"):
            raise CpioError(f"device kind {kind!r} (c or b)", path=name)
        name = self._begin(name)
        fmt = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
        self._write(
            header(name, ino=self.next_ino(), mode=fmt | mode, size=0, nlink=1, mtime=mtime, rdev=(major, minor))
        )

    def close(self) -> None:
        if not self._closed:
            self._write(trailer())
            self._closed = True


class CpioWriter:
    """A newc archive built in memory: ``CpioStream`` over a ``BytesIO``, every time stamp 0 (reproducible)."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self.stream = CpioStream(self._buffer)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        """The folder ``name`` (nothing if the archive has it already)."""
        if not self.stream.is_dir(name):
            self.stream.directory(name, mode)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.stream.file(name, data, mode)

    def add_symlink(self, name: str, target: str) -> None:
        self.stream.symlink(name, target)

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self.stream.device(name, "c", major, minor, mode)

    def names(self) -> set[str]:
        return self.stream.names()

    def getvalue(self) -> bytes:
        """The archive bytes, with its trailer (after which nothing can be added)."""
        self.stream.close()
        return self._buffer.getvalue()
