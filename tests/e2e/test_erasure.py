"""A QEMU PC with two disks full of a donor's data is erased drive by drive, verified, recorded, imaged and certified
(issue 15).

- The PC: SeaBIOS + Debian 13's iPXE ROM, an NVMe disk (serial PROV-NVME-0001) and a SATA disk on AHCI (serial
  PROV-SATA-0001), 256 MiB each, both filled by the host with the pattern of tests/support/disk_pattern.py (a 4 KiB
  block naming its own offset) before it powers on.
- The recipe: ``erase: {method: auto, verify: full}`` then the tiny image onto the NVMe disk (``target_disk:
  transport: [nvme]``), no root growth. The PC network-boots the live environment; the agent erases every drive
  by what its device can do (QEMU's NVMe: Format NVM with user data erase; QEMU's SATA disk has no erase command:
  one overwrite pass), reads both back whole, reports, then writes and verifies the image; the run is ``done``.
- On the host: the records name both drives with their serials, methods, NIST categories and full read-backs;
  no byte of the pattern is left on either disk file (the marker is nowhere); outside the image's data chunks
  (from its index in the store) and its root partition every byte is zero, and the image's chunks are the
  export's, chunk by chunk, but in the root file system (where the agent writes the run's first-boot secret).
- ``provision certificate show MAC --format json`` names both drives and the imaging; ``provision certificate
  verify FILE --key PUB`` (the public key from ``provision certificate key``, offline as a donor would) accepts
  it, and refuses the same file with one character of a serial changed.

Needs root, qemu-system-x86, mmdebstrap and the Debian archive (live environment, boot files and the tiny image;
cached under /var/cache/provision). Times: docs/lab.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from provision.bootfiles import BootRoot
from provision.images.index import ImageVersion
from provision.lab import PC, Lab, LabDisk
from tests.support.disk_pattern import data_ranges, nonzero_outside, pattern_hits, write_pattern
from tests.support.e2e import IMAGING_STEPS, BootWatch, ProvisionServe, Timing, provision_config, require_lab
from tests.support.live import LiveEnv
from tests.support.paths import REPO
from tests.support.sites import chunk_mismatches, live_boot_root, only_run, root_chunks, tiny_export

pytestmark = pytest.mark.e2e

MAC = "52:54:00:18:50:01"
MiB = 1 << 20
DISK_SIZE = 256 * MiB  # the tiny image is 128 MiB
NVME_SERIAL = "PROV-NVME-0001"
SATA_SERIAL = "PROV-SATA-0001"
IMAGING_TIMEOUT = 900.0  # PXE -> live -> erase + read back 2 x 256 MiB -> write -> reboot, under TCG
FAIL = r"Kernel panic|PROVISION-LIVE-AGENT-EXIT|PROVISION-AGENT-RESULT (?!done)|No bootable device"
RECIPE = """name: erase-and-image
match:
  firmware: bios
erase:
  method: auto
  verify: full
image: tiny
target_disk:
  transport: [nvme]
wipe: zero
grow_root: false
"""
EXPECTED = {  # serial -> (interface, method, NIST category): what QEMU's devices can do (tests/samples/erasure)
    NVME_SERIAL: ("nvme", "nvme-format-user-data", "purge"),
    SATA_SERIAL: ("sata", "overwrite", "clear"),
}


@dataclass
class Site:
    lab: Lab
    server: ProvisionServe
    version: ImageVersion
    export_raw: Path
    pc: PC
    watch: BootWatch
    tmp: Path


@pytest.fixture(scope="module")
def site(
    netboot_root: BootRoot, trixie_rom: Path, live_env: LiveEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    require_lab("bios")
    tmp = tmp_path_factory.mktemp("erasure")
    root = live_boot_root(netboot_root, live_env, tmp / "boot")
    tiny = tiny_export(tmp)
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "erase-and-image.yaml").write_text(RECIPE)
    pattern = write_pattern(tmp / "pattern.raw", DISK_SIZE)
    with Lab(workdir=tmp / "lab") as lab:
        config = {**provision_config(lab), "image_store": str(tiny.store.root), "recipes_dir": str(recipes)}
        server = ProvisionServe.start(lab, root, config, dhcp="full")
        disks = [LabDisk("nvme", DISK_SIZE, NVME_SERIAL, pattern), LabDisk("sata", DISK_SIZE, SATA_SERIAL, pattern)]
        pc = lab.add_pc("erase", firmware="bios", mac=MAC, rom=trixie_rom, memory=1024, disks=disks)
        pattern.unlink()  # copied into both disks
        watch = BootWatch(pc, IMAGING_STEPS, IMAGING_TIMEOUT, FAIL, exit_timeout=120)
        yield Site(lab, server, tiny.built.version, tiny.export_raw, pc, watch, tmp)
        for running in lab.pcs:
            running.stop()


def imaged(site: Site) -> dict[str, Any]:
    """The PC's run once the PC has rebooted (QEMU ended); the test is skipped when the run is not done."""
    site.watch.result()
    run = only_run(site.server, MAC)
    if run["state"] != "done":
        pytest.skip(f"the run is {run['state']} (see test_every_drive_erased_verified_recorded_then_imaged)")
    return run


