"""``provision live build``: Debian's signed kernel and an initramfs holding the agent, from Debian packages.

Steps (each timed in ``live.json``):

1. ``resolve``: the kernel from ``provision.bootfiles`` (``DebCache.kernel()``: the package ``live/vmlinuz``
   of the boot root comes from, so module release and kernel match), the archive and the versions apt
   would install (packages.py).
2. ``tree``: the prepared Debian tree, from the cache or made now (bootstrap.py).
3. ``modules``: the driver selection, copied out of the same kernel package, ``depmod -b`` (modules.py).
4. ``agent``: ``provision.agent`` and its imports, checked and compiled (payload.py).
5. ``pack``: tree + modules + firmware + agent + /init + the authorized key -> ``initrd.img`` (pack.py).
6. ``vmlinuz`` and ``live.json`` next to it. Each file is written to a temporary name and renamed.

The inputs (tree key, kernel package and version, module lists, agent digest, scripts, key, compression)
are hashed; ``ensure_live`` / ``build_live(force=False)`` return the existing output when ``live.json``
records the same inputs and both files still match their sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.bootfiles import DEFAULT_CACHE as DEB_CACHE
from provision.bootfiles import DebCache, Package, kernel_modules_dir, kernel_release
from provision.builder.runner import BuildLog, Runner
from provision.initramfs import ModuleTree
from provision.live import initscript, modules, packages, payload
from provision.live.bootstrap import DEFAULT_CACHE, PreparedTree, cache_lock, cached_trees, ensure_tree
from provision.live.errors import LIVE, LiveBuildError
from provision.live.manifest import (
    INITRD,
    SIZE_GOAL,
    VMLINUZ,
    FileInfo,
    LiveManifest,
    output_intact,
    read_manifest,
    write_manifest,
)
from provision.live.pack import DEFAULT_LEVEL, Item, pack_initrd, write_atomic
from provision.live.strip import KEEP, STRIP
from provision.sshkeys import ensure_server_key, fingerprint, parse_public_key
from provision.workdirs import private_dir

log = logging.getLogger(__name__)

BUILD_FORMAT = 1  # bump when the same inputs would give a different initramfs
DEFAULT_LOG_DIR = Path("/var/log/provision/live-builds")
DEFAULT_STATE = Path("/var/lib/provision")  # the server's default state_dir (its SSH key: ssh/id_ed25519)
BUILDS = "builds"  # <cache>/builds/<inputs[:20]>/: copies of recent outputs, for ensure_live
KEEP_BUILDS = 3
DEFAULT_WORKDIR = Path("/var/tmp/provision-live")  # nosec B108  # noqa: S108 - private_dir(): 0700, ours, no symlink
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LiveResult:
    out: Path
    manifest: LiveManifest
    reused: bool  # the existing output matched the inputs: nothing was built
    log: Path | None = None

    @property
    def vmlinuz(self) -> Path:
        return self.out / VMLINUZ

    @property
    def initrd(self) -> Path:
        return self.out / INITRD


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def scripts_digest() -> str:
    return _digest([initscript.INIT, initscript.FUNCTIONS, initscript.UDHCPC])


def tree_rules_digest() -> str:
    return _digest({"strip": list(STRIP), "keep": list(KEEP), "required": list(packages.REQUIRED_PROGRAMS)})


def build_inputs(tree_key: str, kernel: Package, agent_digest: str, key_line: str, level: int) -> dict[str, Any]:
    return {
        "format": BUILD_FORMAT,
        "tree": tree_key,
        "kernel": {"package": kernel.name, "version": kernel.version},
        "modules": {"trees": list(modules.TREES), "modules": list(modules.MODULES)},
        "agent": agent_digest,
        "scripts": scripts_digest(),
        "authorized_key": key_line,
        "compression": {"zstd": level},
    }


@contextmanager
def _timed(steps: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        steps[name] = steps.get(name, 0.0) + time.monotonic() - started


def live_missing() -> list[str]:
    """What this machine lacks to build the live environment (empty: ready)."""
    missing = [] if os.geteuid() == 0 else ["root (mmdebstrap in root mode, chroot)"]
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("depmod", "kmod"), ("chroot", "coreutils")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    return missing


def preflight() -> None:
    missing = live_missing()
    if missing:
        raise LiveBuildError(f"live: building needs {'; '.join(missing)}", step="preflight", missing=missing)


def build_live(
    out: Path,
    authorized_key: str | None = None,
    *,
    force: bool = False,
    state_dir: Path = DEFAULT_STATE,
    deb_cache: DebCache | None = None,
    deb_cache_dir: Path = DEB_CACHE,
    cache_dir: Path = DEFAULT_CACHE,
    workdir: Path = DEFAULT_WORKDIR,
    log_dir: Path | None = DEFAULT_LOG_DIR,
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
    etc_apt: Path = Path("/etc/apt"),
    suite: str | None = None,
) -> LiveResult:
    """Build ``out/vmlinuz``, ``out/initrd.img`` and ``out/live.json`` (or reuse them, see the module doc).

    ``authorized_key`` is the one OpenSSH public key line the live environment trusts; by default the
    server's own key (``ensure_server_key(state_dir)``, made on first use). Unless ``force``, an output
    with the same inputs is reused: the one in ``out``, else a copy of an earlier build kept in the cache.
    Raises LiveBuildError (and the image builder's StepFailed / ToolMissing for commands) on failure; the
    previous output then stays as it was.
    """
    say = progress or (lambda message: None)
    started = time.monotonic()
    steps: dict[str, float] = {}
    if authorized_key is None:
        authorized_key = ensure_server_key(state_dir).public_line
    key_line = parse_public_key(authorized_key, source="authorized key")
    preflight()
    deb_cache = deb_cache or DebCache(deb_cache_dir, etc_apt=etc_apt)
    runner = Runner()
    build_log = BuildLog(log_dir / f"live-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.log" if log_dir else None)
    runner.bind(LIVE, build_log)
    try:
        with _timed(steps, "resolve"):
            say("resolving the kernel and the package versions")
            with deb_cache.locked():
                kernel = deb_cache.kernel()
                suite = suite or deb_cache.codename
                archive = packages.live_archive(suite, deb_cache.codename, etc_apt)
                apt = packages.LiveApt(deb_cache.cache_dir, archive)
                versions = packages.resolve_versions(apt, packages.all_packages(), deb_cache.lists_max_age)
            spec = packages.TreeSpec(
                suite,
                tuple(archive),
                tuple(packages.all_packages()),
                tuple(sorted((versions or {}).items())),
                rules=tree_rules_digest(),
            )
            files = payload.agent_files()
            absent = payload.required_sources(files)
            if absent:
                raise LiveBuildError(f"live: the agent lacks {', '.join(absent)}", step="agent", missing=absent)
            agent_digest = payload.files_digest(files)
        with cache_lock(cache_dir):
            tree_key = spec.key if versions else _offline_tree_key(spec, cache_dir)
            inputs = _digest(build_inputs(tree_key, kernel, agent_digest, key_line, level))
            if not force:
                reused = _reuse(out, inputs, cache_dir, say)
                if reused is not None:
                    return LiveResult(out, reused, True, build_log.path)
            with _timed(steps, "tree"):
                tree = ensure_tree(spec, cache_dir, runner, say)
            manifest = _build(
                out, tree, kernel, files, agent_digest, key_line, inputs, level, workdir, runner, say, steps
            )
            manifest = dataclasses.replace(manifest, build_seconds=time.monotonic() - started, steps=steps)
            write_manifest(out, manifest)
            _keep_build(out, manifest, cache_dir)
    finally:
        build_log.close()
    mib = 2**20
    say(
        f"built {out}: vmlinuz {manifest.vmlinuz.size / mib:.1f} MiB + initrd.img {manifest.initrd.size / mib:.1f} MiB"
        f" = {manifest.total_size / mib:.1f} MiB (goal {SIZE_GOAL / mib:.0f} MiB) in {manifest.build_seconds:.0f} s"
    )
    if not manifest.within_goal:
        log.warning("live: %s is %.1f MiB, over the %d MiB goal", out, manifest.total_size / 2**20, SIZE_GOAL >> 20)
    return LiveResult(out, manifest, False, build_log.path)


def ensure_live(out: Path, authorized_key: str | None = None, **options: Any) -> LiveResult:
    """The live environment in ``out``, built only when its inputs changed: an up-to-date ``out`` is left
    alone, an earlier identical build is copied from the cache. Tests (and CI runs) share builds this way.
    Options: those of ``build_live`` (``force`` is ignored)."""
    options.pop("force", None)
    return build_live(out, authorized_key, force=False, **options)


def _reuse(out: Path, inputs: str, cache_dir: Path, say: Progress) -> LiveManifest | None:
    """The manifest of an output with these inputs: ``out`` itself, or a kept build copied into ``out``."""
    previous = read_manifest(out)
    if previous is not None and previous.inputs == inputs and output_intact(out, previous):
        say(f"up to date: {out} (inputs {inputs[:12]})")
        return previous
    kept = cache_dir / BUILDS / inputs[:20]
    manifest = read_manifest(kept)
    if manifest is None or manifest.inputs != inputs or not output_intact(kept, manifest):
        return None
    for name in (VMLINUZ, INITRD):
        with (kept / name).open("rb") as handle:
            write_atomic(out / name, handle)
    write_manifest(out, manifest)
    say(f"copied the identical build {inputs[:12]} from {kept}")
    return manifest


def _keep_build(out: Path, manifest: LiveManifest, cache_dir: Path) -> None:
    """Keep a copy of this build in the cache (hard links when possible), and only the newest KEEP_BUILDS."""
    kept = cache_dir / BUILDS / manifest.inputs[:20]
    staging = kept.with_name(f".{kept.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in (VMLINUZ, INITRD):
        try:
            os.link(out / name, staging / name)
        except OSError:
            shutil.copyfile(out / name, staging / name)
    write_manifest(staging, manifest)
    shutil.rmtree(kept, ignore_errors=True)
    staging.rename(kept)
    builds = sorted((p for p in kept.parent.iterdir() if not p.name.startswith(".")), key=lambda p: -p.stat().st_mtime)
    for old in builds[KEEP_BUILDS:]:
        shutil.rmtree(old, ignore_errors=True)


def _offline_tree_key(spec: packages.TreeSpec, cache_dir: Path) -> str:
    same = [t for t in cached_trees(cache_dir) if t.request_key == spec.request_key]
    if not same:
        raise LiveBuildError(
            "live: the Debian archive cannot be reached and no cached tree matches the package set", step="resolve"
        )
    return same[0].key


def _build(
    out: Path,
    tree: PreparedTree,
    kernel: Package,
    files: dict[str, Path],
    agent_digest: str,
    key_line: str,
    inputs: str,
    level: int,
    workdir: Path,
    runner: Runner,
    say: Progress,
    steps: dict[str, float],
) -> LiveManifest:
    missing = [rel for rel in packages.REQUIRED_PROGRAMS if not os.path.lexists(tree.root / rel)]
    if missing:
        raise LiveBuildError(f"live: the tree lacks {', '.join(missing)}", step="tree", missing=missing)
    release = kernel_release(kernel)
    private_dir(workdir)
    work = Path(tempfile.mkdtemp(prefix="provision-live-", dir=workdir))
    try:
        with _timed(steps, "modules"):
            ktree = ModuleTree(kernel_modules_dir(kernel))
            selection = modules.select_modules(ktree)
            staged = modules.stage_modules(selection, ktree, work / "modules", runner)
            say(f"modules: {len(selection)} of kernel {release} ({len(selection.firmware)} firmware names)")
        with _timed(steps, "agent"):
            agent_dir = work / "agent"
            staged_agent = payload.stage_agent(files, tree.root, agent_dir, runner)
            say(f"agent: {len(files)} source files ({agent_digest[:12]})")
        items: dict[str, Item] = {
            "dev/console": Item("char", 0o600, rdev=(5, 1)),
            "dev/null": Item("char", 0o666, rdev=(1, 3)),
            "root": Item("dir", 0o700),
            "root/.ssh": Item("dir", 0o700),
            "root/.ssh/authorized_keys": Item.text(key_line + "\n", 0o600),
            "etc/hostname": Item.text("provision-live\n"),
        }
        base = f"usr/lib/modules/{release}"
        items.update({f"{base}/{p.relative_to(staged).as_posix()}": Item.copy(p, 0o644) for p in _files(staged)})
        firmware = _firmware_items(tree.root, selection.firmware)
        items.update(firmware)
        items.update({f"{initscript.AGENT_ROOT}/{rel}": Item.copy(agent_dir / rel, 0o644) for rel in staged_agent})
        label = f"tree-{tree.key[:12]}"
        for rel, (text, mode) in initscript.scripts(release, label).items():
            items[rel] = Item.text(text, mode)
        info = {"kernel": release, "tree": tree.key, "agent": agent_digest, "inputs": inputs}
        items["etc/provision/live.json"] = Item.text(json.dumps(info, indent=2) + "\n")
        with _timed(steps, "pack"):
            say(f"packing the initramfs (zstd level {level})")
            packed = pack_initrd(out / INITRD, tree.root, items, exclude=_excluded, level=level)
        vmlinuz = kernel.file(f"/boot/vmlinuz-{release}")
        with vmlinuz.open("rb") as handle:
            write_atomic(out / VMLINUZ, handle)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return LiveManifest(
        inputs=inputs,
        kernel_release=release,
        kernel_package=kernel.name,
        kernel_version=kernel.version,
        vmlinuz=FileInfo.of(out / VMLINUZ),
        initrd=FileInfo.of(out / INITRD),
        initrd_uncompressed=packed.uncompressed,
        compression=f"zstd-{level}",
        packages=tree.packages,
        modules=selection.names,
        firmware=sorted(rel.removeprefix("usr/lib/firmware/") for rel in firmware),
        agent_sha256=agent_digest,
        agent_files=sorted(files),
        authorized_key=fingerprint(key_line),
        tree_key=tree.key,
        tree_cached=tree.cached,
        build_seconds=0.0,
    )


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _excluded(rel: str) -> bool:
    """Tree paths replaced by this build's own: firmware (only the selected files return), modules, /tmp."""
    return rel.startswith(("usr/lib/firmware/", "usr/lib/modules/", "tmp/")) or rel in ("init",)


def _firmware_items(root: Path, names: tuple[str, ...]) -> dict[str, Item]:
    """The firmware files the modules name that the tree has (links resolved inside the firmware folder)."""
    base = (root / "usr" / "lib" / "firmware").resolve()
    items: dict[str, Item] = {}
    for name in names:
        path = (base / name).resolve()
        if path.is_relative_to(base) and path.is_file():
            items[f"usr/lib/firmware/{name}"] = Item.copy(path, 0o644)
    return items
