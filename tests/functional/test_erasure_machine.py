"""The erasure engine's machine-wide rules, on files standing in for a PC's drives (provision.agent.erasure):
a do-nothing erase of a mostly empty drive is caught (the marker written before the method), ONE suspend to
RAM for every frozen drive and before any erase, an ATA password left set keeps the drive not ok, one
sanitize at a time per NVMe controller, an internal drive left out makes the machine's erasure incomplete,
and every log line names the run."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.agent.erasure.engine import erase_drives, skip
from provision.agent.erasure.verify import sample_blocks
from provision.wire.erasure import MAX_DRIVES, ErasePlan, ErasureReport
from tests.support.erasure_disks import ErasingTools, FakeNvme, NvmeDrive, disk, fill, pattern_left
from tests.support.erasure_fakes import security_line
from tests.support.paths import SAMPLES

MiB = 1 << 20
SERIAL = "S4EVNF0M123456A"
CAPTURED = SAMPLES / "erasure"
INTEL, WDC = CAPTURED / "intel-ssdsc2ct240a4", CAPTURED / "wdc-pc-sn730"
SUSPEND = ["rtcwake", "-m", "mem", "-s", "5"]


def no_sleep(seconds: float) -> None:
    pass


@pytest.mark.parametrize(("crypto", "method", "words"), [
    (False, "nvme-format-user-data", "do not read as zeros"),
    (True, "nvme-format-crypto", "still hold the data they held before"),
])  # fmt: skip
def test_a_do_nothing_erase_of_a_mostly_empty_drive_is_not_verified(
    tmp_path: Path, crypto: bool, method: str, words: str
) -> None:
    """FOG's FOS#125: the donor's data lies where the sample does not read, every sampled piece already reads
    zeros, and the NVMe format does nothing: the marker written before the method is still there."""
    size = 64 * MiB
    path = tmp_path / "nvme0n1"
    path.write_bytes(bytes(size))
    blocks = sample_blocks(size, 5.0, SERIAL)
    outside = next(o for o in range(0, size, MiB) if not any(s <= o < s + n for s, n in blocks))
    with path.open("r+b") as f:
        f.seek(outside + 4096)
        f.write(b"DONORDATA payroll 2019")
    fake = FakeNvme({"nvme0n1": NvmeDrive(path, SERIAL, "lying", crypto)})
    drives = [(disk("nvme0n1", path, transport="nvme", serial=SERIAL), path)]
    erased = erase_drives(ErasePlan(), drives, live=set(), run=fake, sleep=no_sleep, log_id="run-fos125")
    [nvme] = erased.drives
    assert not erased.ok and nvme.ok is False and nvme.method == method and nvme.verification is not None
    found = nvme.verification
    assert found.mismatches == found.samples == len(blocks) - 2 + 32 and found.note is None
    assert nvme.reason == (
        f"drive nvme0n1 (serial {SERIAL}): after the NVMe format ({'crypto' if crypto else 'user data'} erase), "
        f"{found.samples} of {found.samples} pieces read {words} (first at byte 0): the drive did not erase; "
        "set it aside"
    )
    assert b"DONORDATA" in path.read_bytes()  # the fake really did nothing


def frozen(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / f"frozen-{name}"
    folder.mkdir()
    (folder / "hdparm-I.txt").write_text(security_line((INTEL / "hdparm-I.txt").read_text(), "frozen", True))
    return folder


def test_two_frozen_drives_one_suspend_before_any_erase(tmp_path: Path) -> None:
    folder = tmp_path / "pc"
    folder.mkdir()
    paths = [fill(folder / name, 40 * MiB) for name in ("sda", "sdb")]
    tools = ErasingTools({str(p): frozen(tmp_path, p.name) for p in paths})
    disks = [(disk(p.name, p, transport="sata"), p) for p in paths]
    erased = erase_drives(ErasePlan(), disks, live=set(), run=tools, sleep=no_sleep, log_id="run-2")
    assert erased.ok, erased
    assert tools.calls.count(SUSPEND) == 1
    erases = [i for i, c in enumerate(tools.calls) if "--security-erase-enhanced" in c]
    assert len(erases) == 2 and tools.calls.index(SUSPEND) < min(erases)
    assert all(c != SUSPEND for c in tools.calls[tools.calls.index(SUSPEND) + 1 :])
    for drive in erased.drives:
        assert drive.method == "ata-security-erase-enhanced" and SUSPEND in drive.commands
        assert drive.fallback is not None and "unfrozen by a suspend to RAM" in drive.fallback
    assert all(pattern_left(p) == [] for p in paths)


def test_a_password_left_set_keeps_the_drive_not_ok_though_the_overwrite_worked(tmp_path: Path) -> None:
    path = fill(tmp_path / "sda", 40 * MiB)
    erase = ["hdparm", "--user-master", "u", "--security-erase-enhanced", "provision-erase", str(path)]
    undo = ["hdparm", "--user-master", "u", "--security-disable", "provision-erase", str(path)]
    tools = ErasingTools({str(path): INTEL}, {tuple(erase): (5, "", "SG_IO: error\n"), tuple(undo): (5, "", "")})
    [sda] = erase_drives(ErasePlan(), [(disk("sda", path, transport="sata"), path)], live=set(), run=tools,
                         sleep=no_sleep).drives  # fmt: skip
    assert sda.method == "overwrite" and sda.verification is not None and sda.verification.ok
    assert pattern_left(path) == [] and sda.ok is False
    assert sda.reason == (
        f"drive sda (serial {sda.serial}): the drive's security password 'provision-erase' is still set: it will "
        "lock at power-on; unlock it with hdparm --security-disable provision-erase, or set it aside"
    )


@dataclass
class OneController(ErasingTools):
    """Two namespaces of one NVMe controller: a sanitize erases both (noise, a crypto erase) and lasts until
    its log says completed; ``spans`` holds each sanitize's (start, end)."""

    namespaces: tuple[Path, ...] = ()
    spans: list[list[float]] = field(default_factory=list)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        if argv[:2] == ["nvme", "sanitize"]:
            with self.guard:
                self.spans.append([time.monotonic(), 0.0])
            for path in self.namespaces:
                path.write_bytes(os.urandom(path.stat().st_size))
            time.sleep(0.2)  # a while: a second thread would start its own now
        reply = super().answer(argv)
        if argv[:2] == ["nvme", "sanitize-log"] and "Completed Successfully" in reply[1]:
            with self.guard:
                for span in self.spans:
                    span[1] = span[1] or time.monotonic()
        return reply


