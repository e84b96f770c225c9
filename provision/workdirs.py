"""Private working folders, also under world-writable places such as /var/tmp.

The image builder and the live build run as root and keep their work under a fixed path
(``/var/tmp/provision-build``, ``/var/tmp/provision-live``). Another local user could make that path first,
as a symlink to somewhere else or as a folder they can write: root would then build or lock inside it.
``private_dir`` creates the folder with mode 0700, or accepts an existing one only if it is a real folder
(not a symlink), owned by the user running provision, and not writable by group or others.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from provision.errors import FatalError


class UnsafeWorkdir(FatalError):
    """A working folder that another user could have prepared: a symlink, not ours, or writable by others."""


def private_dir(path: Path) -> Path:
    """``path`` as a private folder (created 0700 with its missing parents); UnsafeWorkdir if it is not one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    problems = []
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problems.append("is not a folder (a symlink or a file)")
    if info.st_uid != os.geteuid():
        problems.append(f"belongs to uid {info.st_uid}, not {os.geteuid()}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(f"is writable by others (mode {stat.S_IMODE(info.st_mode):o})")
    if problems:
        raise UnsafeWorkdir(
            f"working folder {path} {'; '.join(problems)}: remove it or choose another (--workdir)",
            path=str(path), problems=problems,
        )  # fmt: skip
    return path
