"""The written root file system, mounted for a post-install hook and unmounted again whatever happens.

``TargetRoot(disk)`` is a context manager. On entry it:

1. finds the root partition exactly as grow and the first-boot credential do (``rootpart``: the GPT read and
   checked, ``find_root``, ``read_fs``; the partition node when the kernel shows it with the GPT's start and
   size, after ``tell_kernel`` when its table is older than the write, else an offset loop device); no GPT,
   no root partition or a root that is not ext2/3/4 is refused with a plain error, before anything is made;
2. makes a private folder ``/run/provision/hook-XXXXXXXX/`` (``mkdtemp``, 0700) whose ``root/`` is the mount
   point;
3. mounts it (``mount -t ext4 --make-private``: nothing mounted below it propagates to other mount
   namespaces) and puts the live environment's devices and kernel views into it (``BINDS``):
   ``/dev`` and ``/sys`` recursively bound and made slaves (``--rbind --make-rslave``: the tree's devpts,
   ``/dev/shm`` and efivarfs come along, and unmounting them never propagates back to the live environment),
   a fresh ``proc`` (nosuid, nodev, noexec), and a fresh ``tmpfs`` on ``/run`` (not the live environment's:
   that holds the runner's own mounts and the agent's state, and a booted system starts with an empty
   ``/run`` anyway; whatever a hook puts there is gone with it).

On exit (also after a failure on entry, a failed hook, a timeout or an exception) it kills any process
whose root or working folder is still inside the target, unmounts what it mounted in reverse order
(``umount --recursive``, so mounts a hook left inside go too; ``--lazy`` as the last resort), detaches the
loop device it attached and removes its folder, but only when nothing is mounted under it any more.
``unmounted`` is false when anything stayed mounted, needed a lazy unmount, or a loop device stayed attached;
``warnings`` says what (the runner shows them after the hook's output).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from provision.agent.errors import GptInvalid, WriteError
from provision.agent.inventory import Runner
from provision.agent.rootpart import (
    EXT_TYPES,
    NODE_TIMEOUT,
    Gpt,
    RawDisk,
    Tools,
    find_partition_node,
    find_root,
    read_fs,
    tell_kernel,
)

log = logging.getLogger(__name__)

MOUNT_BASE = Path("/run/provision")  # the runner's folders: /run/provision/hook-XXXXXXXX/
MOUNT_TIMEOUT = 300.0  # seconds for one mount, umount or losetup (an unmount flushes what the hook wrote)
USERS_WAIT = 2.0  # seconds to wait for killed processes to leave the target


@dataclass(frozen=True)
class Bind:
    """One mount into the target: ``argv`` + the mount point ``/name`` inside it."""

    name: str
    argv: tuple[str, ...]
    recursive: bool = False  # a recursive bind (its unmount must not propagate: made a slave)


BINDS = (
    Bind("dev", ("mount", "--rbind", "--make-rslave", "/dev"), recursive=True),
    Bind("proc", ("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc")),
    Bind("sys", ("mount", "--rbind", "--make-rslave", "/sys"), recursive=True),
    Bind("run", ("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs")),
)


class HookMountError(WriteError):
    """The target's root cannot be mounted for a hook (no disk, no GPT, no root, not ext4, a mount point that
    is a symlink ...). ``facts``: the disk and what is known (partition, file system, device mounted)."""

    def __init__(self, device: str, message: str, **facts: object) -> None:
        super().__init__(f"{device}: {message}", device=device, **facts)
        self.device = device


class HookToolFailed(HookMountError):
    """mount, umount or losetup failed, timed out or is missing: argv, exit code, stderr tail, meaning."""

    def __init__(self, device: str, argv: Sequence[str], returncode: int | None, stderr: str, meaning: str,
                 **facts: object) -> None:  # fmt: skip
        code = "no exit status" if returncode is None else f"exit status {returncode}"
        tail = f": {stderr.strip().splitlines()[-1]}" if stderr.strip() else ""
        super().__init__(
            device, f"{' '.join(argv)}: {code} ({meaning}){tail}",
            argv=list(argv), returncode=returncode, stderr=stderr, meaning=meaning, **facts,
        )  # fmt: skip
        self.argv, self.returncode, self.stderr, self.meaning = list(argv), returncode, stderr, meaning


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: Path) -> list[str]:
    """Every mount point of ``/proc/self/mountinfo`` (octal escapes decoded), in its order."""
    text = mountinfo.read_text(encoding="utf-8", errors="surrogateescape")
    return [_unescape(line.split(" ")[4]) for line in text.splitlines() if line.count(" ") >= 5]


def inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def target_users(root: Path, proc_root: Path = Path("/proc")) -> list[int]:
    """The processes (not this one) whose root or working folder is ``root`` or below it."""
    found: list[int] = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for link in ("root", "cwd"):
            with contextlib.suppress(OSError):
                if inside(str((entry / link).readlink()), str(root)):
                    found.append(int(entry.name))
                    break
    return sorted(found)


def kill_target_users(
    root: Path, proc_root: Path = Path("/proc"), *, kill: Callable[[int, int], None] = os.kill,
    wait: float = USERS_WAIT,
) -> list[int]:  # fmt: skip
    """SIGKILL every process still using the target (a daemon a hook started, escaped from its group); waits
    up to ``wait`` seconds for them to go. Returns the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + wait
    while True:
        users = target_users(root, proc_root)
        for pid in users:
            if pid not in killed:
                with contextlib.suppress(ProcessLookupError):
                    kill(pid, signal.SIGKILL)
                killed.append(pid)
        if not users or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return killed


