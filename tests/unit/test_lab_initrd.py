"""Test initramfs: cpio newc writer, module dependencies (modules.dep or .modinfo), the archive contents."""

from __future__ import annotations

import gzip
import lzma
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from provision.lab import TEST_INIT, CpioWriter, InitrdError, ModuleTree, build_test_initrd, modules_for
from provision.lab.initrd import UDHCPC_SCRIPT, modinfo, module_name, read_module


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)), checking magic, alignment and the trailer."""
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


def elf_module(name: str, depends: str) -> bytes:
    """A minimal 64-bit little-endian ELF relocatable with a .modinfo section, like a kernel module."""
    modinfo_data = f"license=GPL\0depends={depends}\0name={name}\0vermagic=6.1.0 SMP\0".encode()
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    body_offset = 64
    shoff = body_offset + len(modinfo_data) + len(shstrtab)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)
    null = bytes(64)
    sec_modinfo = struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, body_offset, len(modinfo_data), 0, 0, 1, 0)
    sec_strtab = struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, body_offset + len(modinfo_data), len(shstrtab), 0, 0, 1, 0)
    return header + modinfo_data + shstrtab + null + sec_modinfo + sec_strtab


def make_tree(root: Path, *, with_dep_file: bool) -> Path:
    """A fake /lib/modules/<release> with virtio-like modules, some .ko.xz."""
    release = root / "lib" / "modules" / "6.1.0-9-amd64"
    modules = {
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
    for rel, deps in modules.items():
        path = release / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        elf = elf_module(module_name(rel), deps)
        path.write_bytes(lzma.compress(elf) if rel.endswith(".xz") else elf)
    (release / "modules.builtin").write_text("kernel/drivers/block/loop.ko\n")
    if with_dep_file:
        lines = []
        by_name = {module_name(rel): rel for rel in modules}
        for rel, deps in modules.items():
            lines.append(f"{rel}: " + " ".join(by_name[module_name(d)] for d in deps.split(",") if d))
        (release / "modules.dep").write_text("\n".join(lines) + "\n")
    return release


def test_cpio_newc_entries_parents_devices_and_trailer():
    cpio = CpioWriter()
    cpio.add_file("etc/deep/file.txt", b"hello", 0o600)
    cpio.add_symlink("bin/sh", "/bin/busybox")
    cpio.add_char_device("dev/console", 5, 1)
    cpio.add_dir("proc")
    cpio.add_dir("proc")  # a directory twice is fine
    entries = parse_newc(cpio.getvalue())
    assert list(entries)[:3] == ["etc", "etc/deep", "etc/deep/file.txt"]
    mode, data, _ = entries["etc/deep/file.txt"]
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600 and data == b"hello"
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"/bin/busybox"
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)
    assert stat.S_ISDIR(entries["proc"][0])
    assert cpio.getvalue() == cpio.getvalue()  # trailer added once


def test_cpio_duplicate_entry_is_refused():
    cpio = CpioWriter()
    cpio.add_file("a", b"1")
    with pytest.raises(InitrdError, match="duplicate initramfs entry a"):
        cpio.add_file("/a", b"2")


def test_module_name_normalises():
    assert module_name("kernel/drivers/net/virtio_net.ko.xz") == "virtio_net"
    assert module_name("kernel/drivers/nvme/host/nvme-core.ko") == "nvme_core"
    assert module_name("crc-t10dif") == "crc_t10dif"


def test_modinfo_reads_depends_from_elf():
    info = modinfo(elf_module("virtio_net", "net_failover,virtio"))
    assert info["depends"] == ["net_failover,virtio"]
    assert info["name"] == ["virtio_net"]
    with pytest.raises(InitrdError, match="ELF"):
        modinfo(b"not an elf at all" * 8)


@pytest.mark.parametrize("with_dep_file", [True, False], ids=["modules.dep", "modinfo"])
def test_load_order_puts_dependencies_first(tmp_path, with_dep_file):
    tree = ModuleTree(make_tree(tmp_path, with_dep_file=with_dep_file))
    order = tree.load_order(modules_for("virtio", "virtio"))
    assert set(order) == {
        "virtio_ring",
        "virtio",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
        "failover",
        "net_failover",
        "virtio_net",
        "virtio_blk",
    }
    for module, dep in [
        ("virtio_pci", "virtio_pci_modern_dev"),
        ("virtio_pci", "virtio"),
        ("virtio_net", "net_failover"),
        ("net_failover", "failover"),
        ("virtio_blk", "virtio_ring"),
    ]:
        assert order.index(dep) < order.index(module)
    assert tree.load_order(["nvme"]) == ["nvme_core", "nvme"]
    assert tree.load_order(["loop"]) == []  # built in


def test_missing_module_is_named(tmp_path):
    tree = ModuleTree(make_tree(tmp_path, with_dep_file=False))
    with pytest.raises(InitrdError, match="kernel module e1000e not found") as caught:
        tree.load_order(["e1000e"])
    assert caught.value.facts["module"] == "e1000e"
    with pytest.raises(InitrdError, match="not a kernel modules directory"):
        ModuleTree(tmp_path)


def test_read_module_decompresses_xz(tmp_path):
    path = tmp_path / "m.ko.xz"
    path.write_bytes(lzma.compress(b"\x7fELFdata"))
    assert read_module(path) == b"\x7fELFdata"
    zst = tmp_path / "m.ko.zst"
    zst.write_bytes(b"")
    with pytest.raises(InitrdError, match="zstd"):
        read_module(zst)


def fake_busybox(tmp_path: Path) -> Path:
    busybox = tmp_path / "busybox"
    busybox.write_text("#!/bin/sh\nprintf 'bin/sh\\nsbin/poweroff\\nusr/bin/wget\\nbin/busybox\\n'\n")
    busybox.chmod(0o755)
    return busybox


def test_build_test_initrd_contents(tmp_path):
    modules_dir = make_tree(tmp_path / "kernel", with_dep_file=False)
    out = tmp_path / "out" / "initrd.img"
    order = build_test_initrd(out, modules_dir, fake_busybox(tmp_path), modules_for("virtio", "virtio"))
    with gzip.open(out, "rb") as handle:
        entries = parse_newc(handle.read())
    assert entries["init"][1].decode() == TEST_INIT
    assert stat.S_IMODE(entries["init"][0]) == 0o755
    assert entries["etc/udhcpc.script"][1].decode() == UDHCPC_SCRIPT
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert entries["bin/sh"][1] == b"/bin/busybox" and entries["usr/bin/wget"][1] == b"/bin/busybox"
    assert stat.S_ISREG(entries["bin/busybox"][0])
    listed = entries["etc/provision/modules"][1].decode().split()
    assert [module_name(p) for p in listed] == order
    assert "/lib/modules/6.1.0-9-amd64/kernel/drivers/virtio/virtio_pci.ko" in listed  # .xz stripped
    for path in listed:
        assert entries[path.lstrip("/")][1].startswith(b"\x7fELF")  # decompressed for insmod
    again = tmp_path / "again.img"
    build_test_initrd(again, modules_dir, fake_busybox(tmp_path), modules_for("virtio", "virtio"))
    assert again.read_bytes() == out.read_bytes()  # reproducible


def test_build_test_initrd_custom_init_and_extra_files(tmp_path):
    modules_dir = make_tree(tmp_path / "kernel", with_dep_file=True)
    out = tmp_path / "initrd.img"
    build_test_initrd(out, modules_dir, fake_busybox(tmp_path), [], "#!/bin/sh\necho hi\n", extra_files={"etc/x": b"y"})
    with gzip.open(out, "rb") as handle:
        entries = parse_newc(handle.read())
    assert entries["init"][1] == b"#!/bin/sh\necho hi\n"
    assert entries["etc/provision/modules"][1] == b""
    assert entries["etc/x"][1] == b"y"


@pytest.mark.parametrize("script", [TEST_INIT, UDHCPC_SCRIPT], ids=["init", "udhcpc"])
def test_shell_scripts_parse(tmp_path, script):
    path = tmp_path / "script"
    path.write_text(script)
    done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_init_reports_the_documented_fields():
    for needle in ("provision.server", "provision.token", "provision.mac", "Secure boot enabled", "/sys/firmware/efi"):
        assert needle in TEST_INIT
    for marker in ("PROVISION-CALLBACK-OK", "PROVISION-CALLBACK-FAILED", "poweroff -f", "/api/v1/hello"):
        assert marker in TEST_INIT
