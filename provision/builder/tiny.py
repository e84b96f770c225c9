"""The tiny image's root tree: busybox, Debian's signed kernel, an initramfs with the disk/NIC modules.

Everything comes from the Debian package cache (``DebCache``: apt on a private configuration, ``dpkg -x``),
so once the cache is warm the tiny image builds offline in seconds. ``extra_debs`` are unpacked into the
root as they are (no maintainer scripts): the dedup test adds Debian's ``hello`` that way.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from provision.bootfiles import DebCache, Package, PackageMissing, kernel_modules_dir, kernel_release
from provision.builder.definition import TinyDefinition
from provision.builder.errors import ImageBuildError, PackageNotFound
from provision.builder.tinyinit import INITRAMFS_INIT, ROOT_INIT
from provision.initramfs import UDHCPC_SCRIPT, InitrdError, busybox_applets, busybox_initramfs

log = logging.getLogger(__name__)

BUSYBOX = "busybox-static"
STAMP = ".provision-unpacked"  # DebCache's marker file in each unpacked tree
ZSTD_LEVEL = 10  # Debian's kernel reads zstd initramfs (initramfs-tools' default); gzip -9 took 2.5 s
INITRAMFS_DIRS = ("dev", "proc", "sys", "newroot", "etc", "bin", "sbin", "usr/bin", "usr/sbin")
ROOT_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "tmp", "root", "mnt")


@dataclass(frozen=True)
class TinyInputs:
    """The unpacked packages a tiny image is made of."""

    kernel: Package
    busybox: Package
    extras: tuple[Package, ...]

    def versions(self) -> dict[str, str]:
        return {p.name: p.version for p in (self.kernel, self.busybox, *self.extras)}


@dataclass(frozen=True)
class StagedRoot:
    """A root tree ready for ``mke2fs -d`` and what GRUB must boot in it."""

    tree: Path
    kernel: str  # absolute path inside the root file system
    initrd: str
    source_date_epoch: int | None = None  # Debian: the newest package's changelog date

    def epoch(self) -> int:
        """The build's SOURCE_DATE_EPOCH, a time stamp that only changes with the inputs: given (Debian
        images), else the kernel file's (from its package)."""
        if self.source_date_epoch is not None:
            return self.source_date_epoch
        return int((self.tree / self.kernel.lstrip("/")).stat().st_mtime)


def fetch_tiny(spec: TinyDefinition, cache: DebCache, *, step: str = "resolve") -> TinyInputs:
    """Fetch (once) and unpack the tiny image's packages. PackageNotFound names a missing one."""
    name = spec.name

    def get(package: str) -> Package:
        try:
            return cache.get(package)
        except PackageMissing as exc:
            raise PackageNotFound(package, image=name, step=step, suite=exc.suite) from exc

    try:
        kernel = cache.kernel()
    except PackageMissing as exc:
        raise PackageNotFound(exc.package, image=name, step=step, suite=exc.suite) from exc
    return TinyInputs(kernel=kernel, busybox=get(BUSYBOX), extras=tuple(get(p) for p in spec.extra_debs))


def build_initramfs(out: Path, kernel_modules: Path, busybox: Path, modules: Sequence[str]) -> list[str]:
    """A zstd cpio with busybox, ``modules`` (and their dependencies, in load order) and INITRAMFS_INIT: the
    toolkit's ``busybox_initramfs`` without the udhcpc script (the root file system has it)."""
    built = busybox_initramfs(kernel_modules, busybox, modules, INITRAMFS_INIT, dirs=INITRAMFS_DIRS, udhcpc=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(built.archive))
    return built.modules


def _install_busybox(root: Path, busybox: Path) -> None:
    target = root / "bin" / "busybox"
    shutil.copyfile(busybox, target)
    target.chmod(0o755)
    for applet in busybox_applets(busybox):
        rel = applet.strip("/")
        if rel in ("bin/busybox", "sbin/init"):
            continue
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")


def _unpack_extra(root: Path, package: Package) -> None:
    """Copy an unpacked package tree into the root (its own files win over busybox links)."""
    for path in sorted(package.root.rglob("*")):
        rel = path.relative_to(package.root)
        if rel.parts[0] == STAMP:
            continue
        target = root / rel
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        if path.is_symlink():
            target.symlink_to(path.readlink())
        else:
            shutil.copy2(path, target)


def stage_tiny(spec: TinyDefinition, inputs: TinyInputs, tree: Path, *, label: str) -> StagedRoot:
    """Lay out the tiny root tree in ``tree`` (created empty)."""
    if tree.exists():
        shutil.rmtree(tree)
    for name in ROOT_DIRS:
        (tree / name).mkdir(parents=True, exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    _install_busybox(tree, inputs.busybox.file("/bin/busybox"))
    init = tree / "sbin" / "init"
    init.write_text(ROOT_INIT, encoding="utf-8")
    init.chmod(0o755)
    etc = tree / "etc"
    (etc / "udhcpc.script").write_text(UDHCPC_SCRIPT, encoding="utf-8")
    (etc / "udhcpc.script").chmod(0o755)
    (etc / "hostname").write_text(f"{spec.name}\n", encoding="utf-8")
    (etc / "machine-id").write_text("", encoding="utf-8")  # empty: a new one on first boot
    (etc / "provision").mkdir()
    (etc / "provision" / "image.env").write_text(
        f"PROVISION_IMAGE={spec.name}\nPROVISION_LABEL={label}\n", encoding="utf-8"
    )
    release = kernel_release(inputs.kernel)
    boot = tree / "boot"
    boot.mkdir()
    kernel = f"/boot/vmlinuz-{release}"
    initrd = f"/boot/initrd.img-{release}"
    shutil.copy2(inputs.kernel.file(kernel), tree / kernel.lstrip("/"))
    try:
        order = build_initramfs(
            tree / initrd.lstrip("/"),
            kernel_modules_dir(inputs.kernel),
            inputs.busybox.file("/bin/busybox"),
            spec.modules,
        )
    except InitrdError as exc:
        raise ImageBuildError(f"image {spec.name}: initramfs: {exc}", image=spec.name, step="rootfs") from exc
    log.info("tiny %s: kernel %s, initramfs modules %s", spec.name, release, " ".join(order))
    for package in inputs.extras:
        _unpack_extra(tree, package)
    return StagedRoot(tree, kernel, initrd)
