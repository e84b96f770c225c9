"""The boot root: boot loaders and kernel copied out of the unpacked packages, with a MANIFEST.json."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from provision.bootfiles.debcache import DEFAULT_CACHE, DebCache, kernel_modules_dir, kernel_release

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class BootFile:
    """One file of the boot root and where it came from."""

    path: str  # relative to the boot root
    package: str
    version: str
    suite: str
    source: str  # path inside the package
    sha256: str
    size: int


@dataclass(frozen=True)
class BootRoot:
    """What install_boot_root laid out, plus the unpacked trees a live environment builder needs."""

    dest: Path
    files: tuple[BootFile, ...]
    kernel_release: str
    kernel_modules: Path  # /lib/modules/<release> of the unpacked kernel
    busybox: Path  # the static busybox binary
    changed: tuple[str, ...] = field(default=())  # files written by this call (others were up to date)


# (boot root path, package key, path inside the package)
LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("undionly.kpxe", "ipxe", "/usr/lib/ipxe/undionly.kpxe"),
    ("ipxe.efi", "ipxe", "/usr/lib/ipxe/ipxe.efi"),
    ("snponly.efi", "ipxe", "/usr/lib/ipxe/snponly.efi"),
    ("shimx64.efi", "shim-signed", "/usr/lib/shim/shimx64.efi.signed"),
    ("grubx64.efi", "grub-efi-amd64-signed", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
    ("live/vmlinuz", "kernel", "/boot/vmlinuz-{release}"),
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_dict(files: Iterable[BootFile]) -> dict[str, object]:
    """The MANIFEST.json content: packages (name -> version, suite) and files (path -> origin, digest)."""
    ordered = sorted(files, key=lambda f: f.path)
    packages = {f.package: {"version": f.version, "suite": f.suite} for f in ordered}
    return {
        "format": 1,
        "packages": dict(sorted(packages.items())),
        "files": {
            f.path: {"package": f.package, "source": f.source, "sha256": f.sha256, "size": f.size} for f in ordered
        },
    }


def write_manifest(dest: Path, files: Iterable[BootFile]) -> Path:
    path = dest / MANIFEST
    _write_atomic(path, (json.dumps(manifest_dict(files), indent=2) + "\n").encode())
    return path


def read_manifest(dest: Path) -> list[BootFile]:
    """The files recorded in ``dest/MANIFEST.json`` (empty when absent or unreadable)."""
    try:
        data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        packages = data["packages"]
        return [
            BootFile(
                path=path,
                package=entry["package"],
                version=packages[entry["package"]]["version"],
                suite=packages[entry["package"]]["suite"],
                source=entry["source"],
                sha256=entry["sha256"],
                size=int(entry["size"]),
            )
            for path, entry in data["files"].items()
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(path)


def install_boot_root(dest: Path, *, cache: DebCache | None = None, cache_dir: Path = DEFAULT_CACHE) -> BootRoot:
    """Fetch the packages (once) and lay out ``dest``: iPXE, shim + signed GRUB, the signed kernel.

    Files already identical (by sha256) are left alone. ``dest/MANIFEST.json`` records every file's
    package, version and digest. Raises PackageMissing naming the package when one is not available.
    """
    cache = cache or DebCache(cache_dir)
    with cache.locked():
        return _install(dest, cache)


def _install(dest: Path, cache: DebCache) -> BootRoot:
    kernel = cache.kernel()
    release = kernel_release(kernel)
    packages = {
        "ipxe": cache.ipxe(),
        "shim-signed": cache.get("shim-signed"),
        "grub-efi-amd64-signed": cache.get("grub-efi-amd64-signed"),
        "kernel": kernel,
    }
    busybox_pkg = cache.get("busybox-static")
    busybox = busybox_pkg.file("/bin/busybox")
    files: list[BootFile] = []
    changed: list[str] = []
    for rel, key, inner in LAYOUT:
        package = packages[key]
        source_path = inner.format(release=release)
        src = package.file(source_path)
        digest = sha256_file(src)
        target = dest / rel
        if not (target.is_file() and sha256_file(target) == digest):
            _write_atomic(target, src.read_bytes())
            changed.append(rel)
        files.append(
            BootFile(rel, package.name, package.version, package.suite, source_path, digest, src.stat().st_size)
        )
    write_manifest(dest, files)
    for f in files:
        log.info("%-14s %s %s (%s) sha256 %s", f.path, f.package, f.version, f.suite, f.sha256[:16])
    log.info("boot root %s: %d files, %d updated", dest, len(files), len(changed))
    return BootRoot(dest, tuple(files), release, kernel_modules_dir(kernel), busybox, tuple(changed))


def qemu_roms(cache: DebCache | None = None, *, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The folder of NIC option ROMs (``efi-virtio.rom``, ``pxe-e1000.rom``...) of the iPXE suite's ipxe-qemu.

    For lab PCs (``Lab.add_pc(rom=...)``): Debian 12's own ROMs are iPXE 2019, which waits ~13 s after DHCP.
    """
    cache = cache or DebCache(cache_dir)
    package = cache.get("ipxe-qemu", cache.ipxe_suite)
    return package.file("/usr/share/qemu/efi-virtio.rom").parent
