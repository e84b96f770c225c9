"""The firmware methods' tool calls, checked exactly with ``FakeTools`` (no subprocess): NVMe sanitize and
format, ATA security erase (and its undo when it fails), ATA and SCSI sanitize with their polls, and the
drive's preparation: hidden areas removed, a frozen drive unfrozen by a suspend to RAM (or not)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from provision.agent.erasure.commands import (
    PASSWORD,
    POLL,
    after_suspend,
    needs_unfreeze,
    prepare_drive,
    run_method,
    suspend,
)
from provision.agent.erasure.drives import DriveInfo, inspect_drive
from provision.agent.erasure.methods import Choice, choose_method
from provision.agent.erasure.nvme import NvmeCaps
from provision.agent.erasure.scsi import ScsiCaps
from provision.agent.erasure.tools import MethodFailed
from provision.wire.erasure import ErasePlan
from tests.support.erasure_fakes import FakeTools, Override, security_line
from tests.support.paths import SAMPLES

ERASURE = SAMPLES / "erasure"
INTEL, LOCKED, WDC, HPA = (ERASURE / n for n in ("intel-ssdsc2ct240a4", "intel-ssdsc2ct240a4-locked",
                                                 "wdc-pc-sn730", "forensicswiki-hpa"))  # fmt: skip
SET_PASS = ["hdparm", "--user-master", "u", "--security-set-pass", PASSWORD, "/dev/sda"]
ENHANCED = ["hdparm", "--user-master", "u", "--security-erase-enhanced", PASSWORD, "/dev/sda"]
DISABLE = ["hdparm", "--user-master", "u", "--security-disable", PASSWORD, "/dev/sda"]
IDENTIFY = ["hdparm", "-I", "/dev/sda"]
QEMU_SATA = ERASURE / "qemu-sata"


class Recorder:
    """``sleep`` and ``progress`` stand-ins that remember what they were given."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.progress: list[float | None] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def tell(self, fraction: float | None) -> None:
        self.progress.append(fraction)


def drive(tools: FakeTools, name: str = "sda", transport: str | None = "sata") -> DriveInfo:
    info = inspect_drive(name, Path(f"/dev/{name}"), size_bytes=240057409536, transport=transport, rotational=None,
                         model=None, serial=None, run=tools)  # fmt: skip
    tools.calls.clear()
    tools.timeouts.clear()
    return info


def frozen_copy(tmp_path: Path, source: Path = INTEL) -> Path:
    folder = tmp_path / "frozen"
    folder.mkdir()
    text = security_line((source / "hdparm-I.txt").read_text(), "frozen", True)
    (folder / "hdparm-I.txt").write_text(text)
    return folder


def test_nvme_sanitize_crypto_then_polls_the_log() -> None:
    tools, rec = FakeTools({"/dev/nvme0n1": WDC}, sanitize_polls=2), Recorder()
    info = drive(tools, "nvme0n1", "nvme")
    choice = choose_method(ErasePlan(), info)
    commands = run_method(choice, info, run=tools, sleep=rec.sleep, progress=rec.tell)
    log = ["nvme", "sanitize-log", "/dev/nvme0", "-o", "json"]
    assert tools.calls == [["nvme", "sanitize", "/dev/nvme0", "--sanact=4", "--force"], log, log, log]
    assert commands == [["nvme", "sanitize", "/dev/nvme0", "--sanact=4", "--force"], log]
    assert rec.slept == [POLL, POLL] and rec.progress[-1] == 1.0 and rec.progress[0] == pytest.approx(0.5, abs=0.01)


