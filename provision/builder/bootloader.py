"""Boot loaders of every image: GRUB for BIOS, shim + Debian's signed GRUB for UEFI (Secure Boot left on).

- BIOS: the i386-pc modules of the ``grub-pc-bin`` package from the Debian package cache (so the image
  records which GRUB it carries) go into the root's ``/boot/grub/i386-pc``; ``grub-mkimage`` makes a
  core.img that finds the root file system by UUID; ``biosboot`` embeds it in the BIOS boot partition
  and writes boot.img into the MBR, as ``grub-install --target=i386-pc`` would on a block device.
- UEFI: on the ESP, ``EFI/BOOT/BOOTX64.EFI`` is shim (``shim-signed``, signed by Microsoft's UEFI CA) and
  ``EFI/BOOT/grubx64.efi`` is Debian's signed monolithic GRUB (``grub-efi-amd64-signed``, not the netboot
  one). That GRUB's built-in prefix is ``/EFI/debian`` on the device it was loaded from, so
  ``EFI/debian/grub.cfg`` finds the root file system by UUID and hands over to ``/boot/grub/grub.cfg``.
  GRUB checks the kernel through shim: Debian's signed kernel boots, with Secure Boot on or off.

Both firmwares end in the same ``/boot/grub/grub.cfg``. Every word put into it is checked by the
definition schema (kernel arguments) or made here (UUIDs, paths).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from provision.bootfiles import Package
from provision.builder import biosboot
from provision.builder.disk import BIOS_SIZE, FIRST, SECTOR, DiskLayout, esp_image
from provision.builder.runner import Runner

SHIM = "/usr/lib/shim/shimx64.efi.signed"
GRUB_EFI = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
GRUB_PC_DIR = "/usr/lib/grub/i386-pc"
EFI_PREFIX = "EFI/debian"  # built into grubx64.efi.signed (strings: /EFI/debian)
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}
CORE_MODULES = ("biosdisk", "part_gpt", "ext2", "search_fs_uuid")  # enough to reach /boot/grub by UUID


@dataclass(frozen=True)
class BootPackages:
    """The unpacked boot loader packages (from ``DebCache``)."""

    shim: Package  # shim-signed
    grub_efi: Package  # grub-efi-amd64-signed
    grub_pc: Package  # grub-pc-bin

    def versions(self) -> dict[str, str]:
        return {p.name: p.version for p in (self.shim, self.grub_efi, self.grub_pc)}

    def epoch(self) -> int:
        """The newest of the boot loader files (package build dates: they move only with these versions): the
        SOURCE_DATE_EPOCH a Debian bootstrap runs with, known before it."""
        files = (self.shim.file(SHIM), self.grub_efi.file(GRUB_EFI), self.grub_pc.file(f"{GRUB_PC_DIR}/boot.img"))
        return max(int(path.stat().st_mtime) for path in files)

    def grub_pc_dir(self) -> Path:
        folder = self.grub_pc.root / GRUB_PC_DIR.lstrip("/")
        self.grub_pc.file(f"{GRUB_PC_DIR}/boot.img")  # PackageMissing if the package lacks it
        return folder


@dataclass(frozen=True)
class BootEntry:
    """What ``/boot/grub/grub.cfg`` boots: paths on the root file system and kernel arguments."""

    title: str
    kernel: str  # e.g. /boot/vmlinuz-6.1.0-28-amd64
    initrd: str
    cmdline: str  # after root=UUID=... ro
    timeout: int
    serial: bool


def grub_cfg(entry: BootEntry, layout: DiskLayout) -> str:
    """The one GRUB configuration of the image (BIOS and UEFI)."""
    lines = [
        f"# GRUB configuration of image {layout.image}, written by provision's image builder.",
        "set default=0",
        f"set timeout={entry.timeout}",
    ]
    if entry.serial:
        lines += [
            "if serial --unit=0 --speed=115200; then",
            "  terminal_input console serial",
            "  terminal_output console serial",
            "fi",
        ]
    lines += [
        f"search --no-floppy --fs-uuid --set=root {layout.root_uuid}",
        f"menuentry '{entry.title}' --id provision {{",
        f"  search --no-floppy --fs-uuid --set=root {layout.root_uuid}",
        f"  linux {entry.kernel} root=UUID={layout.root_uuid} ro {entry.cmdline}".rstrip(),
        f"  initrd {entry.initrd}",
        "}",
        "",
    ]
    return "\n".join(lines)


def esp_grub_cfg(layout: DiskLayout) -> str:
    """``EFI/debian/grub.cfg``: find the root file system and read its ``/boot/grub/grub.cfg``."""
    return (
        f"search --no-floppy --fs-uuid --set=root {layout.root_uuid}\n"
        "set prefix=($root)/boot/grub\n"
        "configfile $prefix/grub.cfg\n"
    )


def kernel_args(cmdline: str, serial: bool) -> str:
    """Kernel arguments: the console on the screen and, with ``serial``, on ttyS0 (last = /dev/console)."""
    consoles = "console=tty0 console=ttyS0,115200" if serial else ""
    words = [w for w in cmdline.split() if not (serial and w.startswith("console="))]
    return " ".join([*words, consoles]).strip()


def write_grub_cfg(root: Path, entry: BootEntry, layout: DiskLayout) -> Path:
    """Write ``boot/grub/grub.cfg`` into the staged root tree (before ``mke2fs -d``)."""
    path = root / "boot" / "grub" / "grub.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(grub_cfg(entry, layout), encoding="utf-8")
    return path


def stage_bios_modules(root: Path, boot: BootPackages) -> int:
    """Copy GRUB's i386-pc modules and lists into ``boot/grub/i386-pc`` of the root tree (what grub-install
    copies): core.img loads ``normal`` and the commands of grub.cfg from there. Files copied."""
    source = boot.grub_pc_dir()
    target = root / "boot" / "grub" / "i386-pc"
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(source.iterdir()):
        if path.suffix in (".mod", ".lst", ".img") and path.is_file():
            shutil.copyfile(path, target / path.name)
            count += 1
    return count


def core_config(layout: DiskLayout) -> str:
    """The config built into core.img: find the root file system by UUID, then its /boot/grub."""
    return f"search.fs_uuid {layout.root_uuid} root\nset prefix=($root)/boot/grub\n"


def install_bios(runner: Runner, raw: Path, layout: DiskLayout, boot: BootPackages, workdir: Path) -> Path:
    """GRUB for BIOS: ``grub-mkimage`` makes core.img (from grub-pc-bin's modules), then core.img goes into
    the BIOS boot partition and boot.img into the MBR (``biosboot.embed``). Returns core.img."""
    config = workdir / "core.cfg"
    config.write_text(core_config(layout), encoding="utf-8")
    core = workdir / "core.img"
    argv = ["grub-mkimage", "--format=i386-pc", f"--directory={boot.grub_pc_dir()}", f"--output={core}"]
    argv += [f"--config={config}", "--prefix=/boot/grub", *CORE_MODULES]
    runner.run("bootloader-bios", argv)
    if not core.is_file():  # a recording runner made nothing: there is nothing to embed
        return core
    boot_img = boot.grub_pc.file(f"{GRUB_PC_DIR}/boot.img").read_bytes()
    sectors = biosboot.embed(raw, boot_img, core.read_bytes(), FIRST // SECTOR, BIOS_SIZE // SECTOR)
    runner.log.write(f"  core.img ({sectors} sectors) in the BIOS boot partition, boot.img in the MBR")
    return core


def install_uefi(runner: Runner, raw: Path, layout: DiskLayout, boot: BootPackages, workdir: Path) -> None:
    """shim, signed GRUB and the prefix grub.cfg onto the ESP: a staged tree copied by ``mcopy -s -m`` onto the
    raw file's byte range, every time stamp from the packages (the same inputs give the same ESP bytes)."""
    tree = workdir / "esp"
    files = {
        "EFI/BOOT/BOOTX64.EFI": boot.shim.file(SHIM).read_bytes(),
        "EFI/BOOT/grubx64.efi": boot.grub_efi.file(GRUB_EFI).read_bytes(),
        f"{EFI_PREFIX}/grub.cfg": esp_grub_cfg(layout).encode(),
    }
    epoch = int(max(boot.shim.file(SHIM).stat().st_mtime, boot.grub_efi.file(GRUB_EFI).stat().st_mtime))
    for rel, data in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for path in [*tree.rglob("*"), tree]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    env = {**MTOOLS_ENV, "SOURCE_DATE_EPOCH": str(epoch)}
    runner.run(
        "bootloader-uefi", ["mcopy", "-s", "-m", "-i", esp_image(raw, layout), str(tree / "EFI"), "::/"], env=env
    )
