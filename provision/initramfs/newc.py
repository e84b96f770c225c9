"""The cpio "newc" format (what the kernel unpacks as the initramfs): the one header encoder, the one padding
rule, and a reader.

A newc entry is a 110-byte ASCII header (magic ``070701``, then 13 fields of 8 hex digits: inode, mode, uid,
gid, link count, mtime, body size, device major/minor, rdev major/minor, name size with its NUL, checksum),
the NUL-terminated name, padding to 4 bytes, the body, padding to 4 bytes. The archive ends with an entry
named ``TRAILER!!!``. Owner is always root here (uid and gid 0), the checksum 0.
"""

from __future__ import annotations

from collections.abc import Iterator

from provision.initramfs.errors import CpioError

MAGIC = b"070701"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"


def padding(length: int) -> int:
    """How many NUL bytes bring ``length`` to the next multiple of 4."""
    return -length % 4


def pad(length: int) -> bytes:
    """The NUL bytes that follow ``length`` bytes of header + name, or of a body."""
    return bytes(padding(length))


def header(name: str, *, ino: int, mode: int, size: int, nlink: int, mtime: int, rdev: tuple[int, int]) -> bytes:
    """One newc header with its name and padding (no body)."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, max(mtime, 0), size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
    head = MAGIC + b"".join(f"{value:08x}".encode() for value in fields)
    return head + encoded + pad(len(head) + len(encoded))


def trailer() -> bytes:
    """The entry that ends an archive."""
    return header(TRAILER, ino=0, mode=0, size=0, nlink=1, mtime=0, rdev=(0, 0))


def read_newc(data: bytes) -> Iterator[tuple[str, int, int, int, bytes, tuple[int, int]]]:
    """(name, mode, ino, nlink, body, rdev) of each entry of an uncompressed newc archive (tests, tools)."""
    pos = 0
    while True:
        if data[pos : pos + 6] != MAGIC:
            raise CpioError(f"bad newc magic at offset {pos}", offset=pos)
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, nlink, size, rmaj, rmin, namesize = (fields[i] for i in (0, 1, 4, 6, 9, 10, 11))
        start = pos + HEADER_SIZE
        name = data[start : start + namesize - 1].decode()
        body_start = start + namesize + padding(HEADER_SIZE + namesize)
        body = data[body_start : body_start + size]
        pos = body_start + size + padding(size)
        if name == TRAILER:
            return
        yield name, mode, ino, nlink, body, (rmaj, rmin)