def test_nvme_cli_2_3_gets_no_force_flag() -> None:
    # Debian 12's nvme-cli 2.3 refuses --force on sanitize (not in its "nvme sanitize --help")
    tools, rec = FakeTools({"/dev/nvme0n1": WDC}), Recorder()
    info = replace(drive(tools, "nvme0n1", "nvme"), tools={"nvme-cli": "nvme version 2.3 (git 2.3)"})
    run_method(Choice("nvme-sanitize-crypto", "changed"), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert tools.calls[0] == ["nvme", "sanitize", "/dev/nvme0", "--sanact=4"]
    unknown = replace(info, tools={})
    run_method(Choice("nvme-sanitize-crypto", "changed"), unknown, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert [c for c in tools.calls if c[1] == "sanitize"][-1] == ["nvme", "sanitize", "/dev/nvme0", "--sanact=4"]


def test_nvme_sanitize_block_uses_sanact_2() -> None:
    tools, rec = FakeTools({"/dev/nvme0n1": WDC}), Recorder()
    info = drive(tools, "nvme0n1", "nvme")
    run_method(Choice("nvme-sanitize-block", "zeros-or-ones"), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert tools.calls[0] == ["nvme", "sanitize", "/dev/nvme0", "--sanact=2", "--force"]


def test_nvme_sanitize_that_fails_says_so() -> None:
    failed = (0, '{"nvme0": {"sprog": 0, "sstat": {"status": "(3) The most recent sanitize operation failed"}}}', "")
    tools = FakeTools({"/dev/nvme0n1": WDC}, {("nvme", "sanitize-log"): failed})
    info, rec = drive(tools, "nvme0n1", "nvme"), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(Choice("nvme-sanitize-crypto", "changed"), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    error = caught.value
    assert error.device == "nvme0n1" and error.method == "nvme-sanitize-crypto" and "failed" in error.reason
    assert error.argv == ["nvme", "sanitize-log", "/dev/nvme0", "-o", "json"] and error.returncode == 0
    assert error.commands[0][:2] == ["nvme", "sanitize"]


def test_nvme_sanitize_refused_by_the_drive() -> None:
    refused = (1, "", "NVMe status: Invalid Field in Command: A reserved coded value or an unsupported value(0x4002)\n")
    tools = FakeTools({"/dev/nvme0n1": WDC}, {("nvme", "sanitize", "/dev/nvme0"): refused})
    info, rec = drive(tools, "nvme0n1", "nvme"), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(Choice("nvme-sanitize-crypto", "changed"), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert caught.value.returncode == 1 and "Invalid Field" in (caught.value.stderr_tail or "")
    assert tools.calls == [["nvme", "sanitize", "/dev/nvme0", "--sanact=4", "--force"]]


@pytest.mark.parametrize(("method", "ses"), [("nvme-format-user-data", "1"), ("nvme-format-crypto", "2")])
def test_nvme_format_on_the_namespace(method: str, ses: str) -> None:
    tools, rec = FakeTools({"/dev/nvme0n1": WDC}), Recorder()
    info = replace(drive(tools, "nvme0n1", "nvme"), nvme=NvmeCaps(oacs=2, fna=4), size_bytes=20_000_000_000)
    commands = run_method(Choice(method, "zeros"), info, run=tools, sleep=rec.sleep, progress=rec.tell)  # type: ignore[arg-type]
    # an hour plus the drive's size at 20 MB/s: 4600 s
    assert commands == [["nvme", "format", "/dev/nvme0n1", f"--ses={ses}", "--force", "--timeout=4600000"]]
    assert tools.timeouts == [4660.0] and rec.progress == [1.0]


def test_ata_enhanced_security_erase() -> None:
    tools, rec = FakeTools({"/dev/sda": INTEL}), Recorder()
    info = drive(tools)
    commands = run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert commands == tools.calls == [SET_PASS, IDENTIFY, ENHANCED, IDENTIFY]
    assert tools.timeouts[2] == 2 * 60 * 2 + 600  # twice the drive's 2 minutes, plus 10
    assert rec.progress == [None, 1.0]


def test_ata_erase_that_fails_removes_the_password_again() -> None:
    tools = FakeTools(
        {"/dev/sda": INTEL}, {tuple(ENHANCED): (5, "", "SG_IO: bad/missing sense data, sb[]: 70 00 05\n")}
    )
    info, rec = drive(tools), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert tools.calls == [SET_PASS, IDENTIFY, ENHANCED, DISABLE]
    error = caught.value
    assert error.argv == ENHANCED and error.returncode == 5 and "bad/missing sense" in (error.stderr_tail or "")
    assert "SECURITY ERASE UNIT failed" in error.reason and "password was removed again" in error.reason
    assert error.facts["device"] == "sda" and error.facts["method"] == "ata-security-erase-enhanced"


def test_ata_erase_and_undo_both_failing_tell_how_to_unlock() -> None:
    tools = FakeTools({"/dev/sda": INTEL}, {tuple(ENHANCED): (5, "", ""), tuple(DISABLE): (5, "", "")})
    info, rec = drive(tools), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert f"hdparm --user-master u --security-disable {PASSWORD} /dev/sda" in caught.value.reason


def test_ata_erase_that_leaves_a_password_is_a_failure() -> None:
    tools = FakeTools({"/dev/sda": INTEL}, {tuple(ENHANCED): (0, "", ""), ("hdparm", "-I"): [
        (0, security_line((INTEL / "hdparm-I.txt").read_text(), "enabled", True), "")]})  # fmt: skip
    info, rec = drive(tools), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert "still has a password" in caught.value.reason and tools.calls[-1] == DISABLE


@pytest.mark.parametrize(
    ("identify", "said"),
    [
        ((1, "", "SG_IO: bad/missing sense data\n"), "did not answer 'hdparm -I' after it"),
        ((0, "\n/dev/sda:\nATA device, with non-removable media\n\tModel Number: X\n", ""), "cannot say"),
    ],
)
def test_an_erase_whose_password_is_not_seen_gone_is_a_failure(identify: tuple[int, str, str], said: str) -> None:
    # hdparm -I: the fake's answers (inspection, after the password is set), then the answer after the erase
    tools = FakeTools({"/dev/sda": INTEL}, {tuple(ENHANCED): (0, "", ""), ("hdparm", "-I"): [None, None, identify]})
    info, rec = drive(tools), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert said in caught.value.reason and tools.calls[-1] == DISABLE and 1.0 not in rec.progress
    assert caught.value.password_left is False and "password was removed again" in caught.value.reason


def test_an_erase_and_its_undo_failing_leave_the_password_said(tmp_path: Path) -> None:
    tools = FakeTools({"/dev/sda": INTEL}, {tuple(ENHANCED): (5, "", ""), tuple(DISABLE): (5, "", "")})
    info, rec = drive(tools), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert caught.value.password_left is True and caught.value.facts["password_left"] is True


def test_a_drive_locked_by_another_password_stays_locked_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "hdparm-I.txt").write_text(security_line((LOCKED / "hdparm-I.txt").read_text(), "frozen", False))
    unlock = ["hdparm", "--user-master", "u", "--security-unlock", PASSWORD, "/dev/sda"]
    tools = FakeTools({"/dev/sda": folder}, {tuple(unlock): (5, "", "SG_IO: bad/missing sense data\n")})
    info = drive(tools)
    prepared = prepare_drive(info, ErasePlan(), run=tools)
    assert tools.calls == [unlock, IDENTIFY] and prepared.commands == tools.calls
    assert prepared.info.ata is not None and prepared.info.ata.locked
    assert prepared.notes == [
        "the drive is locked by an ATA password that is not provision's (SG_IO: bad/missing sense data): it "
        "refuses reads and writes; unlock it with its password, or set it aside"
    ]


def test_locked_drive_is_erased_with_the_password_it_has(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "hdparm-I.txt").write_text(security_line((LOCKED / "hdparm-I.txt").read_text(), "frozen", False))
    tools, rec = FakeTools({"/dev/sda": folder}), Recorder()
    info = drive(tools)
    run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert SET_PASS not in tools.calls and tools.calls[0] == ENHANCED


@pytest.mark.parametrize(("method", "flag"), [
    ("ata-sanitize-crypto", "--sanitize-crypto-scramble"), ("ata-sanitize-block", "--sanitize-block-erase"),
])  # fmt: skip
def test_ata_sanitize_polls_its_status(method: str, flag: str) -> None:
    tools, rec = FakeTools({"/dev/sda": INTEL}, sanitize_polls=1), Recorder()
    info = drive(tools)
    commands = run_method(Choice(method, "changed"), info, run=tools, sleep=rec.sleep, progress=rec.tell)  # type: ignore[arg-type]
    status = ["hdparm", "--sanitize-status", "/dev/sda"]
    assert tools.calls == [["hdparm", "--yes-i-know-what-i-am-doing", flag, "/dev/sda"], status, status]
    assert commands == tools.calls[:2] and rec.progress == [pytest.approx(0.5, abs=0.01), 1.0]


def test_ata_sanitize_that_never_starts() -> None:
    idle = (0, "Sanitize status:\n    State:    SD0 Sanitize Idle\n", "")
    tools, rec = FakeTools({"/dev/sda": INTEL}, {("hdparm", "--sanitize-status"): idle}), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(Choice("ata-sanitize-block", "zeros-or-ones"), drive(tools), run=tools, sleep=rec.sleep,
                   progress=rec.tell)  # fmt: skip
    assert "never showed it running" in caught.value.reason and len(rec.slept) == 2


@pytest.mark.parametrize(("method", "action"), [
    ("scsi-sanitize-crypto", ["--crypto"]), ("scsi-sanitize-block", ["--block"]),
    ("scsi-sanitize-overwrite", ["--overwrite", "--zero"]),
])  # fmt: skip
def test_scsi_sanitize_polls_request_sense(method: str, action: list[str]) -> None:
    tools, rec = FakeTools({"/dev/sdc": None}, sanitize_polls=2), Recorder()
    info = replace(drive(tools, "sdc", "sas"), scsi=ScsiCaps(True, True, True, True))
    commands = run_method(Choice(method, "zeros"), info, run=tools, sleep=rec.sleep, progress=rec.tell)  # type: ignore[arg-type]
    requests = ["sg_requests", "--progress", "/dev/sdc"]
    assert tools.calls == [["sg_sanitize", "--quick", "--early", *action, "/dev/sdc"], requests, requests, requests]
    assert commands == tools.calls[:2] and rec.progress == [0.5, 0.5, 1.0]


def test_overwrite_is_not_run_here() -> None:
    tools, rec = FakeTools({"/dev/sda": INTEL}), Recorder()
    with pytest.raises(MethodFailed):
        run_method(Choice("overwrite", "zeros"), drive(tools), run=tools, sleep=rec.sleep, progress=rec.tell)
    assert tools.calls == []


SUSPEND = ["rtcwake", "-m", "mem", "-s", "5"]


def test_frozen_drive_unfrozen_by_a_suspend_then_security_erased(tmp_path: Path) -> None:
    tools, rec = FakeTools({"/dev/sda": frozen_copy(tmp_path)}), Recorder()
    info = drive(tools)
    assert info.ata is not None and info.ata.frozen and needs_unfreeze(info, ErasePlan())
    assert prepare_drive(info, ErasePlan(), run=tools).commands == []  # the preparation never suspends the PC
    suspended = suspend(tools, rec.sleep, "run-1")
    prepared = after_suspend(info, suspended, tools, frozen=True, log_id="run-1")
    assert tools.calls == [SUSPEND, IDENTIFY] and rec.slept == [2.0]
    assert prepared.commands == tools.calls and prepared.unfrozen is True
    assert prepared.notes == ["the drive was unfrozen by a suspend to RAM"]
    assert choose_method(ErasePlan(), prepared.info).method == "ata-security-erase-enhanced"


def test_frozen_drive_that_rtcwake_does_not_unfreeze(tmp_path: Path) -> None:
    tools, rec = FakeTools({"/dev/sda": frozen_copy(tmp_path)}, unfreezes=False), Recorder()
    info = drive(tools)
    prepared = after_suspend(info, suspend(tools, rec.sleep), tools, frozen=True)
    assert prepared.unfrozen is False and prepared.notes == ["the drive is still frozen after a suspend to RAM"]
    choice = choose_method(ErasePlan(), prepared.info)
    assert choice.method == "overwrite" and choice.fallback is not None and "could not be unfrozen" in choice.fallback


def test_failed_suspend_is_a_note_not_an_exception(tmp_path: Path) -> None:
    tools = FakeTools({"/dev/sda": frozen_copy(tmp_path)}, {("rtcwake",): (1, "", "rtcwake: write error\n")},
                      unfreezes=False)  # fmt: skip
    info = drive(tools)
    prepared = after_suspend(info, suspend(tools, Recorder().sleep), tools, frozen=True)
    assert prepared.unfrozen is False and "suspend to RAM failed (rtcwake: write error)" in prepared.notes[0]


def test_a_drive_that_was_not_frozen_is_only_asked_again(tmp_path: Path) -> None:
    tools = FakeTools({"/dev/sda": INTEL})
    info = drive(tools)
    prepared = after_suspend(info, suspend(tools, Recorder().sleep), tools, frozen=False)
    assert prepared.commands == [IDENTIFY] and prepared.notes == [] and prepared.unfrozen is None


def test_no_suspend_when_not_needed_or_not_allowed(tmp_path: Path) -> None:
    tools = FakeTools({"/dev/sda": frozen_copy(tmp_path)})
    info = drive(tools)
    assert not needs_unfreeze(info, ErasePlan(unfreeze=False))
    assert not needs_unfreeze(info, ErasePlan(method="overwrite"))
    assert info.ata is not None
    sanitizer = replace(info, ata=replace(info.ata, sanitize=True, sanitize_block=True))
    assert not needs_unfreeze(sanitizer, ErasePlan())
    assert not needs_unfreeze(drive(FakeTools({"/dev/sda": INTEL})), ErasePlan())  # not frozen


def test_hpa_removed_when_the_recipe_says_so() -> None:
    # the HPA sample answers the first hdparm -N; then the fake's own state (after -N p586072368) answers
    tools = FakeTools({"/dev/sda": INTEL}, {("hdparm", "-N", "/dev/sda"): [HPA / "hdparm-N.txt", None]})
    info = drive(tools)
    assert info.hidden.hpa is True and not info.hidden.removed
    rescanned: list[str] = []
    prepared = prepare_drive(info, ErasePlan(hidden_areas="remove"), run=tools,
                             rescan=lambda device, _: rescanned.append(device))  # fmt: skip
    assert tools.calls[0] == ["hdparm", "--yes-i-know-what-i-am-doing", "-N", "p586072368", "/dev/sda"]
    assert rescanned == ["sda"] and prepared.commands == [tools.calls[0]]
    assert prepared.info.hidden.removed is True and prepared.info.hidden.hpa is False
    assert prepared.notes == ["hidden areas removed: the whole native capacity is erased"]
    assert prepared.info.size_bytes == 586072368 * 512
    assert tools.calls[1:] == [["hdparm", "-I", "/dev/sda"], ["hdparm", "-N", "/dev/sda"]]  # asked again


def test_hpa_that_stays_is_said_so() -> None:
    refused = (5, "", "SG_IO: error\n")
    answers: dict[tuple[str, ...], Override] = {
        ("hdparm", "-N", "/dev/sda"): HPA / "hdparm-N.txt",
        ("hdparm", "--yes-i-know-what-i-am-doing"): refused,
    }
    tools = FakeTools({"/dev/sda": INTEL}, answers)
    prepared = prepare_drive(drive(tools), ErasePlan(hidden_areas="remove"), run=tools,
                             rescan=lambda *_: None)  # fmt: skip
    assert not prepared.info.hidden.removed and prepared.info.hidden.hpa is True
    assert prepared.notes[0] == "the HPA could not be removed (SG_IO: error): its sectors stay hidden"
    choice = choose_method(ErasePlan(method="overwrite", hidden_areas="remove"), prepared.info)
    assert choice.note is not None and "2113 sectors hidden" in choice.note


def test_hpa_only_reported_by_default() -> None:
    tools = FakeTools({"/dev/sda": INTEL}, {("hdparm", "-N", "/dev/sda"): HPA / "hdparm-N.txt"})
    info = drive(tools)
    prepared = prepare_drive(info, ErasePlan(), run=tools, rescan=lambda *_: None)
    assert prepared.commands == [] and prepared.info.hidden.hpa is True and not prepared.info.hidden.removed


def test_hpa_and_dco_removed_in_that_order(tmp_path: Path) -> None:
    # the Intel sample with the DCO feature set listed, the forensicswiki HPA, and a DCO real max above it
    folder = tmp_path / "dco"
    folder.mkdir()
    text = (
        (INTEL / "hdparm-I.txt")
        .read_text()
        .replace(
            "Host Protected Area feature set\n",
            "Host Protected Area feature set\n       *\tDevice Configuration Overlay feature set\n",
        )
    )
    (folder / "hdparm-I.txt").write_text(text)
    dco = (0, "/dev/sda:\nDCO Revision: 0x0001\n    Real max sectors: 586072468\n", "")
    restored = (0, "/dev/sda:\nDCO Revision: 0x0001\n    Real max sectors: 586072368\n", "")
    answers: dict[tuple[str, ...], Override] = {
        ("hdparm", "-N", "/dev/sda"): [HPA / "hdparm-N.txt", None],
        ("hdparm", "--dco-identify", "/dev/sda"): [dco, restored],
    }
    tools = FakeTools({"/dev/sda": folder}, answers)
    info = drive(tools)
    assert info.hidden.hpa and info.hidden.dco and info.hidden.dco_sectors == 100
    prepared = prepare_drive(info, ErasePlan(hidden_areas="remove"), run=tools,
                             rescan=lambda *_: None)  # fmt: skip
    assert prepared.commands == [
        ["hdparm", "--yes-i-know-what-i-am-doing", "-N", "p586072368", "/dev/sda"],
        ["hdparm", "--yes-i-know-what-i-am-doing", "--dco-restore", "/dev/sda"],
    ]
    assert prepared.info.hidden.removed and prepared.info.hidden.dco is False


def _captured(name: str) -> tuple[int, str, str]:
    """A command QEMU's AHCI disk answered in the lab: exit status (COMMANDS.tsv), stdout, stderr."""
    rows = [line.split("\t") for line in (QEMU_SATA / "COMMANDS.tsv").read_text().splitlines()[1:]]
    code = next(int(row[1]) for row in rows if row[0] == name)
    err = QEMU_SATA / f"{name}.stderr"
    return code, (QEMU_SATA / name).read_text(), err.read_text() if err.is_file() else ""


def test_a_password_the_drive_aborted_though_hdparm_said_0() -> None:
    if not (QEMU_SATA / "COMMANDS.tsv").is_file():
        pytest.skip("QEMU's SATA answers not captured (tests/samples/erasure/qemu-sata)")
    aborted = _captured("hdparm-security-set-pass.txt")
    assert aborted[0] == 0 and "bad/missing sense data" in aborted[2]  # what QEMU's disk really answered
    tools = FakeTools({"/dev/sda": INTEL}, {("hdparm", "--user-master", "u", "--security-set-pass"): aborted})
    info, rec = drive(tools), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert "refused the erase password" in caught.value.reason and "aborted" in caught.value.reason
    assert tools.calls == [SET_PASS]


def test_a_password_not_taken_though_nothing_was_said() -> None:
    tools = FakeTools({"/dev/sda": INTEL}, {("hdparm", "-I"): INTEL / "hdparm-I.txt"})  # never shows "enabled"
    info, rec = drive(tools), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert "did not take the erase password" in caught.value.reason
    assert tools.calls == [SET_PASS, IDENTIFY]


def test_an_erase_the_drive_aborted_is_a_failure() -> None:
    if not (QEMU_SATA / "COMMANDS.tsv").is_file():
        pytest.skip("QEMU's SATA answers not captured (tests/samples/erasure/qemu-sata)")
    tools = FakeTools({"/dev/sda": INTEL}, {tuple(ENHANCED): _captured("hdparm-security-erase-enhanced.txt")})
    info, rec = drive(tools), Recorder()
    with pytest.raises(MethodFailed) as caught:
        run_method(choose_method(ErasePlan(), info), info, run=tools, sleep=rec.sleep, progress=rec.tell)
    assert "SECURITY ERASE UNIT failed (the drive aborted it)" in caught.value.reason
    assert tools.calls[-1] == DISABLE


def test_qemus_sata_disk_is_overwritten() -> None:
    if not (QEMU_SATA / "hdparm-I.txt").is_file():
        pytest.skip("QEMU's SATA answers not captured (tests/samples/erasure/qemu-sata)")
    info = drive(FakeTools({"/dev/sda": QEMU_SATA}))
    assert info.ata is not None and info.ata.model == "QEMU HARDDISK" and info.ata.serial == "PROV-SATA-0001"
    assert info.ata.security_supported is None and not info.ata.sanitize and info.hidden.hpa is False
    choice = choose_method(ErasePlan(), info)
    assert choice.method == "overwrite" and choice.fallback is not None and "no ATA erase command" in choice.fallback
