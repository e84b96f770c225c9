"""The raw disk: one GPT layout for every image and its file systems, written into a plain sparse file.

Layout (so that one disk boots BIOS and UEFI PCs)::

    1  bios  1 MiB   BIOS boot partition: GRUB's core.img (grub-install --target=i386-pc)
    2  esp   FAT32   EFI system partition: shim, Debian's signed GRUB, its grub.cfg
    3  root  ext4    the system, /boot included; last, so the imaging agent can grow it to the disk

Partition and file system identifiers are derived from the image name (uuid5), so two builds of one
image differ only where their content does: fewer new chunks in the store, and the same
``root=UUID=...`` in every build. The root file system is filled by ``mke2fs -d`` from the staged tree
(no copying through a mount); the ESP by mtools (no vfat driver needed on the build machine).

No loop device and no mount: ``sfdisk``, ``mkfs.fat --offset``, ``mke2fs -E offset=`` and mtools
(``FILE@@OFFSET``) all work on byte ranges of the raw file. Kernels without partition-table support
(``losetup -P`` shows no partitions) and without vfat, like the lab VMs', build images all the same, and
a failed build leaves nothing attached. Whatever a failed bootstrap left mounted below the build folder
is unmounted by ``unmount_below``.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from provision.builder import reproducible
from provision.builder.runner import Runner

log = logging.getLogger(__name__)

MiB = 1 << 20
SECTOR = 512
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # discoverable partitions: root, x86-64
BIOS_SIZE = 1 * MiB
FIRST = 1 * MiB  # first partition starts here (alignment)
TAIL = 1 * MiB  # room for the backup GPT, kept aligned
AUTO_ROUND = 64 * MiB
FAT32_MIN_CLUSTERS = 65525 + 4096  # the FAT32 minimum, with a margin for the FATs and reserved sectors
_NAMESPACE = uuid.UUID("6b1f2c1e-6d0a-5b8e-9a4f-70726f766973")  # provision image identifiers


def image_uuid(image: str, what: str) -> str:
    """A stable identifier of one part of an image (disk, partition, file system)."""
    return str(uuid.uuid5(_NAMESPACE, f"{image}/{what}"))


@dataclass(frozen=True)
class DiskLayout:
    """Sizes and identifiers of an image's disk."""

    image: str
    size: int
    esp_size: int

    @property
    def disk_guid(self) -> str:
        return image_uuid(self.image, "disk")

    @property
    def root_uuid(self) -> str:
        """The ext4 file system UUID (``root=UUID=...``, GRUB's ``search --fs-uuid``)."""
        return image_uuid(self.image, "root-fs")

    @property
    def esp_volume_id(self) -> str:
        """The FAT volume id (8 hex digits; shows as XXXX-XXXX)."""
        return image_uuid(self.image, "esp-fs").replace("-", "")[:8].upper()

    @property
    def esp_fs_uuid(self) -> str:
        return f"{self.esp_volume_id[:4]}-{self.esp_volume_id[4:]}"

    @property
    def root_offset(self) -> int:
        return FIRST + BIOS_SIZE + self.esp_size

    @property
    def root_size(self) -> int:
        return self.size - self.root_offset - TAIL

    def check(self) -> None:
        if self.size % MiB or self.esp_size % MiB:
            raise ValueError("disk and ESP sizes must be multiples of 1 MiB")
        if self.root_size < 16 * MiB:
            raise ValueError(f"disk of {self.size} bytes leaves {self.root_size} bytes for the root file system")

    def sfdisk_script(self) -> str:
        """The ``sfdisk`` input that writes this layout."""
        return (
            "label: gpt\n"
            f"label-id: {self.disk_guid.upper()}\n"
            "unit: sectors\n"
            f"start={FIRST // SECTOR}, size={BIOS_SIZE // SECTOR}, type={BIOS_BOOT_TYPE}, "
            f'uuid={image_uuid(self.image, "part-bios").upper()}, name="bios"\n'
            f"start={(FIRST + BIOS_SIZE) // SECTOR}, size={self.esp_size // SECTOR}, type={ESP_TYPE}, "
            f'uuid={image_uuid(self.image, "part-esp").upper()}, name="esp"\n'
            f"start={self.root_offset // SECTOR}, size={self.root_size // SECTOR}, type={ROOT_X86_64_TYPE}, "
            f'uuid={image_uuid(self.image, "part-root").upper()}, name="root"\n'
        )


