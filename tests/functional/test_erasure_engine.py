"""The agent's erasure engine on files standing in for a PC's drives, filled with a donor's data first: the
real overwrite and read-back, the real method choice and NVMe commands (provision.agent.erasure), a fake
nvme-cli that really erases its file, or lies, or fails. A drive whose erase command "succeeds" but whose
read-back finds data left ends not ok, with the reason in plain words."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from provision.agent.erasure.drive_io import DriveReader, drive_size, forget_cached
from provision.agent.erasure.engine import erase_drives
from provision.agent.erasure.overwrite import overwrite
from provision.agent.erasure.verify import check, sample_blocks
from provision.wire.erasure import ErasePlan, ErasureReport
from provision.wire.probe import Disk
from tests.support.agent import loop
from tests.support.erasure_disks import Behaviour, ErasingTools, FakeNvme, NvmeDrive, disk, fill, pattern_left
from tests.support.paths import SAMPLES

MiB = 1 << 20
SIZE = 48 * MiB
SERIAL = "S4EVNF0M123456A"
CAPTURED = SAMPLES / "erasure"  # outputs of real drives (A1)


def machine(
    tmp_path: Path, behaviour: Behaviour = "honest", crypto: bool = False
) -> tuple[list[tuple[Disk, Path]], FakeNvme]:
    """An NVMe drive, a SATA drive (no hdparm: overwritten), a USB stick and the live medium, all holding
    the donor's data."""
    folder = tmp_path / "pc"
    folder.mkdir(parents=True)
    paths = {name: fill(folder / name, SIZE) for name in ("nvme0n1", "sda", "sdb", "sdc")}
    disks = [
        (disk("nvme0n1", paths["nvme0n1"], transport="nvme", serial=SERIAL, rotational=False), paths["nvme0n1"]),
        (disk("sda", paths["sda"], transport="sata", serial="WD-WCC4N1234567", model="WDC WD5000AAKX"), paths["sda"]),
        (disk("sdb", paths["sdb"], transport="usb", removable=True, model="SanDisk Cruzer"), paths["sdb"]),
        (disk("sdc", paths["sdc"], transport="usb"), paths["sdc"]),  # the live medium, a stick
    ]
    fake = FakeNvme({"nvme0n1": NvmeDrive(paths["nvme0n1"], SERIAL, behaviour, crypto)})
    return disks, fake


def test_every_drive_is_erased_by_its_method_and_verified(tmp_path: Path) -> None:
    disks, fake = machine(tmp_path)
    seen: dict[str, list[tuple[str, float | None]]] = {}
    lock = threading.Lock()

    def progress(device: str, stage: str, fraction: float | None) -> None:
        with lock:
            seen.setdefault(device, []).append((stage, fraction))

    erased = erase_drives(ErasePlan(), disks, live={"sdc"}, run=fake, sleep=lambda s: None, progress=progress,
                          log_id="run-1")  # fmt: skip
    nvme, sata = erased.drives
    assert erased.ok and [s.device for s in erased.skipped] == ["sdb", "sdc"]
    assert "USB" in erased.skipped[0].reason or "removable" in erased.skipped[0].reason
    assert "live medium" in erased.skipped[1].reason
    assert (nvme.device, nvme.method, nvme.category, nvme.ok) == ("nvme0n1", "nvme-format-user-data", "purge", True)
    assert nvme.serial == SERIAL and nvme.model == "Samsung SSD 970 EVO Plus 500GB" and nvme.vendor == "Samsung"
    assert nvme.verification is not None and nvme.verification.pattern == "zeros" and nvme.verification.ok
    assert nvme.verification.samples == 16 + 3 + 16 and nvme.verification.method == "sample"
    assert any(c[:2] == ["nvme", "format"] and "--ses=1" in c for c in nvme.commands)
    assert nvme.tools["nvme-cli"].startswith("nvme version 2.4") and nvme.tools["provision"]
    assert nvme.fallback is not None and "no NVMe Sanitize" in nvme.fallback
    assert (sata.method, sata.category, sata.ok, sata.passes) == ("overwrite", "clear", True, 1)
    assert sata.fallback is not None and "hdparm" in sata.fallback
    assert sata.started.endswith("Z") and sata.ended >= sata.started
    for _, path in disks[:2]:
        assert pattern_left(path) == [] and path.read_bytes() == bytes(SIZE)
    for _, path in disks[2:]:  # the USB stick and the live medium are not touched
        assert len(pattern_left(path)) == SIZE // MiB
    assert seen["sda"][-1] == ("verifying", 1.0) and ("erasing", 1.0) in seen["sda"]
    assert seen["nvme0n1"][-1] == ("verifying", 1.0) and set(seen) == {"nvme0n1", "sda"}
    report = ErasureReport("t" * 32, erased.drives, erased.skipped)
    assert ErasureReport.from_dict(report.to_dict()) == report  # what the server will read


