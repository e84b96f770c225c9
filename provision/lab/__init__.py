"""The lab: QEMU PCs network-booting inside a private network namespace (tests, demos).

- ``Lab`` (netns.py): namespace, bridge, taps, processes; ``Lab.add_pc`` starts a ``PC`` (qemu.py), with one
  disk or several (``LabDisk``: NVMe, SATA, virtio; disks.py).
- ``build_test_initrd`` (initrd.py): a busybox initramfs whose /init calls ``/api/v1/hello``.
- ``LabServer``, ``prepare_netboot_root`` (server.py): ``provision serve`` in a lab, and the boot root it serves.
- ``run_demo`` (demo.py, follow.py, report.py): ``provision lab demo``, a server and a small QEMU rack imaged
  end to end (live environment, tiny image, first boot from the PC's own disk).

See docs/lab.md.
"""

from provision.lab.disks import DiskKind, LabDisk
from provision.lab.host import LabUnavailable, cleanup_stale_labs, missing_prerequisites, require
from provision.lab.initrd import (
    DISK_MODULES,
    NIC_MODULES,
    TEST_INIT,
    build_test_initrd,
    modules_for,
)
from provision.lab.netns import Lab
from provision.lab.qemu import PC, Disk, Firmware, LabError, LabTimeout, Nic, PCSpec, qemu_argv
from provision.lab.server import LabServer, netboot_missing, prepare_netboot_root

__all__ = [
    "DISK_MODULES",
    "NIC_MODULES",
    "PC",
    "TEST_INIT",
    "Disk",
    "DiskKind",
    "Firmware",
    "Lab",
    "LabDisk",
    "LabError",
    "LabServer",
    "LabTimeout",
    "LabUnavailable",
    "Nic",
    "PCSpec",
    "build_test_initrd",
    "cleanup_stale_labs",
    "missing_prerequisites",
    "modules_for",
    "netboot_missing",
    "prepare_netboot_root",
    "qemu_argv",
    "require",
]
