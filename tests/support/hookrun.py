"""Helpers for the hook runner's tests (``provision.agent.hookrun``, ``hookmount``, ``hookproc``).

- ``FakeMounts``: ``losetup``, ``mount`` and ``umount`` over a mount table written to a fake
  ``/proc/self/mountinfo``, with faults (a mount that fails, a busy or stuck unmount, a detach that fails, a
  missing tool), as the ``run`` of ``TargetRoot``; it records every argv.
- ``FakeSpawn``: records what the runner starts (argv, options, the script it wrote), then starts a harmless
  real command with the same pipes and options instead (or raises the ``OSError`` it was given).
- ``job(script, **fields)``: a HookJob; ``SH``: the first line of a ``/bin/sh`` hook.
- ``busybox_static()``: the static busybox of the .deb cache (``tests.support.paths.DEB_CACHE``), or None;
  ``busybox_tree(tree, busybox)``: a tiny root (busybox, its applets as symlinks, /dev /proc /sys /run /tmp ...);
  ``make_hook_disk(tmp_path, busybox, files)``: the agent tests' GPT disk whose ext4 root is that tree.
- ``debugfs_cat(disk, path)`` / ``debugfs_ls(disk, path)``: read the disk's root file system back on an
  offset loop device of our own; ``mounts_under(prefix)``: mount points of /proc/mounts under ``prefix``;
  ``loops_of(backing)``: the loop devices attached to a file.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from provision.images.partitions import read_partition_table
from provision.initramfs import busybox_applets
from provision.wire.hooks import HookJob
from tests.support.agent import loop, make_ext4_disk, run_tool
from tests.support.paths import DEB_CACHE

SH = "#!/bin/sh\n"
ROOT_DIRS = ("dev", "proc", "sys", "run", "tmp", "root", "etc", "mnt", "var")


def job(script: str, **fields: Any) -> HookJob:
    values: dict[str, Any] = {"name": "test-hook", "where": "target", "timeout": 30, **fields}
    return HookJob(script=script, **values)


class FakeMounts:
    """The mount tools over an in-memory mount table (see the module's docstring). A recursive bind of
    ``/dev`` brings ``pts`` and ``shm`` along, of ``/sys`` its efivars; ``umount --recursive`` removes the
    point and everything below it. Mounting the root (``-t ext4``) makes the usual top folders in the mount
    point, as a real root has them (``tree=False``: an empty root), then calls ``on_root(point)``. ``busy``:
    points whose plain unmount fails; ``stuck``: points that no unmount removes; ``fail_mount``: the point whose
    mount fails (each named by its last components: ``root``, ``sys``, ``dev/pts``); ``half_mount``: the point
    whose mount command mounts, then fails (a propagation flag that could not be set)."""

    def __init__(
        self, mountinfo: Path, *, fail_mount: str = "", busy: Sequence[str] = (), stuck: Sequence[str] = (),
        detach_fails: bool = False, missing: str = "", tree: bool = True, on_root: Callable[[Path], None] | None = None,
        half_mount: str = "",
    ) -> None:  # fmt: skip
        self.mountinfo, self.fail_mount, self.busy, self.stuck = mountinfo, fail_mount, busy, stuck
        self.detach_fails, self.missing, self.tree, self.on_root = detach_fails, missing, tree, on_root
        self.half_mount = half_mount
        self.table: list[str] = ["/", "/proc", "/run"]  # the live environment's: never touched
        self.calls: list[list[str]] = []
        self._write()

    def _write(self) -> None:
        lines = [f"{i + 20} 1 0:{i + 20} / {p.replace(' ', chr(92) + '040')} rw - fake fake rw" for i, p in
                 enumerate(self.table)]  # fmt: skip
        self.mountinfo.write_text("".join(line + "\n" for line in lines))

    def ours(self) -> list[str]:
        return self.table[3:]

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls.append(list(argv))
        assert kwargs["env"]["LC_ALL"] == "C" and kwargs["check"] is False and kwargs.get("shell") is not True
        assert all(isinstance(a, str) for a in argv)
        if argv[0] == self.missing:
            raise FileNotFoundError(argv[0])
        if argv[0] == "losetup":
            if "-d" in argv and self.detach_fails:
                return subprocess.CompletedProcess(argv, 1, b"", b"losetup: /dev/loop9: detach failed: busy\n")
            return subprocess.CompletedProcess(argv, 0, b"/dev/loop9\n" if "--find" in argv else b"", b"")
        point = argv[-1]
        if argv[0] == "mount" and argv[1:] == ["--make-rslave", point]:
            return subprocess.CompletedProcess(argv, 0, b"", b"")
        if argv[0] == "mount":
            if self.fail_mount and point.endswith("/" + self.fail_mount):
                return subprocess.CompletedProcess(argv, 32, b"", f"mount: {point}: mount failed: no such\n".encode())
            self.table.append(point)
            if "ext4" in argv and self.tree:
                for folder in ("dev", "proc", "sys", "run"):
                    (Path(point) / folder).mkdir(exist_ok=True)
            if "ext4" in argv and self.on_root is not None:
                self.on_root(Path(point))
            if "--rbind" in argv:
                self.table += [f"{point}/pts", f"{point}/shm"] if "/dev" in argv else [f"{point}/firmware/efi/efivars"]
            if self.half_mount and _named(point, [self.half_mount]):
                self._write()
                return subprocess.CompletedProcess(argv, 32, b"", f"mount: {point}: propagation failed\n".encode())
        else:
            assert argv[0] == "umount" and "--recursive" in argv, argv
            below = [p for p in self.table if p == point or p.startswith(point + "/")]
            if any(_named(p, self.stuck) for p in below) or (_named(point, self.busy) and "--lazy" not in argv):
                return subprocess.CompletedProcess(argv, 32, b"", f"umount: {point}: target is busy.\n".encode())
            if point not in self.table:
                return subprocess.CompletedProcess(argv, 32, b"", f"umount: {point}: not mounted.\n".encode())
            self.table = [p for p in self.table if not (p == point or p.startswith(point + "/"))]
        self._write()
        return subprocess.CompletedProcess(argv, 0, b"", b"")


def _named(point: str, names: Sequence[str]) -> bool:
    """``point`` is one of ``names`` or ends with ``/name`` (``root``: the mount point of the target root)."""
    return any(point == name or point.endswith("/" + name) for name in names)


class FakeSpawn:
    """Records each start (argv, options, the hook script as the runner wrote it), then runs ``command``."""

    def __init__(self, command: Sequence[str] = ("sh", "-c", "echo ran"), error: OSError | None = None) -> None:
        self.command, self.error = list(command), error
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.scripts: list[tuple[bytes, int]] = []  # content and mode of the script when the hook started

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        self.calls.append((list(argv), kwargs))
        script = Path(argv[1] + argv[2]) if argv[0] == "chroot" else Path(argv[0])
        if script.exists():
            self.scripts.append((script.read_bytes(), script.stat().st_mode & 0o7777))
        if self.error is not None:
            raise self.error
        return subprocess.Popen(self.command, **kwargs)


# -------------------------------------------------------------------------------- real disks and mounts
def busybox_static() -> Path | None:
    """The static busybox unpacked in the .deb cache (``busybox-static_<version>/bin/busybox``), if any."""
    for folder in sorted(DEB_CACHE.glob("busybox-static_*")):
        if (folder / "bin" / "busybox").is_file():
            return folder / "bin" / "busybox"
    return None


def busybox_tree(tree: Path, busybox: Path) -> Path:
    """A tiny root file system under ``tree``: the static busybox, every applet a symlink to it, the usual
    top folders (``/tmp`` 1777)."""
    (tree / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, tree / "bin" / "busybox")
    (tree / "bin" / "busybox").chmod(0o755)
    for applet in busybox_applets(busybox):
        path = tree / applet
        if applet != "bin/busybox" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to("/bin/busybox")
    for folder in ROOT_DIRS:
        (tree / folder).mkdir(exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    return tree


def make_hook_disk(tmp_path: Path, busybox: Path, files: Mapping[str, bytes] | None = None) -> Path:
    """A GPT disk file (tests.support.agent.make_ext4_disk) whose ext4 root is ``busybox_tree`` + ``files``."""
    tree = busybox_tree(tmp_path / "tree", busybox)
    path, _ = make_ext4_disk(tmp_path, {"etc/hostname": b"poste-01\n", **(files or {})}, tree=tree)
    return path


@contextmanager
def root_fs(disk: Path) -> Iterator[str]:
    """An offset loop device over the disk's root partition (the third), detached afterwards."""
    with disk.open("rb") as f:
        root = read_partition_table(f, disk.stat().st_size).partitions[2]
    with loop(disk, "--offset", str(root.start * 512), "--sizelimit", str(root.size * 512)) as device:
        yield device


def debugfs_cat(disk: Path, path: str) -> bytes | None:
    """The file's bytes in the disk's root file system (None when it is not there)."""
    with root_fs(disk) as device:
        done = subprocess.run(["debugfs", "-R", f"cat {path}", device], capture_output=True, check=True)
    return None if b"File not found" in done.stderr else done.stdout


def debugfs_ls(disk: Path, path: str) -> list[str]:
    """The names in a folder of the disk's root file system."""
    with root_fs(disk) as device:
        out = run_tool(["debugfs", "-R", f"ls -p {path}", device]).stdout
    names = [fields[5] for line in out.splitlines() if len(fields := line.split("/")) > 5]
    return [name for name in names if name not in (".", "..")]


def mounts_under(prefix: str = "/run/provision") -> list[str]:
    """Mount points of /proc/mounts at or under ``prefix``."""
    points = [line.split(" ")[1].replace("\\040", " ") for line in Path("/proc/mounts").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix.rstrip("/") + "/")]


def loops_of(backing: Path) -> str:
    """``losetup -j``: the loop devices over ``backing`` (empty when none)."""
    return run_tool(["losetup", "-j", str(backing)]).stdout.strip()
