"""Request paths: normalisation, containment in the TFTP root (real paths, symlinks), opening regular files."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

from provision.tftp.protocol import RequestRefused, TftpErrorCode


def normalize_path(requested: str) -> str:
    """The requested name as a relative '/'-separated path, or RequestRefused.

    PXE clients often send a leading '/': every name is relative to the root, so `/etc/passwd` means
    `ROOT/etc/passwd`. '.' and empty parts are dropped; '..', backslashes and NUL bytes are refused.
    """
    if "\0" in requested:
        raise RequestRefused(requested, "contains a NUL byte", TftpErrorCode.ACCESS_VIOLATION)
    if "\\" in requested:
        raise RequestRefused(requested, "contains a backslash", TftpErrorCode.ACCESS_VIOLATION)
    parts = [part for part in requested.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise RequestRefused(requested, "contains '..' (outside the TFTP root)", TftpErrorCode.ACCESS_VIOLATION)
    if not parts:
        raise RequestRefused(requested, "names the TFTP root folder, not a file", TftpErrorCode.ACCESS_VIOLATION)
    return "/".join(parts)


def resolve_path(root: Path, requested: str) -> Path:
    """The real path of the regular file `requested` names inside `root`, or RequestRefused.

    Symlinks are followed and the result must still be inside the root's real path; only regular files
    are served (not folders, FIFOs or devices).
    """
    relative = normalize_path(requested)
    base = os.path.realpath(root)
    real = os.path.realpath(Path(base, relative))
    if os.path.commonpath([base, real]) != base:
        raise RequestRefused(requested, "resolves outside the TFTP root (symlink)", TftpErrorCode.ACCESS_VIOLATION)
    try:
        info = Path(real).stat()
    except (FileNotFoundError, NotADirectoryError):
        raise RequestRefused(requested, "file not found", TftpErrorCode.FILE_NOT_FOUND) from None
    except OSError as exc:
        raise RequestRefused(requested, f"cannot read: {exc.strerror}", TftpErrorCode.ACCESS_VIOLATION) from None
    if not stat.S_ISREG(info.st_mode):
        raise RequestRefused(requested, "not a regular file", TftpErrorCode.ACCESS_VIOLATION)
    return Path(real)


def open_regular(path: Path) -> tuple[IO[bytes], int]:
    """Open a file `resolve_path` returned, re-checking on the open descriptor; (file, size).

    O_NOFOLLOW and fstat() close the gap between the check and the open; O_NONBLOCK keeps a FIFO swapped in
    meanwhile from blocking the server.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise RequestRefused(str(path), f"cannot open: {exc.strerror}", TftpErrorCode.ACCESS_VIOLATION) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RequestRefused(str(path), "not a regular file", TftpErrorCode.ACCESS_VIOLATION)
    return os.fdopen(fd, "rb"), info.st_size
