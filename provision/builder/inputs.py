"""A build's inputs, resolved before anything is built: package versions, boot loaders, overlays, digest.

The inputs digest (sha256 of their canonical JSON) is what the nightly rebuild compares with the current
version's provenance: equal digests mean nothing changed, and the build is skipped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.bootfiles import DebCache, Package, PackageMissing
from provision.builder.bootloader import BootPackages
from provision.builder.callback import SCRIPT as CALLBACK_SCRIPT
from provision.builder.callback import UNIT as CALLBACK_UNIT
from provision.builder.debian import packages_to_install
from provision.builder.definition import DebianDefinition, LoadedDefinition, TinyDefinition
from provision.builder.errors import PackageNotFound
from provision.builder.firstboot import SCRIPT as FIRSTBOOT_SCRIPT
from provision.builder.firstboot import UNIT as FIRSTBOOT_UNIT
from provision.builder.overlay import tree_digest
from provision.builder.resolve import ArchiveEntry, ImageApt, machine_archive
from provision.builder.tiny import TinyInputs, fetch_tiny
from provision.builder.tinyinit import INITRAMFS_INIT, ROOT_INIT
from provision.images.index import canonical_json

BUILDER_VERSION = 3  # bump when the same inputs would give a different image (layout, boot chain; 2: reproducible;
# 3: GRUB's menu entry without the label)


def scripts_digest() -> str:
    """sha256 of the scripts the builder puts into images (the tiny image's inits, the first-boot and callback
    services): a change to one of them is a new input, so the next rebuild makes a new version without a
    version bump."""
    texts = (INITRAMFS_INIT, ROOT_INIT, FIRSTBOOT_SCRIPT, FIRSTBOOT_UNIT, CALLBACK_SCRIPT, CALLBACK_UNIT)
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


BOOT_PACKAGES = ("shim-signed", "grub-efi-amd64-signed", "grub-pc-bin")


@dataclass(frozen=True)
class Inputs:
    """What a build of one definition is made of, known before building."""

    definition: LoadedDefinition
    packages: dict[str, str]  # name -> version (debian: apt's simulation; tiny: the unpacked packages)
    boot: BootPackages
    overlays: str  # sha256 of the overlay trees ("" when none)
    suite: str
    archive: tuple[ArchiveEntry, ...] = ()  # the image's apt archive (debian images)
    tiny: TinyInputs | None = field(default=None, compare=False)

    def summary(self) -> dict[str, Any]:
        return {
            "builder_version": BUILDER_VERSION,
            "builder_scripts_sha256": scripts_digest(),
            "builder": self.definition.spec.builder,
            "definition_sha256": self.definition.sha256,
            "overlays_sha256": self.overlays,
            "suite": self.suite,
            "archive": [entry.line() for entry in self.archive],
            "packages": self.packages,
            "boot": self.boot.versions(),
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.summary())).hexdigest()

    @property
    def label(self) -> str:
        """What the image calls itself (the tiny image prints it): name and the inputs digest."""
        return f"{self.definition.name}-{self.digest[:12]}"


def boot_packages(cache: DebCache, image: str) -> BootPackages:
    def get(name: str) -> Package:
        try:
            return cache.get(name)
        except PackageMissing as exc:
            raise PackageNotFound(name, image=image, step="resolve", suite=exc.suite) from exc

    shim, grub_efi, grub_pc = (get(name) for name in BOOT_PACKAGES)
    return BootPackages(shim=shim, grub_efi=grub_efi, grub_pc=grub_pc)


def debian_archive(spec: DebianDefinition, cache: DebCache, etc_apt: Path = Path("/etc/apt")) -> list[ArchiveEntry]:
    suite = spec.suite or cache.codename
    return machine_archive(suite, spec.components, cache.codename, etc_apt)


def resolve_inputs(loaded: LoadedDefinition, cache: DebCache, *, etc_apt: Path = Path("/etc/apt")) -> Inputs:
    """Ask apt (through the Debian package cache) what a build would use. PackageNotFound names a package
    that is not there; AptFailed (retryable) when the archive cannot be reached and no lists are cached."""
    spec = loaded.spec
    overlays = tree_digest(loaded.overlay_dirs())
    with cache.locked():
        boot = boot_packages(cache, spec.name)
        if isinstance(spec, TinyDefinition):
            tiny = fetch_tiny(spec, cache)
            return Inputs(loaded, tiny.versions(), boot, overlays, cache.codename, tiny=tiny)
        archive = debian_archive(spec, cache, etc_apt)
        apt = ImageApt(cache.cache_dir, archive)
        apt.base.mkdir(parents=True, exist_ok=True)
        apt.update(cache.lists_max_age)
        packages = apt.simulate(
            packages_to_install(spec), variant=spec.variant, recommends=spec.install_recommends, image=spec.name
        )
    return Inputs(loaded, packages, boot, overlays, archive[0].suite, archive=tuple(archive))
