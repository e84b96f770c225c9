"""The initramfs toolkit's kernel module tree: names, .modinfo, load order (modules.dep or .modinfo), modalias."""

from __future__ import annotations

import lzma

import pytest

from provision.initramfs import InitrdError, ModuleError, ModuleTree, alias_modules, modinfo, module_name, read_module
from tests.support.initramfs import kernel_module, virtio_module_tree

VIRTIO_ROOTS = ["virtio_pci", "virtio_net", "virtio_blk"]  # the lab's virtio NIC and disk


def test_module_name_normalises():
    assert module_name("kernel/drivers/net/virtio_net.ko.xz") == "virtio_net"
    assert module_name("kernel/drivers/nvme/host/nvme-core.ko") == "nvme_core"
    assert module_name("crc-t10dif") == "crc_t10dif"


def test_modinfo_reads_depends_from_elf():
    info = modinfo(kernel_module("virtio_net", "net_failover,virtio"))
    assert info["depends"] == ["net_failover,virtio"]
    assert info["name"] == ["virtio_net"]
    with pytest.raises(InitrdError, match="ELF"):
        modinfo(b"not an elf at all" * 8)


@pytest.mark.parametrize("with_dep_file", [True, False], ids=["modules.dep", "modinfo"])
def test_load_order_puts_dependencies_first(tmp_path, with_dep_file):
    tree = ModuleTree(virtio_module_tree(tmp_path, with_dep_file=with_dep_file))
    order = tree.load_order(VIRTIO_ROOTS)
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
    tree = ModuleTree(virtio_module_tree(tmp_path, with_dep_file=False))
    with pytest.raises(InitrdError, match="kernel module e1000e not found") as caught:
        tree.load_order(["e1000e"])
    assert caught.value.facts["module"] == "e1000e"
    with pytest.raises(ModuleError, match="not a kernel modules directory"):
        ModuleTree(tmp_path)


def test_read_module_decompresses_xz(tmp_path):
    path = tmp_path / "m.ko.xz"
    path.write_bytes(lzma.compress(b"\x7fELFdata"))
    assert read_module(path) == b"\x7fELFdata"
    zst = tmp_path / "m.ko.zst"
    zst.write_bytes(b"")
    with pytest.raises(InitrdError, match="zstd"):
        read_module(zst)


def test_alias_modules_reads_modules_alias():
    text = (
        "# Aliases extracted from modules themselves.\n"
        "alias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169\n"
        "alias virtio:d00000001v* virtio_net\n"
        "alias fs-vfat vfat\n"
        "alias crypto-crc32c crc32c-generic\n"
        "garbage line\n"
    )
    assert alias_modules(text) == {"r8169", "virtio_net", "vfat", "crc32c_generic"}