def test_a_lying_drive_is_not_erased_and_says_why(tmp_path: Path) -> None:
    disks, fake = machine(tmp_path, "lying")
    erased = erase_drives(ErasePlan(), disks[:2], live=set(), run=fake, sleep=lambda s: None)
    nvme, sata = erased.drives
    assert not erased.ok and sata.ok
    assert nvme.ok is False and nvme.method == "nvme-format-user-data" and nvme.verification is not None
    assert nvme.verification.mismatches == nvme.verification.samples == 35
    assert nvme.verification.first_mismatches[:2] == [0, MiB]
    assert nvme.reason == (
        f"drive nvme0n1 (serial {SERIAL}): after the NVMe format (user data erase), 35 of 35 pieces read do not "
        "read as zeros (first at byte 0): the drive did not erase; set it aside"
    )
    assert len(pattern_left(disks[0][1])) == SIZE // MiB  # the fake really left the data
    ErasureReport.from_dict(ErasureReport("t" * 32, erased.drives).to_dict())


def test_a_crypto_erase_is_checked_against_what_the_drive_held_before(tmp_path: Path) -> None:
    disks, fake = machine(tmp_path, crypto=True)
    [nvme] = erase_drives(ErasePlan(), disks[:1], live=set(), run=fake, sleep=lambda s: None).drives
    assert (nvme.method, nvme.ok) == ("nvme-format-crypto", True) and nvme.verification is not None
    assert nvme.verification.pattern == "changed" and nvme.verification.note is None
    assert pattern_left(disks[0][1]) == []
    disks, fake = machine(tmp_path / "again", "lying", crypto=True)
    [lying] = erase_drives(ErasePlan(), disks[:1], live=set(), run=fake, sleep=lambda s: None).drives
    assert lying.ok is False and lying.verification is not None and lying.verification.mismatches == 35
    assert lying.reason is not None and "still hold the data they held before" in lying.reason


def test_a_failed_firmware_erase_falls_back_to_the_overwrite(tmp_path: Path) -> None:
    disks, fake = machine(tmp_path, "failing")
    [nvme] = erase_drives(ErasePlan(verify="full"), disks[:1], live=set(), run=fake, sleep=lambda s: None).drives
    assert (nvme.method, nvme.category, nvme.ok) == ("overwrite", "clear", True)
    assert nvme.fallback is not None and "NVMe format (user data erase) failed" in nvme.fallback
    assert "NIST Clear, not Purge" in nvme.fallback
    assert nvme.errors and "INVALID_FORMAT" in nvme.errors[0]
    assert any(c[:2] == ["nvme", "format"] for c in nvme.commands)
    assert nvme.verification is not None and nvme.verification.method == "full"
    assert nvme.verification.bytes_checked == SIZE and pattern_left(disks[0][1]) == []


def test_overwrite_only_and_a_drive_that_cannot_be_written(tmp_path: Path) -> None:
    disks, fake = machine(tmp_path)
    gone = tmp_path / "pc" / "sda"
    gone.unlink()
    gone.mkdir()  # a drive that cannot be opened for writing
    empty = tmp_path / "pc" / "sdd"
    empty.touch()  # a drive that reports 0 bytes
    disks = [*disks[:2], (disk("sdd", empty, transport="sata"), empty)]
    erased = erase_drives(ErasePlan(method="overwrite"), disks, live=set(), run=fake, sleep=lambda s: None)
    nvme, sata, zero = erased.drives
    assert zero.ok is False and zero.reason is not None and "reports a size of 0 bytes" in zero.reason
    assert (nvme.method, nvme.ok) == ("overwrite", True) and not any(c[:2] == ["nvme", "format"] for c in fake.calls)
    assert nvme.fallback is not None and "erase: method: overwrite" in nvme.fallback
    assert sata.ok is False and sata.verification is None and sata.reason is not None
    assert sata.reason == (
        "drive sda (serial WD-WCC4N1234567): writing the verification marker failed: opening for writing the drive "
        "gave 'Is a directory'; the drive is not erased, set it aside"
    )
    assert sata.errors == [f"{gone}: opening for writing failed: Is a directory (errno 21)"]


