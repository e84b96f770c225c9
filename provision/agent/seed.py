"""Write the run's first-boot credential into the installed system's root file system, without mounting it.

After the verified write and the grow step, ``write_firstboot_secret(target, secret)`` puts the plan's
``firstboot_secret`` at ``FIRSTBOOT_SECRET_PATH`` (``/var/lib/provision/firstboot-secret``) of the root file
system: a regular file of the hex digits only (no newline), mode 0600, owned by root; missing parent folders
are created 0755 root, and ``/var/lib/provision`` is made (or set to) 0700 root. The installed system reads it
at its first boot and sends it with its ``firstboot`` call, which the server refuses without it.

The live environment may not mount (docs/agent.md, "Growing the root file system"), so ``debugfs`` from
e2fsprogs does the work on the device grow uses (the partition node, or an offset loop device over the disk):

1. the GPT and the root partition are read as grow reads them (``rootpart``); no usable GPT, no root
   partition, or a root file system that is not ext2/3/4 is *skipped* with the reason (an image that is not
   ours: its machine will not prove its first boot, and the server will refuse its callback);
2. ``debugfs -f INSPECT`` stats ``/``, ``/var``, ``/var/lib``, ``/var/lib/provision`` and the file;
3. ``debugfs -w -f COMMANDS``: ``mkdir`` + ``sif`` (mode, uid, gid) for each missing folder, ``rm`` of an old
   file, ``write`` of a 0600 temporary file holding the secret, ``sif`` of the new file's mode and owner;
4. verified: the inspection again (types, modes, owners, the size) and ``debugfs -R "cat PATH"`` must give
   the secret back byte for byte.

debugfs exits 0 even when a command fails, so its stderr is read: any line but its version banner is a
failure. Every tool runs from an argument list; the secret is never on a command line, in a command file,
in a log line, an error or the result: only in the temporary file (0600, in a 0700 folder, removed after).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from provision.agent.errors import GptInvalid, SeedError, SeedToolFailed, WriteError
from provision.agent.inventory import Runner
from provision.agent.rootpart import (
    EXT_TYPES,
    NODE_TIMEOUT,
    Gpt,
    RawDisk,
    Tools,
    drop_cache,
    find_partition_node,
    find_root,
    read_fs,
    tell_kernel,
    text_tail,
)
from provision.wire.api import FIRSTBOOT_SECRET_PATH, HEX_SECRET

log = logging.getLogger(__name__)

SECRET_PATH = PurePosixPath(FIRSTBOOT_SECRET_PATH)
PRIVATE_DIR = SECRET_PATH.parent  # /var/lib/provision: 0700
FILE_MODE, DIR_MODE, PRIVATE_MODE = 0o600, 0o755, 0o700
DEBUGFS_TIMEOUT = 300.0  # seconds for one debugfs run
_BANNER = re.compile(r"debugfs \d\S* \(.*\)")  # "debugfs 1.47.0 (5-Feb-2023)", on stderr at every start
_SECTION = re.compile(r"^debugfs: stat (\S+)$", re.M)  # debugfs -f echoes each command
_STAT = re.compile(r"Type:\s*(\S+)\s+Mode:\s*([0-7]+)")
_OWNER = re.compile(r"User:\s*(\d+)\s+Group:\s*(\d+)(?:\s+Project:\s*\d+)?\s+Size:\s*(\d+)")
_COMMAND_SAFE = re.compile(r"[A-Za-z0-9_./-]+")  # a path debugfs's command parser takes as one word


@dataclass(frozen=True)
class SeedResult:
    """What ``write_firstboot_secret`` did. ``written``: the file is there and read back right; if not,
    ``reason`` says why it was skipped. Never holds the secret."""

    device: str
    written: bool
    reason: str | None
    path: str = FIRSTBOOT_SECRET_PATH
    partition: int | None = None
    fs_type: str | None = None
    fs_device: str | None = None  # where debugfs ran
    created: tuple[str, ...] = ()  # folders created
    replaced: bool = False  # a file already at the path was replaced
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """``written`` or ``skipped: <why>``: what the run's report says."""
        return "written" if self.written else f"skipped: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created"], data["notes"] = list(self.created), list(self.notes)
        return data


