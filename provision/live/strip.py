"""What the live environment leaves out of the Debian tree: documentation, locales, caches, package
bookkeeping, perl (only debconf needed it, at install time) and the parts of the Python standard library
the agent never imports.

Rules are path patterns relative to the tree root (``/`` separated; ``*`` and ``?`` match inside one path
segment, ``**`` any number of segments; a pattern ``X/**`` also matches ``X`` itself). A path is removed
when a ``STRIP`` rule matches and no ``KEEP`` rule does; folders are removed only when they matched a rule
and nothing kept is left inside. Kept on purpose: the ``copyright`` files (licences travel with the
binaries), ``C.utf8``, ``pci.ids`` (lspci names), smartmontools' drive database, CA certificates, the
dpkg status file (the package list), and from the standard library everything a dependency of
``requests`` may import (email, http, urllib, ssl, json, logging, concurrent, multiprocessing, asyncio,
ctypes, sqlite3, unittest, xml ...). Compiled files whose source was removed are removed too.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

PY = "usr/lib/python3.*"
STRIP: tuple[str, ...] = (
    # documentation, translations, shell helpers
    "usr/share/doc/**",
    "usr/share/man/**",
    "usr/share/info/**",
    "usr/share/locale/**",
    "usr/share/i18n/**",
    "usr/share/lintian/**",
    "usr/share/linda/**",
    "usr/share/bug/**",
    "usr/share/bash-completion/**",
    "usr/share/zsh/**",
    "usr/share/menu/**",
    "usr/share/gcc/**",
    "usr/share/gdb/**",
    "usr/share/common-licenses/**",
    # package management state and caches (the package list goes to live.json)
    "var/lib/apt/**",
    "var/cache/apt/**",
    "var/cache/debconf/**",
    "var/cache/ldconfig/**",
    "var/lib/dpkg/info/**",
    "var/lib/dpkg/*-old",
    "var/log/*",
    "var/log/*/**",
    "etc/apt/**",
    # perl and debconf: install-time only
    "usr/bin/perl*",
    "usr/lib/x86_64-linux-gnu/perl-base/**",
    "usr/lib/x86_64-linux-gnu/perl/**",
    "usr/share/perl5/**",
    "usr/share/perl/**",
    "usr/share/debconf/**",
    # glibc's iconv modules (python, util-linux and the rest use UTF-8/ASCII, built into glibc)
    "usr/lib/x86_64-linux-gnu/gconv/**",
    # Python: test suites, GUI and packaging tools, documentation data
    f"{PY}/test/**",
    f"{PY}/**/test/**",
    f"{PY}/**/tests/**",
    f"{PY}/idlelib/**",
    f"{PY}/tkinter/**",
    f"{PY}/turtledemo/**",
    f"{PY}/turtle.py",
    f"{PY}/ensurepip/**",
    f"{PY}/lib2to3/**",
    f"{PY}/pydoc_data/**",
    f"{PY}/config-*/**",
    f"{PY}/lib-dynload/_test*.so",
    f"{PY}/lib-dynload/_ctypes_test*.so",
    f"{PY}/lib-dynload/_xxtestfuzz*.so",
    f"{PY}/lib-dynload/xxlimited*.so",
    f"{PY}/lib-dynload/_tkinter*.so",
    "usr/lib/python3/dist-packages/**/tests/**",
    "usr/lib/python3/dist-packages/**/test/**",
    "**/__pycache__/*.opt-1.pyc",
    "**/__pycache__/*.opt-2.pyc",
)
KEEP: tuple[str, ...] = ("usr/share/doc/*/copyright",)
_PYC = re.compile(r"^(?P<stem>[^.]+)\.[a-z]+-\d+(?:\.opt-\d)?\.pyc$")


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.strip("/").split("/"))


def _match(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        if not rest:
            return True
        return any(_match(parts[i:], rest) for i in range(len(parts) + 1))
    if not parts or not fnmatch.fnmatchcase(parts[0], head):
        return False
    return _match(parts[1:], rest)


def matches(rel: str, pattern: str) -> bool:
    """Does the tree path ``rel`` (``usr/share/doc``) match ``pattern``? ``X/**`` matches ``X`` too."""
    parts = tuple(p for p in rel.strip("/").split("/") if p)
    compiled = _compiled(pattern)
    if _match(parts, compiled):
        return True
    return compiled[-1] == "**" and _match(parts, compiled[:-1])


def stripped(rel: str, strip: Iterable[str] = STRIP, keep: Iterable[str] = KEEP) -> bool:
    """True when the strip rules remove ``rel``."""
    return any(matches(rel, p) for p in strip) and not any(matches(rel, p) for p in keep)


@dataclass(frozen=True)
class StripStats:
    files: int
    bytes: int
    dirs: int
    orphan_pyc: int

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes, "dirs": self.dirs, "orphan_pyc": self.orphan_pyc}


def strip_tree(root: Path, strip: Sequence[str] = STRIP, keep: Sequence[str] = KEEP) -> StripStats:
    """Remove what the rules say from the tree at ``root`` (never following symlinks out of it)."""
    files = size = dirs = 0
    matched_dirs: list[str] = []
    for current, subdirs, names in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        links = [name for name in subdirs if (Path(current) / name).is_symlink()]
        subdirs[:] = [name for name in subdirs if name not in links]
        for name in subdirs:
            if stripped(prefix + name, strip, ()):
                matched_dirs.append(prefix + name)
        for name in [*links, *names]:  # a symlink to a folder is a name like a file: removed, never followed
            rel = prefix + name
            if stripped(rel, strip, keep):
                path = root / rel
                size += path.lstat().st_size
                path.unlink()
                files += 1
    for rel in sorted(matched_dirs, key=lambda r: -r.count("/")):
        path = root / rel
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
            dirs += 1
    orphans = remove_orphan_pyc(root)
    log.info("strip: %d files (%.1f MiB), %d folders, %d orphan .pyc", files, size / 2**20, dirs, orphans)
    return StripStats(files, size, dirs, orphans)


def remove_orphan_pyc(root: Path) -> int:
    """Remove ``__pycache__/X.cpython-3NN*.pyc`` whose ``X.py`` is gone (and emptied ``__pycache__``)."""
    removed = 0
    for cache in sorted(root.rglob("__pycache__")):
        if not cache.is_dir() or cache.is_symlink():
            continue
        for pyc in sorted(cache.iterdir()):
            found = _PYC.match(pyc.name)
            if found and not (cache.parent / f"{found.group('stem')}.py").exists():
                pyc.unlink()
                removed += 1
        if not any(cache.iterdir()):
            cache.rmdir()
    return removed
