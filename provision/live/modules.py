"""Which kernel modules go into the live environment, and their ``modules.dep`` / ``modules.alias``.

The modules come from the same unpacked Debian kernel package as ``live/vmlinuz`` (``provision.bootfiles``),
so the release matches exactly and every module carries Debian's signature: with Secure Boot on, the kernel
is locked down and loads nothing else (no DKMS here). Selected are whole driver folders (``TREES``) plus
named modules (``MODULES``), then everything they need: ``depends=`` and ``softdep=`` of each module's
``.modinfo`` (read from the ELF file, as depmod does; e.g. r8169 -> realtek PHY, ext4 -> crc32c). Names
built into the kernel are skipped. ``firmware=`` names are collected for the firmware copy.

``stage_modules`` copies the selection under ``<dest>/lib/modules/<release>/`` with the kernel's
``modules.builtin*`` and a filtered ``modules.order``, then runs ``depmod -b`` so ``modprobe`` in the
live environment finds modules by alias (the /init loads devices by their ``modalias``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provision.builder.runner import Runner
from provision.initramfs import ModuleTree, modinfo, module_name, read_module
from provision.live.errors import LiveBuildError

log = logging.getLogger(__name__)

# Whole folders under kernel/ (all their modules).
TREES: tuple[str, ...] = (
    "drivers/ata",  # ahci, ata_piix, libata, the PATA/SATA host drivers
    "drivers/usb/host",  # xhci, ehci, ohci, uhci
    "drivers/usb/storage",  # usb-storage, uas
    "drivers/net/ethernet/realtek",  # r8169, 8139too
    "drivers/virtio",
    "fs/ext4",
    "fs/fat",
    "fs/nls",
)
# Named modules (with whatever they need).
MODULES: tuple[str, ...] = (
    # NICs of business desktops and laptops
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "tg3",
    "bnx2",
    "b44",
    "alx",
    "atl1c",
    "atl1e",
    "sky2",
    # USB network adapters and docks
    "r8152",
    "asix",
    "ax88179_178a",
    "cdc_ether",
    "cdc_ncm",
    # disks: NVMe (PCIe only: not the fabrics transports), SCSI disk layer, virtio (QEMU), eMMC
    "nvme",
    "sd_mod",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_rng",
    "mmc_block",
    "sdhci_pci",
    "sdhci_acpi",
    "loop",
    # file systems and their checksums
    "ext4",
    "crc32c_generic",
    "crc32c_intel",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    "efivarfs",
    # keyboards on the technician's console
    "usbhid",
    "hid_generic",
)


@dataclass(frozen=True)
class ModuleSelection:
    """The modules of one kernel release chosen for the live environment."""

    release: str
    paths: dict[str, str]  # name -> path relative to /lib/modules/<release>
    firmware: tuple[str, ...]  # firmware files the modules may ask for (relative to /lib/firmware)
    missing: tuple[str, ...] = field(default=())  # named modules the kernel has neither as module nor built in

    @property
    def names(self) -> list[str]:
        return sorted(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def _softdeps(values: Sequence[str]) -> list[str]:
    """Module names of ``softdep=pre: a b post: c`` values."""
    names: list[str] = []
    for value in values:
        names += [word for word in value.split() if not word.endswith(":")]
    return names


def select_modules(tree: ModuleTree, trees: Sequence[str] = TREES, modules: Sequence[str] = MODULES) -> ModuleSelection:
    """The folders ``trees`` and the modules ``modules`` of ``tree``, with dependencies and soft dependencies.

    A named module missing from the kernel (neither a module nor built in) is reported in ``missing`` and
    logged, not fatal: kernels differ in what they build as modules. A folder with no module is an error
    (a typo would silently drop a whole driver family).
    """
    wanted: list[str] = []
    for folder in trees:
        prefix = "kernel/" + folder.strip("/") + "/"
        found = [name for name, rel in sorted(tree.paths.items()) if rel.startswith(prefix)]
        if not found:
            raise LiveBuildError(f"live: no kernel modules under {prefix} in {tree.root}", step="modules", tree=folder)
        wanted += found
    missing: list[str] = []
    for raw in modules:
        name = module_name(raw)
        if name in tree.paths:
            wanted.append(name)
        elif name not in tree.builtin:
            missing.append(name)
    chosen: dict[str, str] = {}
    firmware: set[str] = set()
    pending = list(dict.fromkeys(wanted))
    while pending:
        name = pending.pop()
        if name in chosen:
            continue
        if name not in tree.paths:
            if name not in tree.builtin:
                log.debug("live: %s (a dependency) is not in %s: skipped", name, tree.release)
            continue
        chosen[name] = tree.paths[name]
        info = modinfo(read_module(tree.root / tree.paths[name]))
        deps = [d for value in info.get("depends", []) for d in value.split(",") if d]
        firmware.update(f.strip() for f in info.get("firmware", []) if f.strip())
        pending += [module_name(d) for d in [*deps, *_softdeps(info.get("softdep", []))]]
    for name in missing:
        log.warning("live: module %s is not in kernel %s (neither a module nor built in)", name, tree.release)
    return ModuleSelection(tree.release, dict(sorted(chosen.items())), tuple(sorted(firmware)), tuple(missing))


def stage_modules(selection: ModuleSelection, tree: ModuleTree, dest: Path, runner: Runner) -> Path:
    """Copy the selection to ``dest/lib/modules/<release>`` and run ``depmod -b dest``; that folder."""
    if shutil.which("depmod") is None:
        raise LiveBuildError("live: depmod not found (install the Debian package kmod)", step="modules", tool="depmod")
    target = dest / "lib" / "modules" / selection.release
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for rel in selection.paths.values():
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree.root / rel, out)
    for extra in ("modules.builtin", "modules.builtin.modinfo"):
        if (tree.root / extra).is_file():
            shutil.copyfile(tree.root / extra, target / extra)
    order = tree.root / "modules.order"
    if order.is_file():
        wanted = set(selection.paths.values())
        lines = order.read_text(encoding="utf-8").splitlines()
        (target / "modules.order").write_text("".join(f"{line}\n" for line in lines if line in wanted))
    runner.run("modules", ["depmod", "-b", str(dest), selection.release])
    for index in ("modules.dep", "modules.dep.bin", "modules.alias.bin"):
        if not (target / index).is_file():
            raise LiveBuildError(f"live: depmod wrote no {index} in {target}", step="modules", path=str(target))
    return target