@dataclass(frozen=True)
class Inode:
    """What ``debugfs stat`` says of one path."""

    type: str  # regular, directory, symlink ...
    mode: int  # permission bits
    uid: int
    gid: int
    size: int


def parse_stats(stdout: str, paths: list[str]) -> dict[str, Inode | None]:
    """Each path's inode from the output of ``debugfs -f`` over ``stat PATH`` lines (``None``: not found)."""
    found: dict[str, Inode | None] = dict.fromkeys(paths)
    marks = list(_SECTION.finditer(stdout))
    for i, mark in enumerate(marks):
        body = stdout[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(stdout)]
        kind, owner = _STAT.search(body), _OWNER.search(body)
        if mark.group(1) in found and kind and owner:
            uid, gid, size = (int(x) for x in owner.groups())
            found[mark.group(1)] = Inode(kind.group(1), int(kind.group(2), 8) & 0o7777, uid, gid, size)
    return found


def debugfs_errors(stderr: object) -> list[str]:
    """The lines of debugfs's stderr that are not its version banner: each is a command that failed."""
    return [line for line in text_tail(stderr).splitlines() if line.strip() and not _BANNER.fullmatch(line.strip())]


def _folders() -> list[str]:
    """``/var``, ``/var/lib``, ``/var/lib/provision``: the folders the file needs, from the top."""
    return [str(p) for p in reversed(SECRET_PATH.parents) if str(p) != "/"]


@dataclass(frozen=True)
class WritePlan:
    """The ``debugfs -w`` command lines for what the inspection found, and what they change."""

    lines: list[str]
    created: list[str]  # folders made
    replaced: bool  # an old file at the path is removed first
    fixed: bool  # /var/lib/provision existed with another mode or owner: set to 0700 root


def plan_commands(found: dict[str, Inode | None], secret_file: str) -> WritePlan:
    """What to do for what the inspection ``found``. Raises ``ValueError`` for a path in the way (a folder
    that is not one, a folder where the file goes)."""
    lines: list[str] = []
    created: list[str] = []
    fixed = False
    for folder in _folders():
        mode = PRIVATE_MODE if folder == str(PRIVATE_DIR) else DIR_MODE
        inode = found.get(folder)
        if inode is None:
            lines.append(f"mkdir {folder}")
            created.append(folder)
        elif inode.type != "directory":
            raise ValueError(f"{folder} is a {inode.type}, not a directory")
        elif folder != str(PRIVATE_DIR) or (inode.mode, inode.uid, inode.gid) == (mode, 0, 0):
            continue
        else:
            fixed = True
        lines += [f"sif {folder} mode 0{0o40000 | mode:o}", f"sif {folder} uid 0", f"sif {folder} gid 0"]
    old = found.get(str(SECRET_PATH))
    if old is not None and old.type == "directory":
        raise ValueError(f"{SECRET_PATH} is a directory")
    if old is not None:
        lines.append(f"rm {SECRET_PATH}")
    lines += [f"cd {PRIVATE_DIR}", f"write {secret_file} {SECRET_PATH.name}"]
    lines += [f"sif {SECRET_PATH} mode 0{0o100000 | FILE_MODE:o}", f"sif {SECRET_PATH} uid 0",
              f"sif {SECRET_PATH} gid 0"]  # fmt: skip
    return WritePlan(lines, created, old is not None, fixed)