def tree_bytes(root: Path) -> int:
    """Bytes a tree takes in ext4 (4 KiB blocks per file, plus one inode's worth per entry)."""
    total = 0
    for folder, dirs, files in os.walk(root):
        total += 4096 * (1 + len(dirs))
        for name in files:
            st = os.lstat(os.path.join(folder, name))  # noqa: PTH118 - os.walk gives strings
            total += -(-st.st_size // 4096) * 4096 + 256
    return total


def auto_size(content: int, free_space: int, esp_size: int) -> int:
    """Disk size for ``content`` bytes of root files plus ``free_space``: ext4 overhead (journal, inode
    tables, 1 % reserve) included, rounded up to 64 MiB."""
    root = int(content * 1.08) + free_space + 96 * MiB
    total = FIRST + BIOS_SIZE + esp_size + root + TAIL
    return -(-total // AUTO_ROUND) * AUTO_ROUND


def create_raw(path: Path, size: int) -> None:
    """A new sparse file of ``size`` bytes (an old one is replaced)."""
    path.unlink(missing_ok=True)
    with path.open("wb") as handle:
        handle.truncate(size)


def esp_offset(layout: DiskLayout) -> int:
    return FIRST + BIOS_SIZE


def partition(runner: Runner, raw: Path, layout: DiskLayout) -> None:
    """Write the GPT (sfdisk on the file: no device, nothing told to the kernel)."""
    argv = ["sfdisk", "--no-reread", "--no-tell-kernel", "--wipe", "always", str(raw)]
    runner.run("partition", argv, input=layout.sfdisk_script())


def esp_cluster_sectors(esp_size: int) -> int:
    """Sectors per cluster of the ESP: FAT32 needs at least 65525 clusters. Given explicitly, because
    mkfs.fat sizes clusters by the whole file, not by the partition, when writing at an offset."""
    sectors = 1
    while sectors < 8 and esp_size // SECTOR // (sectors * 2) >= FAT32_MIN_CLUSTERS:
        sectors *= 2
    return sectors


def make_esp(runner: Runner, raw: Path, layout: DiskLayout) -> None:
    """FAT32 inside the ESP's byte range of the raw file (``mkfs.fat --offset``)."""
    argv = ["mkfs.fat", "-F", "32", "-S", str(SECTOR), "-s", str(esp_cluster_sectors(layout.esp_size))]
    argv += ["-n", "ESP", "--invariant", "-i", layout.esp_volume_id]  # invariant: no clock in the label entry
    argv += [f"--offset={esp_offset(layout) // SECTOR}", str(raw), str(layout.esp_size // 1024)]
    runner.run("filesystems", argv)


def esp_image(raw: Path, layout: DiskLayout) -> str:
    """The ESP as mtools names it: ``FILE@@OFFSET``."""
    return f"{raw}@@{esp_offset(layout)}"


def make_root(runner: Runner, raw: Path, layout: DiskLayout, tree: Path, epoch: int) -> None:
    """ext4 holding ``tree`` inside the root's byte range (``mke2fs -E offset -d``): no mount, nothing copied
    twice, 1 % reserved for root. The file system's own time stamps are ``epoch`` (E2FSPROGS_FAKE_TIME),
    so its superblock copies do not change from one build to the next; the tree's times are clamped to it
    first, and every inode's change and access time pinned to it after (``reproducible``)."""
    reproducible.clamp_tree(tree, epoch)
    argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-U", layout.root_uuid, "-m", "1"]
    argv += ["-E", f"offset={layout.root_offset},hash_seed={layout.root_uuid},root_owner=0:0"]
    argv += ["-d", str(tree), str(raw), f"{layout.root_size // 1024}k"]
    runner.run("filesystems", argv, env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    reproducible.pin_inode_times(runner, "filesystems", f"{raw}?offset={layout.root_offset}", epoch)


def check_root(runner: Runner, raw: Path, layout: DiskLayout) -> None:
    """A read-only ``e2fsck -f`` of the finished root file system (e2fsprogs' ``FILE?offset=`` syntax)."""
    runner.run("finish", ["e2fsck", "-f", "-n", f"{raw}?offset={layout.root_offset}"])


def mounts_below(folder: Path, mounts: Path = Path("/proc/mounts")) -> list[str]:
    """Mount points at or below ``folder``, deepest first."""
    try:
        text = mounts.read_text(encoding="utf-8")
    except OSError:
        return []
    base = str(folder.resolve())
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 1:
            point = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_below(runner: Runner, folder: Path) -> list[str]:
    """Unmount whatever is still mounted below ``folder`` (a killed mmdebstrap leaves /proc, /dev ... in its
    chroot). Never raises: this runs while cleaning up. Returns what it unmounted."""
    done = []
    for point in mounts_below(folder):
        result = runner.run("cleanup", ["umount", point], check=False)
        if result.returncode != 0:
            log.warning("umount %s failed (%s): detaching it lazily", point, result.stderr.strip())
            runner.run("cleanup", ["umount", "--lazy", point], check=False)
        done.append(point)
    return done