def test_captured_drives_erased_by_their_firmware_and_a_lying_one_caught(tmp_path: Path) -> None:
    """A1's FakeTools answering from captured outputs of real drives (a WD PC SN730 NVMe, an Intel 330 SATA
    SSD), whose erase commands really erase the files; then the same SSD lying."""
    folder = tmp_path / "pc"
    folder.mkdir()
    nvme_path, ssd_path = fill(folder / "nvme0n1", SIZE), fill(folder / "sda", SIZE)
    disks = [
        (disk("nvme0n1", nvme_path, transport="nvme"), nvme_path),
        (disk("sda", ssd_path, transport="sata"), ssd_path),
    ]
    tools = ErasingTools({str(nvme_path): CAPTURED / "wdc-pc-sn730", str(ssd_path): CAPTURED / "intel-ssdsc2ct240a4"})
    nvme, ssd = erase_drives(ErasePlan(), disks, live=set(), run=tools, sleep=lambda s: None).drives
    for drive in (nvme, ssd):
        assert drive.ok and drive.category == "purge" and drive.method != "overwrite", drive
        assert drive.serial and drive.verification is not None and drive.verification.ok
    assert nvme.method.startswith("nvme-") and ssd.method.startswith("ata-")
    assert pattern_left(nvme_path) == [] and pattern_left(ssd_path) == []
    assert any("hdparm" in c for c in ssd.commands) and "hdparm" in ssd.tools

    fill(ssd_path, SIZE)
    lying = ErasingTools({str(ssd_path): CAPTURED / "intel-ssdsc2ct240a4"}, lying=frozenset({str(ssd_path)}))
    [caught] = erase_drives(ErasePlan(), disks[1:], live=set(), run=lying, sleep=lambda s: None).drives
    assert caught.ok is False and caught.method == ssd.method and caught.verification is not None
    assert caught.verification.mismatches == caught.verification.samples
    assert caught.reason is not None and "the drive did not erase; set it aside" in caught.reason
    assert caught.reason.startswith(f"drive sda (serial {ssd.serial}): after the ATA")


@pytest.mark.parametrize("sector", [512, 4096])
def test_a_real_block_device_is_overwritten_and_read_back_from_the_medium(tmp_path: Path, sector: int) -> None:
    """A loop device (512 and 4Kn sectors): its size from BLKGETSIZE64, opened O_EXCL, written and read with
    O_DIRECT; a byte changed on the backing file behind the kernel's back is found by the read-back."""
    size = 40 * MiB + 3 * 4096
    backing = fill(tmp_path / "backing", size)
    with loop(backing, "--sector-size", str(sector), "--direct-io=on") as device:
        path = Path(device)
        assert drive_size(path) == size
        done = overwrite(path)
        assert (done.bytes_written, done.io_mode) == (size, "O_DIRECT")
        assert pattern_left(backing) == [] and backing.read_bytes() == bytes(size)
        blocks = sample_blocks(size, 20, "loop")
        assert check(path, blocks, "zeros").ok
        with backing.open("r+b") as f:  # the medium changes under the drive: the read-back must see it
            f.seek(blocks[3][0] + 100)
            f.write(b"\x42")
            f.flush()
            os.fsync(f.fileno())
        found = check(path, blocks, "zeros")
        assert (found.ok, found.first_mismatches) == (False, [blocks[3][0] + 100])
        with DriveReader(path) as reader:
            assert reader.block and reader.block_size == sector and reader.io_mode == "O_DIRECT"
        # while something holds the device open (its last close drops the cache), what the kernel cached
        # before an erase answers a buffered read afterwards, until forget_cached
        holder = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(holder, 4096, 0) == bytes(4096)  # cached now
            with backing.open("r+b") as f:
                f.write(b"\x42" * 4096)  # the erase, done by the drive's firmware (behind the page cache)
            stale = os.pread(holder, 4096, 0)
            assert not any("BLKFLSBUF" in problem for problem in forget_cached(path))
            assert stale == bytes(4096) and os.pread(holder, 4096, 0) == b"\x42" * 4096
        finally:
            os.close(holder)
