"""Kernel module selection for the live environment, on a fake /lib/modules tree (ELF .modinfo sections)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.builder.runner import RecordingRunner
from provision.initramfs import ModuleTree, module_name
from provision.live import modules as live_modules
from provision.live.errors import LiveBuildError
from provision.live.modules import select_modules, stage_modules
from tests.support.initramfs import elf_module

RELEASE = "6.1.0-99-amd64"


# path -> extra modinfo fields (depends is always written, possibly empty)
MODULES: dict[str, list[tuple[str, str]]] = {
    "kernel/drivers/ata/libata.ko": [],
    "kernel/drivers/ata/libahci.ko": [("depends", "libata")],
    "kernel/drivers/ata/ahci.ko": [("depends", "libahci,libata"), ("alias", "pci:v*d*sv*sd*bc01sc06i01*")],
    "kernel/drivers/ata/ata_piix.ko": [("depends", "libata")],
    "kernel/drivers/net/phy/libphy.ko": [],
    "kernel/drivers/net/phy/realtek.ko": [("depends", "libphy")],
    "kernel/drivers/net/ethernet/realtek/r8169.ko": [
        ("depends", "libphy"),
        ("softdep", "pre: realtek"),
        ("firmware", "rtl_nic/rtl8168g-2.fw"),
        ("firmware", "rtl_nic/rtl8168h-2.fw"),
    ],
    "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko": [("depends", "ptp")],
    "kernel/drivers/ptp/ptp.ko": [("depends", "pps_core")],
    "kernel/drivers/pps/pps_core.ko": [],
    "kernel/fs/ext4/ext4.ko": [("depends", "mbcache,jbd2"), ("softdep", "pre: crc32c")],
    "kernel/fs/mbcache.ko": [],
    "kernel/fs/jbd2/jbd2.ko": [],
    "kernel/crypto/crc32c_generic.ko": [("alias", "crypto-crc32c")],
    "kernel/sound/core/snd.ko": [],  # never selected
    "kernel/drivers/net/ethernet/broadcom/bnx2.ko": [("depends", ""), ("firmware", "bnx2/bnx2-mips-09-6.2.1b.fw")],
}


def make_tree(tmp_path: Path) -> ModuleTree:
    root = tmp_path / "lib" / "modules" / RELEASE
    for rel, fields in MODULES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        has_depends = any(key == "depends" for key, _ in fields)
        info = [("license", "GPL"), *([] if has_depends else [("depends", "")]), *fields]
        path.write_bytes(elf_module([*info, ("name", module_name(rel)), ("vermagic", "6.1.0 SMP")]))
    (root / "modules.builtin").write_text("kernel/drivers/block/loop.ko\nkernel/net/packet/af_packet.ko\n")
    (root / "modules.builtin.modinfo").write_bytes(b"loop.max_loop=8\0")
    (root / "modules.order").write_text("".join(f"{rel}\n" for rel in MODULES))
    return ModuleTree(root)


def test_folders_and_named_modules_with_dependencies_and_soft_dependencies(tmp_path):
    tree = make_tree(tmp_path)
    selection = select_modules(tree, trees=("drivers/ata", "drivers/net/ethernet/realtek"), modules=("e1000e", "ext4"))
    assert selection.release == RELEASE
    assert selection.names == sorted(
        [
            "ahci",
            "ata_piix",
            "e1000e",
            "ext4",
            "jbd2",
            "libahci",
            "libata",
            "libphy",
            "mbcache",
            "pps_core",
            "ptp",
            "r8169",
            "realtek",  # r8169's softdep: the PHY driver
        ]
    )
    assert "snd" not in selection.paths and "bnx2" not in selection.paths
    assert selection.paths["r8169"] == "kernel/drivers/net/ethernet/realtek/r8169.ko"
    assert selection.firmware == ("rtl_nic/rtl8168g-2.fw", "rtl_nic/rtl8168h-2.fw")
    assert selection.missing == ()
    assert len(selection) == 13


def test_softdep_by_alias_is_not_guessed_and_named_crc_module_is_taken(tmp_path):
    """ext4's ``softdep=pre: crc32c`` names an alias; the selection names crc32c_generic explicitly instead."""
    tree = make_tree(tmp_path)
    without = select_modules(tree, trees=(), modules=("ext4",))
    assert "crc32c_generic" not in without.paths
    with_crc = select_modules(tree, trees=(), modules=("ext4", "crc32c-generic"))
    assert "crc32c_generic" in with_crc.paths
    assert "crc32c_generic" in live_modules.MODULES  # the real list carries it


