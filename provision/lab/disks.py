"""A lab PC's disks when it has more than the default one: NVMe, SATA (AHCI) and virtio disks, each with its
own size, serial number and, if asked, initial content.

``Lab.add_pc(..., disks=[LabDisk("nvme", 256 MiB, "PROV-NVME-0001"), LabDisk("sata", 256 MiB, "PROV-SATA-0001")])``
gives the PC exactly these disks, in this order (the firmware tries them in that order after the network); a PC
without ``disks`` keeps its single ``disk``/``disk_size`` disk. QEMU devices (its documentation, checked against
Debian 12's QEMU 7.2 in tests/samples/erasure):

- ``nvme``: ``-device nvme,serial=S,drive=D``, one controller per disk, its namespace 1 is the disk
  (``/dev/nvmeNn1``); no serial given: ``<pc>-<index>``. QEMU's NVMe can Format NVM (it zeroes the namespace,
  whatever the Secure Erase Setting) and has no sanitize.
- ``sata``: one ``-device ahci,id=sata0`` for all of them, ``-device ide-hd,bus=sata0.N,drive=D,serial=S``
  (``/dev/sdX``; at most 6). No serial given: QEMU's ``QM0000N``. No ATA security feature set.
- ``virtio``: ``-device virtio-blk-pci,drive=D,serial=S`` (``/dev/vdX``).

Files: the first disk is ``disk.raw`` in the PC's folder (``PC.disk_path``), the others ``disk1.raw``,
``disk2.raw`` ... (``PC.disk_paths``). Each is a sparse file of ``size`` bytes, or a copy of ``source`` (then
extended to ``size``) when the test wants the disk to hold something before the PC starts.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

DiskKind = Literal["nvme", "sata", "virtio"]
MAX_SATA = 6  # ports of one AHCI controller
SERIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,19}")  # NVMe and ATA serials hold 20 characters
SATA_BUS = "sata0"  # the AHCI controller of the PC's SATA disks (the single-disk "ahci" PC's is ahci0)


@dataclass(frozen=True)
class LabDisk:
    """One disk of a lab PC: its interface, size in bytes, serial number (None: the lab's or QEMU's default)
    and initial content (None: blank)."""

    kind: DiskKind = "virtio"
    size: int = 256 << 20
    serial: str | None = None
    source: Path | None = None

    def problems(self, index: int) -> list[str]:
        """What QEMU would refuse or the lab cannot do, each naming the disk (empty: fine)."""
        found = []
        name = f"disk {index} ({self.kind})"
        if self.kind not in get_args(DiskKind):
            found.append(f"{name}: kind {self.kind!r} (one of {', '.join(get_args(DiskKind))})")
        if self.size < 1 << 20 or self.size % 512:
            found.append(f"{name}: size {self.size} (at least 1 MiB, a multiple of 512)")
        if self.serial is not None and not SERIAL_RE.fullmatch(self.serial):
            found.append(f"{name}: serial {self.serial!r} (1-20 letters, digits, _ . -)")
        if self.source is not None:
            if not self.source.is_file():
                found.append(f"{name}: source {self.source} (no such file)")
            elif self.source.stat().st_size > self.size:
                found.append(f"{name}: source {self.source} is larger than the disk ({self.size} bytes)")
        return found


def disks_problems(disks: Sequence[LabDisk]) -> list[str]:
    """The problems of every disk, and of the set (too many SATA disks for one controller)."""
    found = [problem for index, disk in enumerate(disks) for problem in disk.problems(index)]
    sata = sum(1 for disk in disks if disk.kind == "sata")
    if sata > MAX_SATA:
        found.append(f"{sata} SATA disks (at most {MAX_SATA}: one AHCI controller)")
    return found


def disk_paths(first: Path, count: int) -> list[Path]:
    """The files of ``count`` disks whose first is ``first`` (``disk.raw``): then ``disk1.raw``, ``disk2.raw`` ..."""
    return [first, *(first.with_name(f"disk{index}.raw") for index in range(1, count))]


def create_disk_files(disks: Sequence[LabDisk], first: Path) -> list[Path]:
    """Write each disk's file: a copy of its ``source`` or nothing, extended (sparse) to its size."""
    paths = disk_paths(first, len(disks))
    for disk, path in zip(disks, paths, strict=True):
        if disk.source is not None:
            shutil.copyfile(disk.source, path)
        with path.open("ab") as file:
            file.truncate(disk.size)
    return paths


def disks_argv(disks: Sequence[LabDisk], paths: Sequence[Path], pc: str) -> list[str]:
    """QEMU's drives and devices for ``disks`` (files ``paths``, checked for commas by the caller), in boot order
    after the network (bootindex 1, 2 ...)."""
    argv: list[str] = []
    sata_port = 0
    for index, (disk, path) in enumerate(zip(disks, paths, strict=True)):
        drive = f"disk{index}"
        argv += ["-drive", f"if=none,id={drive},format=raw,cache=unsafe,file={path}"]
        boot = f"bootindex={index + 1}"
        if disk.kind == "nvme":
            serial = disk.serial or f"{pc[:17]}-{index}"
            argv += ["-device", f"nvme,drive={drive},serial={serial},{boot}"]
        elif disk.kind == "sata":
            if sata_port == 0:
                argv += ["-device", f"ahci,id={SATA_BUS}"]
            serial = f",serial={disk.serial}" if disk.serial else ""
            argv += ["-device", f"ide-hd,drive={drive},bus={SATA_BUS}.{sata_port}{serial},{boot}"]
            sata_port += 1
        else:
            serial = f",serial={disk.serial}" if disk.serial else ""
            argv += ["-device", f"virtio-blk-pci,drive={drive}{serial},{boot}"]
    return argv