def test_one_sanitize_at_a_time_per_nvme_controller(tmp_path: Path) -> None:
    folder = tmp_path / "pc"
    folder.mkdir()
    paths = (fill(folder / "nvme0n1", 40 * MiB), fill(folder / "nvme0n2", 40 * MiB))
    tools = OneController({str(p): WDC for p in paths}, namespaces=paths)
    disks = [(disk(p.name, p, transport="nvme"), p) for p in paths]
    erased = erase_drives(ErasePlan(), disks, live=set(), run=tools, sleep=no_sleep, log_id="run-5")
    assert erased.ok, erased
    assert [d.method for d in erased.drives] == ["nvme-sanitize-crypto"] * 2
    assert len(tools.spans) == 2 and all(end for _, end in tools.spans)
    first, second = sorted(tools.spans)
    assert first[1] <= second[0], "a second sanitize started while the controller's first one ran"


def test_an_internal_drive_left_out_makes_the_erasure_incomplete(tmp_path: Path) -> None:
    stick = tmp_path / "sdb"
    stick.write_bytes(bytes(MiB))
    assert skip(disk("sda", stick, transport="sata"), {"sda"}).internal is True  # type: ignore[union-attr]
    assert skip(disk("sdb", stick, transport="usb"), {"sdb"}).internal is False  # type: ignore[union-attr]
    assert skip(disk("sdc", stick, removable=True), {"sdc"}).internal is False  # type: ignore[union-attr]
    assert skip(disk("sdd", stick, transport="usb"), set()).internal is False  # type: ignore[union-attr]
    assert skip(disk("loop0", stick), set()).internal is False  # type: ignore[union-attr]
    assert skip(disk("sde", stick, transport="sata"), set()) is None
    folder = tmp_path / "pc"
    folder.mkdir()
    disks = []
    for n in range(MAX_DRIVES + 1):
        path = folder / f"vd{n}"
        path.write_bytes(b"donor" * 100)
        disks.append((disk(f"vd{n}", path, transport="virtio"), path))
    erased = erase_drives(ErasePlan(method="overwrite"), disks, live=set(), run=FakeNvme({}), sleep=no_sleep)
    assert len(erased.drives) == MAX_DRIVES and all(d.ok for d in erased.drives)
    [over] = erased.skipped
    assert over.device == f"vd{MAX_DRIVES}" and over.internal is True and "more than 32 drives" in over.reason
    assert not erased.ok and not ErasureReport("t" * 32, erased.drives, erased.skipped).ok
    live = erase_drives(ErasePlan(method="overwrite"), disks[:2], live={"vd1"}, run=FakeNvme({}), sleep=no_sleep)
    assert [d.ok for d in live.drives] == [True] and live.skipped[0].internal and not live.ok


def test_every_log_line_of_the_erasure_names_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "pc"
    folder.mkdir()
    paths = [fill(folder / "sda", 40 * MiB), fill(folder / "nvme0n1", 40 * MiB)]
    tools = ErasingTools({str(paths[0]): frozen(tmp_path, "sda"), str(paths[1]): WDC},
                         {("smartctl",): (1, "", "smartctl: no answer\n")})  # fmt: skip
    disks = [
        (disk("sda", paths[0], transport="sata"), paths[0]),
        (disk("nvme0n1", paths[1], transport="nvme"), paths[1]),
    ]
    with caplog.at_level(logging.INFO, logger="provision.agent"):
        erase_drives(ErasePlan(), disks, live=set(), run=tools, sleep=no_sleep, log_id="run-9f3")
    ours = [r for r in caplog.records if r.name.startswith("provision.agent")]
    assert any("smartctl" in r.getMessage() for r in ours) and any("erasing with" in r.getMessage() for r in ours)
    assert [r.getMessage() for r in ours if not r.getMessage().startswith("run-9f3: ")] == []


def test_a_drive_locked_by_an_interrupted_erase_is_unlocked_marked_and_erased(tmp_path: Path) -> None:
    """The locked sample is frozen too: the suspend, then provision's password unlocks it (it refuses reads and
    writes while locked: the marker could not be written), then the enhanced erase."""
    path = fill(tmp_path / "sda", 40 * MiB)
    tools = ErasingTools({str(path): CAPTURED / "intel-ssdsc2ct240a4-locked"})
    [sda] = erase_drives(ErasePlan(), [(disk("sda", path, transport="sata"), path)], live=set(), run=tools,
                         sleep=no_sleep, log_id="run-lock").drives  # fmt: skip
    unlock = ["hdparm", "--user-master", "u", "--security-unlock", "provision-erase", str(path)]
    assert sda.ok and sda.method == "ata-security-erase-enhanced", sda
    assert (
        tools.calls.index(SUSPEND)
        < tools.calls.index(unlock)
        < next(i for i, c in enumerate(tools.calls) if "--security-erase-enhanced" in c)
    )
    assert unlock in sda.commands and pattern_left(path) == []
