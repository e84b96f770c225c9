"""Target disk choice over lsblk samples and hand-made disks, and the live medium from /proc/mounts."""

from __future__ import annotations

import json

import pytest

from provision.agent.disks import (
    GB,
    AmbiguousTarget,
    Disk,
    NoTargetDisk,
    TargetRuleInvalid,
    choose_target,
    live_medium_devices,
    parse_lsblk_disks,
)
from provision.facts import parse_lsblk
from tests.support.paths import SAMPLES

PC = parse_lsblk_disks((SAMPLES / "lsblk-pc.json").read_text())
VM = parse_lsblk_disks((SAMPLES / "lsblk-vm.json").read_text())
IMAGE = 20 * GB


def _by_name(disks: tuple[Disk, ...]) -> dict[str, Disk]:
    return {d.name: d for d in disks}


def test_own_parser_agrees_with_the_facts_parser() -> None:
    for name in ("lsblk-pc.json", "lsblk-vm.json"):
        text = (SAMPLES / name).read_text()
        ours = parse_lsblk_disks(text)
        theirs = parse_lsblk(text)
        assert [d.name for d in ours] == [d.name for d in theirs]
        for a, b in zip(ours, theirs, strict=True):
            assert (a.size_bytes, a.transport, a.removable, a.model, a.serial, a.mounted) == (
                b.size_bytes,
                b.transport,
                b.removable,
                b.model,
                b.serial,
                b.mounted,
            )


def test_pc_sample_parsed() -> None:
    disks = _by_name(PC)
    assert set(disks) == {"sda", "sdb", "nvme0n1"}  # no loop, no rom
    assert disks["sdb"].removable and disks["sdb"].transport == "usb"
    assert disks["sdb"].mounted == ("/run/live/medium",)


@pytest.mark.parametrize("text", ["", "{", "[]", '{"blockdevices": 3}', "null", '{"blockdevices": [1, {}]}'])
def test_parser_tolerates_garbage(text: str) -> None:
    assert parse_lsblk_disks(text) == ()


def test_pc_auto_is_ambiguous_between_sda_and_nvme() -> None:
    with pytest.raises(AmbiguousTarget) as exc:
        choose_target(PC, {"select": "auto"}, IMAGE, {"sdb"})
    assert str(exc.value) == (
        "several disks qualify (sda 500 GB, nvme0n1 256 GB); set target_disk.select or name in the recipe"
    )
    assert exc.value.candidates == ["sda", "nvme0n1"]


def test_pc_largest_smallest_name_transport() -> None:
    assert choose_target(PC, {"select": "largest"}, IMAGE, {"sdb"}).name == "sda"
    assert choose_target(PC, {"select": "smallest"}, IMAGE, {"sdb"}).name == "nvme0n1"
    assert choose_target(PC, {"name": "sda"}, IMAGE, set()).name == "sda"
    assert choose_target(PC, {"name": "/dev/nvme0n1"}, IMAGE, set()).name == "nvme0n1"
    assert choose_target(PC, {"transport": ["nvme"]}, IMAGE, set()).name == "nvme0n1"
    assert choose_target(PC, {"transport": ["SATA"]}, IMAGE, set()).name == "sda"
    assert choose_target(PC, {"model": "samsung*"}, IMAGE, set()).name == "nvme0n1"
    assert choose_target(PC, {"min_gb": 300}, IMAGE, set()).name == "sda"
    assert choose_target(PC, {}, 300 * GB, set()).name == "sda"  # only sda fits


def test_the_usb_stick_is_never_chosen_even_by_name() -> None:
    with pytest.raises(NoTargetDisk) as exc:
        choose_target(PC, {"name": "sdb"}, IMAGE, {"sdb"})
    reasons = exc.value.excluded
    assert set(reasons) == {"sda", "sdb", "nvme0n1"}
    assert "removable" in reasons["sdb"] and "USB" in reasons["sdb"]
    assert "the live medium or holds a mounted filesystem" in reasons["sdb"]
    assert reasons["sda"] == ["name is not sdb"]


def test_only_a_removable_disk() -> None:
    stick = Disk("sdc", size_bytes=64 * GB, transport="sata", removable=True, model="Card Reader")
    with pytest.raises(NoTargetDisk) as exc:
        choose_target([stick], {}, IMAGE, set())
    assert str(exc.value) == "no disk can take the image (20 GB): sdc: removable"


def test_no_disks_at_all() -> None:
    with pytest.raises(NoTargetDisk, match="no disks found"):
        choose_target([], {}, IMAGE, set())


def test_too_small_names_both_sizes() -> None:
    with pytest.raises(NoTargetDisk) as exc:
        choose_target(PC, {"transport": ["nvme"]}, 300 * GB, {"sdb"})
    text = str(exc.value)
    assert "nvme0n1: too small for the image (disk 256 GB = 256060514304 bytes, image 300 GB = 300000000000" in text
    assert "sda: transport sata not in nvme" in text
    assert "sdb: removable, USB, the live medium" in text


def test_live_medium_and_mounted_disks_excluded() -> None:
    disks = [
        Disk("sda", size_bytes=500 * GB, transport="sata", removable=False),
        Disk("sdb", size_bytes=500 * GB, transport="sata", removable=False, mounted=("/mnt/x",)),
    ]
    assert choose_target(disks, {}, IMAGE, set()).name == "sda"
    with pytest.raises(NoTargetDisk) as exc:
        choose_target(disks, {}, IMAGE, {"sda"})
    assert exc.value.excluded == {
        "sda": ["the live medium or holds a mounted filesystem"],
        "sdb": ["holds mounted filesystems (/mnt/x)"],
    }