def test_builtin_and_missing_named_modules(tmp_path, caplog):
    tree = make_tree(tmp_path)
    selection = select_modules(tree, trees=(), modules=("loop", "af_packet", "no_such_driver", "bnx2"))
    assert selection.names == ["bnx2"]
    assert selection.missing == ("no_such_driver",)  # loop and af_packet are built in: not missing
    assert selection.firmware == ("bnx2/bnx2-mips-09-6.2.1b.fw",)
    assert "no_such_driver is not in kernel" in caplog.text


def test_a_folder_without_modules_is_an_error(tmp_path):
    tree = make_tree(tmp_path)
    with pytest.raises(LiveBuildError, match=r"no kernel modules under kernel/drivers/nvme/host/"):
        select_modules(tree, trees=("drivers/nvme/host",), modules=())


def test_the_real_lists_cover_the_required_drivers():
    named = {module_name(m) for m in live_modules.MODULES}
    assert len(named) == len(live_modules.MODULES)
    for required in (
        "e1000e",
        "e1000",
        "tg3",
        "igb",
        "bnx2",
        "nvme",
        "sd_mod",
        "virtio_pci",
        "virtio_net",
        "virtio_blk",
    ):
        assert required in named
    for folder in ("drivers/ata", "drivers/usb/storage", "drivers/usb/host", "fs/ext4"):
        assert folder in live_modules.TREES
    assert "drivers/net/ethernet/realtek" in live_modules.TREES  # r8169
    assert {"vfat", "nls_cp437", "crc32c_generic", "virtio_scsi"} <= named


def test_stage_copies_the_selection_and_runs_depmod(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "kernel")
    selection = select_modules(tree, trees=("drivers/ata",), modules=())
    dest = tmp_path / "staged"
    target_dir = dest / "lib" / "modules" / RELEASE

    def depmod(command):
        assert command.argv == ("depmod", "-b", str(dest), RELEASE)
        for index in ("modules.dep", "modules.dep.bin", "modules.alias.bin", "modules.alias"):
            (target_dir / index).write_text("")
        return ""

    monkeypatch.setattr("provision.live.modules.shutil.which", lambda tool: f"/usr/sbin/{tool}")
    runner = RecordingRunner(depmod)
    staged = stage_modules(selection, tree, dest, runner)
    assert staged == target_dir
    assert runner.argvs("depmod") == [("depmod", "-b", str(dest), RELEASE)]
    copied = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.ko"))
    assert copied == sorted(selection.paths.values())
    assert (staged / "modules.builtin").read_text().startswith("kernel/drivers/block/loop.ko")
    order = (staged / "modules.order").read_text().splitlines()
    assert order == [rel for rel in MODULES if rel in set(selection.paths.values())]


def test_stage_fails_without_depmod_output(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "kernel")
    selection = select_modules(tree, trees=("drivers/ata",), modules=())
    monkeypatch.setattr("provision.live.modules.shutil.which", lambda tool: f"/usr/sbin/{tool}")
    with pytest.raises(LiveBuildError, match=r"depmod wrote no modules\.dep"):
        stage_modules(selection, tree, tmp_path / "staged", RecordingRunner())


def test_stage_names_the_package_when_depmod_is_missing(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "kernel")
    selection = select_modules(tree, trees=("drivers/ata",), modules=())
    monkeypatch.setattr("provision.live.modules.shutil.which", lambda tool: None)
    with pytest.raises(LiveBuildError, match="install the Debian package kmod"):
        stage_modules(selection, tree, tmp_path / "staged", RecordingRunner())