def check_written(found: dict[str, Inode | None], size: int) -> list[str]:
    """What is wrong with the file and its folders after the write (empty: all right)."""
    problems: list[str] = []
    for folder in _folders():
        inode = found.get(folder)
        if inode is None or inode.type != "directory":
            problems.append(f"{folder}: {'missing' if inode is None else inode.type}")
        elif folder == str(PRIVATE_DIR) and (inode.mode, inode.uid, inode.gid) != (PRIVATE_MODE, 0, 0):
            problems.append(f"{folder}: mode {inode.mode:04o} owner {inode.uid}:{inode.gid}, expected 0700 0:0")
    inode = found.get(str(SECRET_PATH))
    if inode is None or inode.type != "regular":
        problems.append(f"{SECRET_PATH}: {'missing' if inode is None else inode.type}")
    elif (inode.mode, inode.uid, inode.gid, inode.size) != (FILE_MODE, 0, 0, size):
        got = f"mode {inode.mode:04o} owner {inode.uid}:{inode.gid} size {inode.size}"
        problems.append(f"{SECRET_PATH}: {got}, expected mode 0600 owner 0:0 size {size}")
    return problems


class _Debugfs:
    """debugfs on one device, through ``Tools`` (argv lists, a timeout, errors with every fact)."""

    def __init__(self, tools: Tools, device: str, workdir: Path) -> None:
        self.tools, self.device, self.workdir = tools, device, workdir
        self.paths = ["/", *_folders(), str(SECRET_PATH)]

    def _fail(self, argv: list[str], done: subprocess.CompletedProcess[Any], meaning: str) -> WriteError:
        tools = self.tools
        return tools.error(tools.device, argv, done.returncode, text_tail(done.stderr), meaning, **tools.facts)

    def inspect(self, name: str) -> dict[str, Inode | None]:
        commands = self.workdir / name
        commands.write_text("".join(f"stat {p}\n" for p in self.paths), encoding="utf-8")
        argv = ["debugfs", "-f", str(commands), self.device]
        done = self.tools.completed(argv, meaning="debugfs failed")
        found = parse_stats(text_tail(done.stdout, 1 << 20), self.paths)
        root = found.pop("/")
        if root is None or root.type != "directory":
            raise self._fail(argv, done, "debugfs could not read the file system")
        return found

    def write(self, lines: list[str]) -> None:
        commands = self.workdir / "write"
        commands.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        argv = ["debugfs", "-w", "-f", str(commands), self.device]
        done = self.tools.completed(argv, meaning="debugfs failed")
        errors = debugfs_errors(done.stderr)
        if errors:  # the first is the cause; the later ones often follow from it
            count = f"{len(errors)} errors, the first" if len(errors) > 1 else "an error"
            raise self._fail(argv, done, f"debugfs reported {count}: {errors[0].strip()[:300]}")

    def cat(self) -> bytes:
        argv = ["debugfs", "-R", f"cat {SECRET_PATH}", self.device]
        done = self.tools.completed(argv, meaning="debugfs failed")
        return bytes(done.stdout or b"")  # the secret: never logged, never in an error


