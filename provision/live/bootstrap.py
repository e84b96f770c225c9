"""The prepared Debian tree of the live environment, built once per key and cached.

Preparing a tree: ``mmdebstrap`` (root mode, a folder), the installed versions read back with
``dpkg-query --admindir``, busybox links for the applets Debian's packages do not provide (``udhcpc``,
``vi``, ``ps`` ...; in ``/usr/local/bin``, so real tools win), the strip rules (strip.py), and every Python
file compiled in the tree's own interpreter (``chroot TREE python3 -m compileall --invalidation-mode
unchecked-hash``: the initramfs has no meaningful mtimes, and nothing is ever recompiled at boot).

Cache layout (default ``/var/cache/provision/live``)::

    .lock                      held for a whole build: trees are never pruned under a reader
    <key[:20]>/tree/           the prepared tree (read-only by convention)
    <key[:20]>/tree.json       key, request key, installed packages, python version, timings, strip counts

A new tree is prepared in ``.new-*`` and renamed into place, so a failed or interrupted preparation
leaves nothing that looks complete. Only the newest ``KEEP_TREES`` trees are kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.builder.debian import installed_packages
from provision.builder.runner import Runner
from provision.live.errors import LiveBuildError
from provision.live.packages import TreeSpec, mmdebstrap_argv
from provision.live.strip import strip_tree

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/var/cache/provision/live")
KEEP_TREES = 2
META = "tree.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PreparedTree:
    """A prepared tree in the cache."""

    root: Path
    key: str
    request_key: str
    packages: dict[str, str]
    python: str  # "3.11"
    created: float
    seconds: float
    strip: dict[str, int] = field(default_factory=dict)
    busybox_links: int = 0
    cached: bool = False  # reused by this build (not prepared now)

    def meta(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "request_key": self.request_key,
            "packages": self.packages,
            "python": self.python,
            "created": self.created,
            "seconds": round(self.seconds, 1),
            "strip": self.strip,
            "busybox_links": self.busybox_links,
        }

    @classmethod
    def load(cls, entry: Path) -> PreparedTree | None:
        try:
            data = json.loads((entry / META).read_text(encoding="utf-8"))
            if not (entry / "tree").is_dir():
                return None
            return cls(
                root=entry / "tree",
                key=str(data["key"]),
                request_key=str(data["request_key"]),
                packages={str(k): str(v) for k, v in data["packages"].items()},
                python=str(data["python"]),
                created=float(data["created"]),
                seconds=float(data["seconds"]),
                strip={str(k): int(v) for k, v in data.get("strip", {}).items()},
                busybox_links=int(data.get("busybox_links", 0)),
                cached=True,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


@contextlib.contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Hold the live cache's lock: one build at a time uses (or prunes) the cached trees."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle = (cache_dir / ".lock").open("a")
    except OSError as exc:
        raise LiveBuildError(f"{cache_dir}: cannot use as live cache ({exc.strerror})", path=str(cache_dir)) from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_trees(cache_dir: Path) -> list[PreparedTree]:
    """The complete trees in the cache, newest first."""
    found = []
    if cache_dir.is_dir():
        for entry in cache_dir.iterdir():
            if entry.is_dir() and not entry.name.startswith("."):
                tree = PreparedTree.load(entry)
                if tree is not None:
                    found.append(tree)
    return sorted(found, key=lambda t: -t.created)


def ensure_tree(spec: TreeSpec, cache_dir: Path, runner: Runner, progress: Progress | None = None) -> PreparedTree:
    """The prepared tree for ``spec`` from the cache, prepared now when missing. Call under ``cache_lock``.

    Without versions (apt could not be asked), the newest tree of the same request is used; none is an error.
    """
    say = progress or (lambda message: None)
    if not spec.versions:
        same = [t for t in cached_trees(cache_dir) if t.request_key == spec.request_key]
        if not same:
            raise LiveBuildError(
                "live: the Debian archive cannot be reached and no cached tree matches the package set",
                step="resolve",
                cache=str(cache_dir),
            )
        say(f"archive unreachable: using the cached tree {same[0].key[:12]} of {time.ctime(same[0].created)}")
        return same[0]
    entry = cache_dir / spec.key[:20]
    tree = PreparedTree.load(entry)
    if tree is not None and tree.key == spec.key:
        say(f"Debian tree: cached ({len(tree.packages)} packages, key {spec.key[:12]})")
        return tree
    say(f"Debian tree: preparing with mmdebstrap ({len(spec.versions)} packages, key {spec.key[:12]})")
    tree = prepare_tree(spec, cache_dir, runner, say)
    prune(cache_dir, keep=KEEP_TREES, current=tree.root.parent)
    return tree


def prepare_tree(spec: TreeSpec, cache_dir: Path, runner: Runner, say: Progress) -> PreparedTree:
    started = time.monotonic()
    staging = cache_dir / f".new-{spec.key[:20]}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        root = staging / "tree"
        runner.step("bootstrap")
        runner.run("bootstrap", mmdebstrap_argv(spec, root))
        runner.step("prepare")
        packages = installed_packages(runner, root, "prepare")
        links = busybox_links(runner, root)
        stats = strip_tree(root)
        python = python_version(root)
        say(f"Debian tree: {len(packages)} packages, {links} busybox links, stripped {stats.bytes / 2**20:.0f} MiB")
        compile_python(runner, root, python)
        tree = PreparedTree(
            root=cache_dir / spec.key[:20] / "tree",
            key=spec.key,
            request_key=spec.request_key,
            packages=packages,
            python=python,
            created=time.time(),
            seconds=time.monotonic() - started,
            strip=stats.to_dict(),
            busybox_links=links,
        )
        (staging / META).write_text(json.dumps(tree.meta(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        final = cache_dir / spec.key[:20]
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"Debian tree: prepared in {tree.seconds:.0f} s")
    return tree


def busybox_links(runner: Runner, root: Path) -> int:
    """Links in /usr/local/bin for the busybox applets no Debian package of the tree provides."""
    done = runner.run("prepare", ["chroot", str(root), "/usr/bin/busybox", "--list"])
    local = root / "usr" / "local" / "bin"
    local.mkdir(parents=True, exist_ok=True)
    count = 0
    for name in sorted(set(done.stdout.split())):
        if "/" in name or name in (".", ".."):
            continue
        if any((root / folder / name).exists() or (root / folder / name).is_symlink() for folder in _BIN_DIRS):
            continue
        (local / name).symlink_to("/usr/bin/busybox")
        count += 1
    return count


_BIN_DIRS = ("usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin")


def python_version(root: Path) -> str:
    """``3.11`` from the tree's ``usr/lib/python3.X`` folder."""
    found = sorted(p.name.removeprefix("python") for p in (root / "usr" / "lib").glob("python3.*") if p.is_dir())
    if not found:
        raise LiveBuildError("live: no usr/lib/python3.* in the tree (python3 not installed?)", step="prepare")
    return found[-1]


def compile_python(runner: Runner, root: Path, python: str) -> None:
    """Compile every Python file of the tree with its own interpreter (unchecked-hash .pyc)."""
    targets = [f"/usr/lib/python{python}", "/usr/lib/python3/dist-packages"]
    argv = ["chroot", str(root), "python3", "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash"]
    done = runner.run("prepare", [*argv, *[t for t in targets if (root / t.lstrip("/")).is_dir()]], check=False)
    if done.returncode != 0:  # a file that does not compile (some dist-packages carry python2 examples)
        log.warning("live: compileall reported errors: %s", (done.stdout + done.stderr).strip()[-2000:])


def prune(cache_dir: Path, *, keep: int, current: Path) -> None:
    """Remove all but the newest ``keep`` trees (never ``current``) and leftover staging folders."""
    trees = cached_trees(cache_dir)
    for tree in trees[keep:]:
        if tree.root.parent != current:
            log.info("live: removing the old cached tree %s", tree.root.parent)
            shutil.rmtree(tree.root.parent, ignore_errors=True)
    for stale in cache_dir.glob(".new-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
