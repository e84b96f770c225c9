"""Test inputs for initramfs code, and readers of what it writes.

- ``RELEASE``, ``VIRTIO_MODULES``: a fake kernel release and its virtio-like modules (path -> depends=).
- ``parse_newc(data)``: an independent newc parser that checks the archive's framing: name -> (mode, data, rdev).
- ``newc_entries(data)``: the archive as ``provision.initramfs.read_newc`` reads it, names checked unique:
  name -> (mode, ino, nlink, data, rdev).
- ``elf_module(fields)``, ``kernel_module(name, depends)``: fake kernel modules (ELF with a .modinfo section).
- ``virtio_module_tree(root, with_dep_file)``: a fake ``lib/modules/<RELEASE>`` of VIRTIO_MODULES.
- ``fake_busybox(folder)``: an executable busybox whose ``--list-full`` names four applets.
"""

from __future__ import annotations

import lzma
import struct
from collections.abc import Sequence
from pathlib import Path

from provision.initramfs import module_name, read_newc

RELEASE = "6.1.0-9-amd64"

# The virtio-like modules of a fake tree: path -> depends= (comma-separated); some .ko.xz.
VIRTIO_MODULES: dict[str, str] = {
    "kernel/drivers/virtio/virtio_ring.ko": "",
    "kernel/drivers/virtio/virtio.ko": "",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko": "",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko": "",
    "kernel/drivers/virtio/virtio_pci.ko.xz": "virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio_ring,virtio",
    "kernel/net/core/failover.ko": "",
    "kernel/drivers/net/net_failover.ko.xz": "failover",
    "kernel/drivers/net/virtio_net.ko": "net_failover,virtio_ring,virtio",
    "kernel/drivers/block/virtio_blk.ko": "virtio_ring,virtio",
    "kernel/drivers/nvme/host/nvme-core.ko": "",
    "kernel/drivers/nvme/host/nvme.ko": "nvme-core",
}


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)), checking magic, alignment, unique names and the trailer."""
    entries: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    offset = 0
    while True:
        assert offset % 4 == 0
        header = data[offset : offset + 110]
        assert header[:6] == b"070701", header[:6]
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name = data[offset + 110 : offset + 110 + namesize - 1].decode()
        offset += 110 + namesize
        offset += -offset % 4
        body = data[offset : offset + filesize]
        offset += filesize
        offset += -offset % 4
        if name == "TRAILER!!!":
            assert offset == len(data)
            return entries
        assert name not in entries
        entries[name] = (mode, body, (rmaj, rmin))


def newc_entries(data: bytes) -> dict[str, tuple[int, int, int, bytes, tuple[int, int]]]:
    """name -> (mode, ino, nlink, data, (rdevmajor, rdevminor)) as ``read_newc`` reads them; no name twice."""
    found: dict[str, tuple[int, int, int, bytes, tuple[int, int]]] = {}
    for name, mode, ino, nlink, body, rdev in read_newc(data):
        assert name not in found, name
        found[name] = (mode, ino, nlink, body, rdev)
    return found


def elf_module(fields: Sequence[tuple[str, str]]) -> bytes:
    """A minimal 64-bit little-endian ELF relocatable whose .modinfo holds ``fields`` (key, value)."""
    modinfo_data = b"".join(f"{key}={value}\0".encode() for key, value in fields)
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    body_offset = 64
    shoff = body_offset + len(modinfo_data) + len(shstrtab)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)
    null = bytes(64)
    sec_modinfo = struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, body_offset, len(modinfo_data), 0, 0, 1, 0)
    sec_strtab = struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, body_offset + len(modinfo_data), len(shstrtab), 0, 0, 1, 0)
    return header + modinfo_data + shstrtab + null + sec_modinfo + sec_strtab


def kernel_module(name: str, depends: str) -> bytes:
    """A fake kernel module ``name`` needing ``depends`` (comma-separated), as the kernel's .modinfo says."""
    return elf_module([("license", "GPL"), ("depends", depends), ("name", name), ("vermagic", "6.1.0 SMP")])


def virtio_module_tree(root: Path, *, with_dep_file: bool) -> Path:
    """A fake ``root/lib/modules/<RELEASE>`` with VIRTIO_MODULES (loop built in), with or without modules.dep."""
    release = root / "lib" / "modules" / RELEASE
    for rel, deps in VIRTIO_MODULES.items():
        path = release / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        elf = kernel_module(module_name(rel), deps)
        path.write_bytes(lzma.compress(elf) if rel.endswith(".xz") else elf)
    (release / "modules.builtin").write_text("kernel/drivers/block/loop.ko\n")
    if with_dep_file:
        lines = []
        by_name = {module_name(rel): rel for rel in VIRTIO_MODULES}
        for rel, deps in VIRTIO_MODULES.items():
            lines.append(f"{rel}: " + " ".join(by_name[module_name(d)] for d in deps.split(",") if d))
        (release / "modules.dep").write_text("\n".join(lines) + "\n")
    return release


def fake_busybox(folder: Path) -> Path:
    """An executable ``folder/busybox`` whose ``--list-full`` names four applets (one is bin/busybox)."""
    busybox = folder / "busybox"
    busybox.write_text("#!/bin/sh\nprintf 'bin/sh\\nsbin/poweroff\\nusr/bin/wget\\nbin/busybox\\n'\n")
    busybox.chmod(0o755)
    return busybox