def seconds(record: dict[str, Any]) -> float:
    started, ended = (datetime.fromisoformat(record[key].replace("Z", "+00:00")) for key in ("started", "ended"))
    return (ended - started).total_seconds()


def test_every_drive_erased_verified_recorded_then_imaged(site: Site, timing: Timing) -> None:
    site.watch.result(timing, "erase+image:")
    assert site.watch.exit_code == 0, site.pc.tail(40)
    run = only_run(site.server, MAC)
    assert (run["state"], run["image"], run["digest"]) == ("done", "tiny", site.version.digest), run
    records = {r["serial"]: r for r in run["erasures"]}
    assert sorted(records) == sorted(EXPECTED), run["erasures"]
    for serial, (interface, method, category) in EXPECTED.items():
        record = records[serial]
        assert (record["interface"], record["method"], record["category"]) == (interface, method, category), record
        assert record["ok"] is True and record["size_bytes"] == DISK_SIZE, record
        check = record["verification"]
        assert (check["method"], check["pattern"], check["ok"]) == ("full", "zeros", True), record
        assert (check["bytes_checked"], check["mismatches"]) == (DISK_SIZE, 0), record
        assert record["model"] and record["tools"], record
        timing(f"erase {record['device']} {method} + full read-back (s)", seconds(record))
    assert records[NVME_SERIAL]["rotational"] is False, records[NVME_SERIAL]
    nvme_calls = [call for call in records[NVME_SERIAL]["commands"] if Path(call[0]).name == "nvme"]
    assert any("format" in call for call in nvme_calls), records[NVME_SERIAL]["commands"]
    [verification] = run["verifications"]
    assert verification["complete"] is True, verification


def test_no_byte_of_the_pattern_is_left_on_either_disk(site: Site) -> None:
    imaged(site)
    nvme, sata = site.pc.disk_paths
    for disk in (nvme, sata):
        assert pattern_hits(disk) == [], f"{disk.name}: the donor's pattern is still there"
    assert nonzero_outside(sata) == [], "the SATA disk is not all zeros after its overwrite"
    index = site.version.index
    # the agent writes the run's first-boot secret into the image's root file system (tests/e2e/test_imaging.py
    # checks it): the root partition's chunks may differ from the export, and its free blocks may take it
    root = max(index.layout.partitions, key=lambda p: p.start)
    root_range = (root.start * index.sector_size, (root.start + root.size) * index.sector_size)
    written = [*data_ranges(index), root_range]
    assert nonzero_outside(nvme, written) == [], "the NVMe disk holds data outside the image"
    bad = chunk_mismatches(nvme, site.export_raw, site.version)
    assert set(bad) <= root_chunks(site.version), (
        f"chunks of the image that differ on the NVMe disk outside its root: {bad}"
    )


def certificate_cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "provision", "certificate", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)


def test_the_certificate_names_both_drives_verifies_and_a_tampered_one_does_not(site: Site) -> None:
    run = imaged(site)
    state = ["--state-dir", str(site.server.state_dir)]
    key = certificate_cli(site, "key", *state)
    assert key.returncode == 0, key.stderr
    public = site.tmp / "workshop.pem"
    public.write_text(key.stdout)
    signed = site.tmp / "certificate.json"
    show = certificate_cli(site, "show", MAC, "--format", "json", "--out", str(signed), *state)
    assert show.returncode == 0, show.stderr
    document = json.loads(signed.read_text())
    certificate = document["certificate"]
    assert (certificate["machine"]["mac"], certificate["run"]) == (MAC, run["id"]), certificate["machine"]
    drives = {d["erasure"]["serial"]: d["erasure"] for d in certificate["drives"]}
    assert {serial: (d["method"], d["category"], d["ok"]) for serial, d in drives.items()} == {
        serial: (method, category, True) for serial, (_interface, method, category) in EXPECTED.items()
    }
    imaging = certificate["imaging"]
    assert (imaging["image"], imaging["root_digest"], imaging["complete"]) == ("tiny", site.version.digest, True)

    verify = certificate_cli(site, "verify", str(signed), "--key", str(public))
    assert verify.returncode == 0 and verify.stdout.startswith("valid:"), verify.stdout + verify.stderr
    tampered = site.tmp / "tampered.json"
    tampered.write_text(signed.read_text().replace(SATA_SERIAL, SATA_SERIAL[:-1] + "2", 1))  # one character
    refused = certificate_cli(site, "verify", str(tampered), "--key", str(public))
    assert refused.returncode != 0, refused.stdout
    assert "valid:" not in refused.stdout and "Traceback" not in refused.stderr, refused.stdout + refused.stderr


def test_the_server_logged_no_error(site: Site) -> None:
    site.watch.result()
    assert site.server.problems() == [], site.server.problems()
