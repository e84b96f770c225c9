"""Two QEMU PCs with blank disks are imaged end to end by a real `provision serve` in a lab namespace.

- PC ``bios``: SeaBIOS + iPXE ROM -> undionly.kpxe -> iPXE -> the live environment (``provision live build``);
  PC ``sb``: OVMF with Secure Boot ON, no NIC ROM -> shim -> signed GRUB -> Debian's signed kernel -> the
  same live environment. Both run at once.
- In the live environment the agent probes the PC, says hello, gets the tiny image's plan (recipes by
  firmware: the BIOS PC's recipe grows the root file system, the UEFI PC's does not), writes, verifies,
  reports and reboots; QEMU runs with -no-reboot, so the reboot ends it.
- On the host: both runs are ``done`` with a complete verification of the tiny image's root digest; the disk
  files are compared chunk by chunk (sha256) with the image export: the UEFI PC's disk is the export
  byte for byte (and zeros after it); the BIOS PC's differs only in the GPT sector range and inside its
  root partition, which now ends at the disk's end and holds a clean ext4 file system that fills it.
- Both PCs are powered on again: they network-boot, provision's boot script now says "local disk", they boot
  the tiny image from their own disk, whose first-boot callback reaches provision; `provision machines`
  shows both done with the verified digest.

Needs root, qemu-system-x86, ovmf, mmdebstrap and the Debian archive (live environment and boot files,
cached under /var/cache/provision). Measured times: docs/live.md.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provision.bootfiles import BootRoot
from provision.builder.tinyinit import CALLBACK_OK, FIRSTBOOT_MARKER
from provision.credentials import firstboot_secret, load_or_create_key
from provision.images.index import ImageVersion
from provision.lab import PC, Lab
from provision.wire.api import FIRSTBOOT_SECRET_PATH
from tests.support.e2e import (
    IMAGING_STEPS,
    BootWatch,
    ProvisionServe,
    Timing,
    machines_json,
    provision_config,
    require_lab,
)
from tests.support.live import LiveEnv
from tests.support.sites import chunk_mismatches, live_boot_root, only_run, tiny_export

pytestmark = pytest.mark.e2e

MAC_BIOS = "52:54:00:18:20:01"
MAC_SB = "52:54:00:18:20:02"
MiB = 1 << 20
DISK_BIOS = 256 * MiB  # bigger than the image: the root file system grows
DISK_SB = 192 * MiB
IMAGING_TIMEOUT = 900.0  # PXE -> live -> write -> reboot, per PC (2 at once under TCG)
BOOT_TIMEOUT = 300.0
FAIL = r"Kernel panic|Access Denied|Verification failed|PROVISION-LIVE-AGENT-EXIT|PROVISION-TINY-FAILED"
RECIPES = {
    "bios.yaml": "name: bios-pc\nmatch:\n  firmware: bios\nimage: tiny\nwipe: zero\ngrow_root: true\n",
    "uefi.yaml": "name: uefi-pc\nmatch:\n  firmware: uefi\nimage: tiny\nwipe: zero\ngrow_root: false\n",
}


def firstboot_steps(mac: str) -> list[tuple[str, str]]:
    return [
        ("boot script: local disk", rf"provision: {mac} -> local disk"),
        ("tiny first boot", FIRSTBOOT_MARKER),
        ("callback OK", CALLBACK_OK),
    ]


@dataclass
class Site:
    lab: Lab
    server: ProvisionServe
    version: ImageVersion
    label: str  # the build's label, which the tiny image's first boot reports
    export_raw: Path
    pcs: dict[str, PC]
    watches: dict[str, BootWatch]


@pytest.fixture(scope="module")
def site(
    netboot_root: BootRoot, trixie_rom: Path, live_env: LiveEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    require_lab("bios", "uefi-secureboot")
    tmp = tmp_path_factory.mktemp("imaging")
    root = live_boot_root(netboot_root, live_env, tmp / "boot")
    tiny = tiny_export(tmp)
    recipes = tmp / "recipes"
    recipes.mkdir()
    for name, text in RECIPES.items():
        (recipes / name).write_text(text)
    with Lab(workdir=tmp / "lab") as lab:
        config = {**provision_config(lab), "image_store": str(tiny.store.root), "recipes_dir": str(recipes)}
        server = ProvisionServe.start(lab, root, config, dhcp="full")
        pcs = {
            MAC_BIOS: lab.add_pc(
                "bios", firmware="bios", mac=MAC_BIOS, rom=trixie_rom, disk_size=DISK_BIOS, memory=1024
            ),
            MAC_SB: lab.add_pc("sb", firmware="uefi-secureboot", mac=MAC_SB, rom=False, disk_size=DISK_SB, memory=1024),
        }
        watches = {
            mac: BootWatch(pc, IMAGING_STEPS, IMAGING_TIMEOUT, FAIL, exit_timeout=120) for mac, pc in pcs.items()
        }
        yield Site(lab, server, tiny.built.version, tiny.built.label, tiny.export_raw, pcs, watches)
        for pc in lab.pcs:
            pc.stop()


def zeros_after(disk: Path, start: int) -> bool:
    with disk.open("rb") as d:
        d.seek(start)
        while block := d.read(4 * MiB):
            if block.count(0) != len(block):
                return False
    return True


def secret_in_root(disk: Path, offset: int) -> tuple[str, str]:
    """(content, octal permission bits) of the first-boot secret file in the ext4 root at ``offset`` of ``disk``
    (the loop device runs to the disk's end: a grown root is larger than the image's partition)."""
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--read-only", "--offset", str(offset), str(disk)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        cat = subprocess.run(["debugfs", "-R", f"cat {FIRSTBOOT_SECRET_PATH}", loop], capture_output=True, text=True)
        stat = subprocess.run(["debugfs", "-R", f"stat {FIRSTBOOT_SECRET_PATH}", loop], capture_output=True, text=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    mode = re.search(r"Mode:\s+0?(\d{4})", stat.stdout)
    return cat.stdout, mode.group(1) if mode else stat.stdout + stat.stderr


@pytest.mark.parametrize("mac", [MAC_BIOS, MAC_SB], ids=["seabios", "ovmf-secureboot"])
def test_imaged_and_verified(site: Site, mac: str, timing: Timing) -> None:
    pc = site.pcs[mac]
    watch = site.watches[mac]
    watch.result(timing, f"{pc.name} imaging:")
    assert watch.exit_code == 0, pc.tail(40)
    run = only_run(site.server, mac)
    assert (run["state"], run["digest"], run["image"]) == ("done", site.version.digest, "tiny"), run
    verifications: list[dict[str, Any]] = run["verifications"]
    [verification] = verifications
    assert verification["complete"] and verification["read_back"] == "ok", verification
    hello = [e["detail"] for e in site.server.events(mac) if e["kind"] == "hello"][-1]
    assert hello["boot"]["firmware"] == ("bios" if mac == MAC_BIOS else "uefi")
    assert hello["boot"]["secure_boot"] is (None if mac == MAC_BIOS else True)

    disk, size = pc.disk_path, site.version.index.disk_size
    bad = chunk_mismatches(disk, site.export_raw, site.version)
    root = max(site.version.index.layout.partitions, key=lambda p: p.start)
    sector = site.version.index.sector_size
    start, old_end = root.start * sector, (root.start + root.size) * sector
    chunk = site.version.index.chunk_size
    in_root = set(range(start // chunk, -(-old_end // chunk)))
    # the run's first-boot secret is written into the root file system (issue 12, defect 3): the only change
    # besides growing it, and the file holds exactly the secret the server derives for the run, mode 0600
    secret = firstboot_secret(load_or_create_key(site.server.state_dir / "secrets" / "server.key"), str(run["id"]))
    assert secret_in_root(disk, start) == (secret, "0600")
    if mac == MAC_SB:  # no grow: the disk is the export but for the secret, and the blank rest stays zeros
        assert set(bad) <= in_root and zeros_after(disk, size), bad
        return
    [grow] = [e["detail"] for e in site.server.events(mac) if e["kind"] == "grow"]
    assert grow["grown"] is True, grow
    allowed = {0} | in_root
    assert set(bad) <= allowed, (bad, allowed)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True).stdout)
    last = max(table["partitiontable"]["partitions"], key=lambda p: p["start"])
    assert last["start"] == root.start and (last["start"] + last["size"]) * sector > DISK_BIOS - 2 * MiB
    loop = subprocess.run(
        [
            "losetup",
            "--find",
            "--show",
            "--read-only",
            "--offset",
            str(start),
            "--sizelimit",
            str(last["size"] * sector),
            str(disk),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        fsck = subprocess.run(["e2fsck", "-fn", loop], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        header = subprocess.run(["dumpe2fs", "-h", loop], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
        blocks, block_size = int(fields["Block count"]), int(fields["Block size"])
        assert last["size"] * sector - blocks * block_size < 4 * MiB
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


@pytest.mark.parametrize("mac", [MAC_BIOS, MAC_SB], ids=["seabios", "ovmf-secureboot"])
def test_boots_its_own_disk_and_calls_back(site: Site, mac: str, timing: Timing) -> None:
    watch = site.watches[mac]
    watch.result()
    if only_run(site.server, mac)["state"] != "done":
        pytest.skip("not imaged (see test_imaged_and_verified)")
    pc = site.lab.power_on(site.pcs[mac])
    site.pcs[mac] = pc
    again = BootWatch(pc, firstboot_steps(mac), BOOT_TIMEOUT, FAIL, exit_timeout=60)
    again.result(timing, f"{pc.name} own disk:")
    assert CALLBACK_OK in pc.serial_text()
    events = site.server.events(mac)
    firstboot = [e["detail"] for e in events if e["kind"] == "firstboot"]
    assert len(firstboot) == 1 and firstboot[0]["image"] == "tiny", events
    assert firstboot[0]["label"] == site.label


def test_machines_shows_both_done_with_the_verified_digest(site: Site) -> None:
    for watch in site.watches.values():
        watch.result()
    rows = machines_json(site.server.state_dir)
    for mac in (MAC_BIOS, MAC_SB):
        assert (rows[mac]["state"], rows[mac]["verified_digest"]) == ("done", site.version.digest), rows[mac]