def write_firstboot_secret(
    target: Path | str, secret: str, *, run: Runner = subprocess.run, sector_size: int | None = None,
    node_timeout: float = NODE_TIMEOUT, tool_timeout: float = DEBUGFS_TIMEOUT, sys_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"), tmp_dir: Path | None = None,
) -> SeedResult:  # fmt: skip
    """Write ``secret`` to ``FIRSTBOOT_SECRET_PATH`` in the root file system of ``target`` (a disk, or a file
    standing in for one) and read it back. Returns a ``SeedResult`` (skipped with the reason for an image
    that is not ours); raises ``SeedToolFailed``, ``SeedError`` or ``TargetError``."""
    started, path, notes = time.monotonic(), Path(target), list[str]()
    if not re.fullmatch(HEX_SECRET, secret):
        raise SeedError(str(path), f"the plan's first-boot secret is not {HEX_SECRET} ({len(secret)} characters)")
    disk = RawDisk(path, sector_size, writable=False)
    try:
        try:
            root, _ = find_root(Gpt(disk).parts)
        except GptInvalid as exc:
            return _done(SeedResult(disk.name, False, f"no usable GPT: {exc.problem}"), started, notes)
        if root is None:
            return _done(SeedResult(disk.name, False, "no root partition"), started, notes)
        offset, size = root.first * disk.ss, (root.last - root.first + 1) * disk.ss
        fs = read_fs(path, offset)
        result = SeedResult(disk.name, False, None, partition=root.number, fs_type=fs.type)
        if fs.type not in EXT_TYPES:
            reason = f"root file system is {fs.type}, not ext2/3/4: debugfs cannot write it"
            return _done(result, started, notes, reason=reason)
        node, wait = None, 0.0
        if disk.block:  # the partition node, if the kernel knows the partition as the GPT says it
            node = find_partition_node(path, root.number, size, timeout=0, sys_root=sys_root, dev_root=dev_root,
                                       start=offset)  # fmt: skip
            if node is None:  # the kernel's table is older than the write (no grow changed it): re-read it
                kernel, scans = tell_kernel(disk.fd, disk.name, root.number, run)
                notes.append(f"partition table re-read: {kernel}")
                wait = node_timeout if scans else 0.0
    finally:
        os.close(disk.fd)
    facts: dict[str, Any] = {"partition": root.number, "fs_type": fs.type, "path": FIRSTBOOT_SECRET_PATH}
    tools = Tools(run, tool_timeout, disk.name, facts, notes, SeedToolFailed)
    with contextlib.ExitStack() as stack:
        if disk.block and node is None:
            node = find_partition_node(path, root.number, size, timeout=wait, sys_root=sys_root, dev_root=dev_root,
                                       start=offset)  # fmt: skip
            if node is None:
                notes.append(f"no partition node {root.number} of {size} bytes after {wait:g} s: offset loop")
        device = str(node) if node else stack.enter_context(tools.offset_loop(disk.name, offset, size))
        fs_device = device if node else f"{device} (loop at offset {offset} of {disk.name})"
        facts["fs_device"] = fs_device
        if node is not None:
            drop_cache(node)
        workdir = Path(tempfile.mkdtemp(prefix="provision-seed-", dir=tmp_dir))  # 0700
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        secret_file = _secret_file(workdir, secret, disk.name, facts)
        debugfs = _Debugfs(tools, device, workdir)
        try:
            todo = plan_commands(debugfs.inspect("inspect"), secret_file)
        except ValueError as exc:
            raise SeedError(disk.name, f"cannot write {SECRET_PATH}: {exc}", problem=str(exc), **facts) from None
        if todo.fixed:
            notes.append(f"{PRIVATE_DIR} existed with another mode or owner: set to 0700 root")
        facts["commands"] = todo.lines
        debugfs.write(todo.lines)
        drop_cache(device)  # read back from below debugfs's own writes
        problems = check_written(debugfs.inspect("verify"), len(secret))
        back = debugfs.cat()
        if back != secret.encode("ascii"):
            problems.append(f"{SECRET_PATH}: content differs ({len(back)} bytes read, {len(secret)} written)")
        if problems:
            message = f"the first-boot credential did not read back right: {'; '.join(problems)}"
            raise SeedError(disk.name, message, problems=problems, **facts)
    if disk.block:
        drop_cache(path)  # the whole disk's cached pages of the file system are stale now
    return _done(result, started, notes, written=True, fs_device=fs_device, created=tuple(todo.created),
                 replaced=todo.replaced)  # fmt: skip


def _secret_file(workdir: Path, secret: str, device: str, facts: dict[str, Any]) -> str:
    """The secret in a new 0600 file of ``workdir`` (its path goes into the debugfs command file)."""
    target = workdir / "secret"
    if not _COMMAND_SAFE.fullmatch(str(target)):
        problem = f"temporary file path {str(target)!r} is not one debugfs command word"
        raise SeedError(device, problem, problem=problem, **facts)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(secret.encode("ascii"))
    return str(target)


def _done(result: SeedResult, started: float, notes: list[str], **changes: Any) -> SeedResult:
    done = replace(result, seconds=round(time.monotonic() - started, 3), notes=tuple(notes), **changes)
    log.info("first-boot credential on %s: %s", done.device, done.summary())
    return done