class TargetRoot:
    """The root file system of ``disk`` mounted with its binds (see the module's docstring). ``root``: the
    mount point; ``workdir``: the runner's private folder (``root``'s parent)."""

    def __init__(
        self, disk: str, *, run: Runner = subprocess.run, base: Path = MOUNT_BASE,
        mountinfo: Path = Path("/proc/self/mountinfo"), proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev"), node_timeout: float = NODE_TIMEOUT,
        tool_timeout: float = MOUNT_TIMEOUT, users_wait: float = USERS_WAIT,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:  # fmt: skip
        self.disk, self.run, self.base, self.mountinfo, self.proc_root = disk, run, base, mountinfo, proc_root
        self.sys_root, self.dev_root, self.node_timeout, self.users_wait = sys_root, dev_root, node_timeout, users_wait
        self.kill = kill
        self.notes: list[str] = []  # everything worth a log line
        self.warnings: list[str] = []  # what went wrong or changed the target: shown after the hook's output
        self.facts: dict[str, Any] = {}
        self.tools = Tools(run, tool_timeout, disk, self.facts, self.notes, HookToolFailed)
        self.unmounted = True
        self.mounted: list[tuple[str, bool, bool]] = []  # (mount point, recursive, its mount command succeeded)
        self.workdir: Path | None = None
        self._stack = contextlib.ExitStack()
        self._closed = False

    @property
    def root(self) -> Path:
        assert self.workdir is not None, "TargetRoot used outside its with block"
        return self.workdir / "root"

    def __enter__(self) -> TargetRoot:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- mounting
    def _open(self) -> None:
        device = self._root_device()
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="hook-", dir=self.base))  # 0700
        self.root.mkdir(mode=0o755)
        self.facts["mounted_on"] = str(self.root)
        self._mount(["mount", "-t", "ext4", "--make-private", device], self.root, recursive=False)
        for bind in BINDS:
            self._mount([*bind.argv], self._mount_point(bind.name), recursive=bind.recursive)
        log.info("%s: root file system (%s) mounted on %s", self.disk, self.facts["fs_device"], self.root)

    def _root_device(self) -> str:
        """The device holding the root file system: its partition node, or an offset loop device (as seed)."""
        path = Path(self.disk)
        disk = RawDisk(path, None, writable=False)
        try:
            try:
                root, _ = find_root(Gpt(disk).parts)
            except GptInvalid as exc:
                facts = {k: v for k, v in exc.facts.items() if k != "device"}
                raise HookMountError(self.disk, f"no usable GPT: {exc.problem}", **facts) from None
            if root is None:
                raise HookMountError(self.disk, "no root partition: nothing to mount for the hook")
            offset, size = root.first * disk.ss, (root.last - root.first + 1) * disk.ss
            fs = read_fs(path, offset)
            self.facts.update(partition=root.number, fs_type=fs.type)
            if fs.type not in EXT_TYPES:
                problem = f"the root file system (partition {root.number}) is {fs.type}, not ext4: hooks need ext2/3/4"
                raise HookMountError(self.disk, problem, **self.facts)
            node, wait = None, 0.0
            if disk.block:  # the partition node, if the kernel knows the partition as the GPT says it
                node = find_partition_node(path, root.number, size, timeout=0, sys_root=self.sys_root,
                                           dev_root=self.dev_root, start=offset)  # fmt: skip
                if node is None:  # the kernel's table is older than the write: re-read it
                    kernel, scans = tell_kernel(disk.fd, disk.name, root.number, self.run)
                    self.notes.append(f"partition table re-read: {kernel}")
                    wait = self.node_timeout if scans else 0.0
        finally:
            os.close(disk.fd)
        if disk.block and node is None:
            node = find_partition_node(path, root.number, size, timeout=wait, sys_root=self.sys_root,
                                       dev_root=self.dev_root, start=offset)  # fmt: skip
            if node is None:
                self.notes.append(f"no partition node {root.number} of {size} bytes after {wait:g} s: offset loop")
        if node is not None:
            self.facts["fs_device"] = str(node)
            return str(node)
        loop = self._stack.enter_context(self.tools.offset_loop(disk.name, offset, size))
        self.facts["fs_device"] = f"{loop} (loop at offset {offset} of {disk.name})"
        return loop

    def _mount_point(self, name: str) -> Path:
        """``root/name``: a real folder of the target (made when missing), never a symlink out of it."""
        point = self.root / name
        try:
            mode = point.lstat().st_mode
        except FileNotFoundError:
            point.mkdir(mode=0o755)
            self.warnings.append(f"/{name} was missing in the target: created (0755) to mount on")
            return point
        if stat.S_ISLNK(mode):
            problem = f"/{name} in the target is a symlink (to {str(point.readlink())!r}): not mounted over"
            raise HookMountError(self.disk, problem, **self.facts)
        if not stat.S_ISDIR(mode):
            raise HookMountError(self.disk, f"/{name} in the target is not a folder: cannot mount on it", **self.facts)
        return point

    def _mount(self, argv: list[str], point: Path, *, recursive: bool) -> None:
        self.mounted.append((str(point), recursive, False))  # before the call: a half-done mount is undone too
        self.tools([*argv, str(point)], meaning="mount failed")
        self.mounted[-1] = (str(point), recursive, True)

    # ----------------------------------------------------------------------------------------- unmounting
    def close(self) -> None:
        """Kill the target's users, unmount in reverse order, detach the loop, remove the folder. Never raises
        for what it cannot undo: ``unmounted`` and ``warnings`` say it."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.mounted:
                self._stop_users()
                self._unmount_all()
        finally:
            noted = len(self.notes)
            self._stack.close()  # the offset loop device: detached (a failure is a note, not an exception)
            for note in self.notes[noted:]:
                if "left attached" in note:
                    self.unmounted = False
                    self.warnings.append(note)
            self._remove_workdir()
        for note in self.notes:
            log.info("%s: %s", self.disk, note)
        for warning in self.warnings:
            log.warning("%s", warning)

    def _points(self) -> list[str] | None:
        try:
            return mount_points(self.mountinfo)
        except OSError as exc:
            self.warnings.append(f"cannot read {self.mountinfo}: {exc.strerror}")
            return None

    def _stop_users(self) -> None:
        try:
            killed = kill_target_users(self.root, self.proc_root, kill=self.kill, wait=self.users_wait)
        except OSError as exc:
            self.warnings.append(f"cannot look for processes using the target: {exc}")
            return
        if killed:
            pids = ", ".join(str(p) for p in killed[:20])
            self.warnings.append(f"processes still using the target were killed (SIGKILL): {pids}")

    def _unmount_all(self) -> None:
        points = self._points()
        ours = {point for point, _, _ in self.mounted}
        if points is not None:
            left = [p for p in points if inside(p, str(self.root)) and p not in ours]
            foreign = [p for p in left if not any(inside(p, o) for o, rec, _ in self.mounted if rec and o != p)]
            if foreign:
                shown = ", ".join(p.removeprefix(str(self.root)) for p in foreign[:10])
                self.warnings.append(f"the hook left {len(foreign)} mounts in the target ({shown}): unmounted")
        for point, recursive, done in reversed(self.mounted):
            if points is not None and point not in points:
                continue  # its mount failed before mounting anything
            if recursive and not done:  # its --make-rslave may have failed: never propagate an unmount back
                with contextlib.suppress(WriteError):
                    self.tools(["mount", "--make-rslave", point])
            self._umount(point)
        after = self._points()
        stuck = [p for p in after if inside(p, str(self.workdir))] if after is not None else [str(self.root)]
        if stuck:
            self.unmounted = False
            self.warnings.append(f"still mounted after unmounting: {', '.join(stuck[:10])}")

    def _umount(self, point: str) -> None:
        """``umount --recursive``, else ``--lazy`` (the file system stays alive until its last user goes)."""
        try:
            self.tools(["umount", "--recursive", point], meaning="unmount failed")
            return
        except WriteError as exc:
            self.warnings.append(str(exc))
        self.unmounted = False
        try:
            self.tools(["umount", "--recursive", "--lazy", point], meaning="lazy unmount failed")
            self.warnings.append(f"{point}: unmounted lazily (detached; still in use)")
        except WriteError as exc:
            self.warnings.append(str(exc))

    def _remove_workdir(self) -> None:
        """The private folder, removed only when nothing is mounted under it (never into the target)."""
        if self.workdir is None:
            return
        points = self._points()
        busy = [str(self.workdir)] if points is None else [p for p in points if inside(p, str(self.workdir))]
        if busy:
            self.unmounted = False
            self.warnings.append(f"{self.workdir} kept: something is mounted under it ({', '.join(busy[:5])})")
            return
        try:
            shutil.rmtree(self.workdir)
        except OSError as exc:
            self.warnings.append(f"cannot remove {self.workdir}: {exc}")
