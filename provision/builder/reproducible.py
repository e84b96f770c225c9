"""Reproducible images: the same inputs give the same disk, bit for bit.

What a fresh build would otherwise take from the clock or from chance, and how each is pinned:

- time stamps of the staged root tree: every file's modification time is clamped to the build's
  ``SOURCE_DATE_EPOCH`` (``clamp_tree``: older package time stamps stay, anything the build wrote itself
  takes the epoch), before ``mke2fs -d`` copies them;
- inode change and access times: ``mke2fs -d`` copies each file's ``st_ctime``, which no program can set
  (the kernel stamps it), and its ``st_atime`` (which reading moves); so after ``mke2fs`` every inode in use
  gets ``ctime`` = ``atime`` = the epoch (``pin_inode_times``: the inodes in use from ``dumpe2fs``, one
  ``debugfs -w`` pass of ``set_inode_field``, which rewrites each inode's checksum);
- the order of entries: ``mke2fs -d`` (e2fsprogs 1.47) reads each folder with ``scandir(alphasort)``, sorted by
  the collation of ``LC_ALL``, which the runner sets to ``C.UTF-8`` for every command: byte order;
- state a Debian bootstrap leaves that no one needs in a master image and that differs from build to build
  (``BUILD_STATE``: logs, apt and debconf back-ups, caches of ldconfig and man-db, systemd's random seed);
  the machine identity goes in ``firstboot.reset_identity``;
- a Debian bootstrap's own stamps: mmdebstrap, the maintainer scripts (``mkinitramfs`` clamps the initramfs'
  times to it, ``useradd`` dates /etc/shadow with it) and the settings run with ``SOURCE_DATE_EPOCH`` =
  ``BootPackages.epoch()`` (the inputs' boot loader files); the tree is then clamped to its newest package's
  changelog date (``newest_changelog``), which also stamps the file system.

The file system's own identifiers and hash seed come from the image name (``disk.DiskLayout``), its time
stamps from ``E2FSPROGS_FAKE_TIME``; the ESP's volume label entry from ``mkfs.fat --invariant``, its files'
times from the packages (``bootloader.install_uefi``). What stays unreproducible is listed in
docs/image-build.md ("Reproducible images").
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from provision.builder.runner import Runner

log = logging.getLogger(__name__)

# Paths (relative to the root) removed from a Debian tree before it becomes a disk: written at build time,
# different in every build, and of no use on a freshly imaged PC (each is made again when needed).
BUILD_STATE = (
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/cache/debconf/passwords.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/passwd-",
    "etc/group-",
    "etc/subuid-",
    "etc/subgid-",
)
# Folders whose content is removed (the folders stay): caches rebuilt on demand.
BUILD_STATE_DIRS = ("var/cache/man", "var/log/journal")
_FREE_INODES = re.compile(r"^\s*Free inodes:\s*(.*)$")
_GROUP = re.compile(r"^Group (\d+):")
_PER_GROUP = re.compile(r"^Inodes per group:\s+(\d+)")
_INODE_COUNT = re.compile(r"^Inode count:\s+(\d+)")


def walk(root: Path) -> Iterator[Path]:
    """Every path below ``root`` (not following symlinks), ``root`` itself last."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in (*files, *dirs):
            yield Path(folder, name)
    yield root


def clamp_tree(root: Path, epoch: int) -> int:
    """Clamp the modification time of every path below ``root`` (links themselves, not their targets) to
    ``epoch``, and set its access time to its modification time. Returns how many paths were clamped."""
    clamped = 0
    for path in walk(root):
        st = os.lstat(path)
        mtime = st.st_mtime_ns
        if mtime > epoch * 1_000_000_000:
            mtime = epoch * 1_000_000_000
            clamped += 1
        elif st.st_atime_ns == mtime and mtime % 1_000_000_000 == 0:
            continue
        mtime -= mtime % 1_000_000_000  # whole seconds: mke2fs -d keeps only those
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    return clamped


def newest_changelog(root: Path) -> int | None:
    """The newest ``/usr/share/doc/*/changelog.Debian.gz`` time stamp of a Debian tree: the date of its newest
    package (dpkg unpacks files with the package's own times), a function of the package versions only."""
    stamps = [int(p.lstat().st_mtime) for p in (root / "usr" / "share" / "doc").glob("*/changelog.Debian.gz")]
    return max(stamps, default=None)


def used_inodes(dumpe2fs: str) -> list[int]:
    """The inode numbers in use, from ``dumpe2fs`` output (each group's "Free inodes:" ranges, complemented)."""
    per_group = count = 0
    free: dict[int, list[tuple[int, int]]] = {}
    group = -1
    for line in dumpe2fs.splitlines():
        if m := _PER_GROUP.match(line):
            per_group = int(m.group(1))
        elif m := _INODE_COUNT.match(line):
            count = int(m.group(1))
        elif m := _GROUP.match(line):
            group = int(m.group(1))
            free[group] = []
        elif (m := _FREE_INODES.match(line)) and group >= 0:
            for part in m.group(1).split(","):
                first, _, last = part.strip().partition("-")
                if first:
                    free[group].append((int(first), int(last or first)))
    if not per_group or not count:
        return []
    used: list[int] = []
    for group, ranges in sorted(free.items()):
        start, end = group * per_group + 1, min((group + 1) * per_group, count)
        taken = set(range(start, end + 1))
        for first, last in ranges:
            taken.difference_update(range(first, last + 1))
        used.extend(sorted(taken))
    return used


def inode_time_script(inodes: list[int], epoch: int) -> str:
    """debugfs commands giving each inode the change and access time ``epoch``."""
    lines = []
    for ino in inodes:
        lines.append(f"set_inode_field <{ino}> ctime @{epoch}")
        lines.append(f"set_inode_field <{ino}> atime @{epoch}")
    return "".join(line + "\n" for line in lines)


def pin_inode_times(runner: Runner, step: str, device: str, epoch: int) -> int:
    """Every inode in use in the ext4 file system ``device`` (e2fsprogs' ``FILE?offset=N``) gets ctime and
    atime ``epoch``. Returns how many inodes."""
    groups = runner.run(step, ["dumpe2fs", device])
    inodes = used_inodes(groups.stdout)
    if inodes:
        script = inode_time_script(inodes, epoch)
        # debugfs stamps the superblock's write time when it closes: the epoch too, not the clock
        runner.run(step, ["debugfs", "-w", "-f", "-", device], input=script, env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    log.debug("image %s: %d inodes given ctime/atime %d", runner.image, len(inodes), epoch)
    return len(inodes)


def remove_build_state(root: Path) -> list[str]:
    """Remove ``BUILD_STATE`` files and the content of ``BUILD_STATE_DIRS`` from a Debian tree. Returns the
    paths removed, relative to the root."""
    removed: list[str] = []
    for rel in BUILD_STATE:
        path = root / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(rel)
    for rel in BUILD_STATE_DIRS:
        folder = root / rel
        if folder.is_dir() and not folder.is_symlink():
            for child in sorted(folder.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
                removed.append(str(child.relative_to(root)))
    return removed