def test_unknown_size_and_model_are_reasons() -> None:
    disks = [Disk("vda", transport="virtio", removable=False)]
    with pytest.raises(NoTargetDisk) as exc:
        choose_target(disks, {"model": "QEMU*", "min_gb": 1}, IMAGE, set())
    assert exc.value.excluded == {"vda": ["size unknown", "model 'unknown' does not match 'QEMU*'"]}


def test_equal_sizes_with_largest_are_ambiguous() -> None:
    disks = [Disk(n, size_bytes=250 * GB, transport="sata", removable=False) for n in ("sda", "sdb")]
    with pytest.raises(AmbiguousTarget, match=r"\(sda 250 GB, sdb 250 GB\) and are equally largest"):
        choose_target(disks, {"select": "largest"}, IMAGE, set())


def test_vm_sample_root_disk_is_in_use() -> None:
    assert [(d.name, d.transport) for d in VM] == [("vda", "virtio")]  # zram skipped
    with pytest.raises(NoTargetDisk, match=r"vda: holds mounted filesystems \(/"):
        choose_target(VM, {}, GB, set())
    unmounted = [Disk("vda", size_bytes=VM[0].size_bytes, transport="virtio", removable=False)]
    assert choose_target(unmounted, {"transport": ["virtio"]}, GB, set()).name == "vda"


def test_facts_disks_are_accepted() -> None:
    disks = parse_lsblk((SAMPLES / "lsblk-pc.json").read_text())
    chosen = choose_target(disks, {"select": "smallest"}, IMAGE, set())
    assert chosen is disks[2]


@pytest.mark.parametrize(
    "rule",
    [{"select": "biggest"}, {"transport": "sata"}, {"min_gb": 0}, {"min_gb": True}, {"model": 3}, {"size": 1}],
)
def test_bad_rules_refused(rule: dict[str, object]) -> None:
    with pytest.raises(TargetRuleInvalid):
        choose_target(PC, rule, IMAGE, set())


def test_hostile_names_and_models_are_carried_as_data() -> None:
    name = "sd\x1b[31mz\n; rm -rf /"
    model = "X" * 500 + "\x00"
    disks = [Disk(name, size_bytes=GB, transport="sata", removable=False, model=model)]
    with pytest.raises(NoTargetDisk) as exc:
        choose_target(disks, {"model": "Y*"}, IMAGE, set())
    text = str(exc.value)
    assert "\x1b" not in text and "\n" not in text and "\x00" not in text
    assert list(exc.value.excluded) == [name]  # the real name, unchanged, as the key
    assert len(text) < 600
    ok = [Disk(name, size_bytes=100 * GB, transport="sata", removable=False, model=model)]
    assert choose_target(ok, {"model": "X*"}, IMAGE, set()).name == name


MOUNTS = """\
/dev/sdb1 /run/live/medium iso9660 ro,noatime 0 0
/dev/loop0 /run/live/rootfs/filesystem.squashfs squashfs ro,noatime 0 0
overlay / overlay rw,noatime,lowerdir=/run/live/rootfs/filesystem.squashfs/ 0 0
/dev/nvme0n1p2 /mnt/old\\040disk ext4 rw 0 0
/dev/mmcblk0p1 /boot/firmware vfat rw 0 0
/dev/mapper/vg-root /srv ext4 rw 0 0
/dev/dm-0 /srv2 ext4 rw 0 0
/dev/disk/by-uuid/1234 /x ext4 rw 0 0
proc /proc proc rw 0 0
tmpfs /run tmpfs rw 0 0
"""


def test_live_medium_from_mounts() -> None:
    assert live_medium_devices(MOUNTS) == {"sdb", "nvme0n1", "mmcblk0"}
    assert live_medium_devices(MOUNTS, PC) == {"sdb", "nvme0n1", "mmcblk0"}


def test_live_medium_from_kernel_args() -> None:
    cmdline = "BOOT_IMAGE=/vmlinuz boot=live live-media=/dev/sdc1 root=UUID=abcd quiet"
    assert live_medium_devices("", (), cmdline) == {"sdc"}
    assert live_medium_devices("", (), "root=/dev/vda2 ro") == {"vda"}
    assert live_medium_devices("", (), "root=/dev/nfs nfsroot=1.2.3.4:/x") == set()


def test_live_medium_uses_known_disk_names() -> None:
    disks = [Disk("xyz0", size_bytes=GB), Disk("sda", size_bytes=GB)]
    assert live_medium_devices("/dev/xyz0p3 / ext4 rw 0 0\n/dev/sda12 /a ext4 rw 0 0\n", disks) == {"xyz0", "sda"}


def test_live_medium_tolerates_garbage() -> None:
    assert live_medium_devices("\n\n   \n/dev/\n/dev/../../etc x\n" + "\x00" * 10) == set()


def test_mounts_feed_choose_target() -> None:
    live = live_medium_devices("/dev/nvme0n1p1 /boot/efi vfat rw 0 0\n", PC)
    assert choose_target(PC, {}, IMAGE, live).name == "sda"


def test_sample_json_has_the_disks_we_expect() -> None:
    data = json.loads((SAMPLES / "lsblk-pc.json").read_text())
    assert [d["name"] for d in data["blockdevices"]] == ["loop0", "sda", "sdb", "sr0", "nvme0n1"]


def test_huge_numbers_from_lsblk_are_unknown_not_errors() -> None:
    """The agent reads lsblk with the wire's reader too: a size of 5,000 digits or past 64 bits is unknown."""
    devices = [{"name": "sda", "type": "disk", "size": "9" * 5000}, {"name": "sdb", "type": "disk", "size": 1 << 70}]
    text = json.dumps({"blockdevices": devices})
    assert [(d.name, d.size_bytes) for d in parse_lsblk_disks(text)] == [("sda", None), ("sdb", None)]
