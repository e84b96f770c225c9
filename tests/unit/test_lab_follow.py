"""The demo's milestone followers over fake serial logs (both phases, failures), and the demo's report."""

from __future__ import annotations

from typing import Any

import pytest

from provision.lab import follow as fl
from provision.lab.report import DemoResult, PCResult, RunRecord, milestone_table, result_table, summary_line
from tests.support.lab import (
    BIOS_MAC,
    BIOS_NETBOOT,
    BIOS_OWN_DISK,
    DIGEST,
    LIVE,
    RUN,
    UEFI_MAC,
    UEFI_NETBOOT,
    FakePC,
    api_run,
)


def imaging(name: str, pc: FakePC, firmware: Any = "bios", mac: str = BIOS_MAC, timeout: float = 300) -> fl.Follower:
    return fl.Follower(name, pc, fl.imaging_steps(firmware, mac), timeout, fl.IMAGING_FAIL)


def own_disk(name: str, pc: FakePC, offset: float, firmware: Any = "bios", mac: str = BIOS_MAC) -> fl.Follower:
    steps = fl.own_disk_steps(firmware, mac)
    return fl.Follower(name, pc, steps, 180, fl.OWN_DISK_FAIL, phase=fl.OWN_DISK, offset=offset)


def run(*followers: fl.Follower, next_phase: fl.NextPhase = lambda f: None) -> list[str]:
    lines: list[str] = []
    width = max(len(f.name) for f in followers)
    fl.follow(followers, lambda f, e: lines.append(fl.progress_line(f.name, width, e)), next_phase, poll=0)
    return lines


# ------------------------------------------------------------------------------------------------ phases
def test_bios_pc_imaged_then_boots_its_own_disk():
    first = imaging("bios", FakePC(BIOS_NETBOOT + LIVE, exit_after=len(BIOS_NETBOOT + LIVE)))
    second = own_disk("bios", FakePC(BIOS_OWN_DISK, exit_after=len(BIOS_OWN_DISK)), offset=60.0)
    lines = run(first, next_phase=lambda f: second if f is first else None)
    assert lines == [
        "pc bios   5.0 s  DHCP: address 198.18.0.100 (iPXE NIC ROM)",
        "pc bios  10.0 s  boot file: undionly.kpxe, TFTP",
        f"pc bios  15.0 s  boot script /boot/{BIOS_MAC}.ipxe (HTTP): live",
        "pc bios  20.0 s  kernel: Linux 6.1.0-56-amd64 starts",
        "pc bios  25.0 s  live environment up: 198.18.0.100, kernel uptime 11.73 s; the agent probes the PC and "
        "says hello",
        "pc bios  30.0 s  imaging plan: image tiny onto /dev/vda",
        f"pc bios  35.0 s  written + verified: run {RUN} done",
        "pc bios  40.0 s  reboot: QEMU exits (-no-reboot)",
        "pc bios  65.0 s  DHCP: address 198.18.0.100 (iPXE NIC ROM)",
        f"pc bios  70.0 s  boot script /boot/{BIOS_MAC}.ipxe (HTTP): local disk",
        "pc bios  75.0 s  first boot of tiny-41936d48a27f from its own disk",
        "pc bios  80.0 s  callback: POST /api/v1/firstboot accepted",
        "pc bios  85.0 s  powered off",
    ]
    assert first.ok and second.ok and first.times[fl.REBOOT] == 40.0 and second.times[fl.CALLBACK] == 80.0


def test_uefi_milestones_reported_together_when_they_land_in_one_poll():
    pc = FakePC(["".join(UEFI_NETBOOT), *LIVE], exit_after=len(LIVE))
    follower = imaging("sb", pc, "uefi-secureboot", UEFI_MAC)
    lines = run(follower)
    assert lines[:3] == [
        "pc sb   5.0 s  DHCP: address 198.18.0.101 (firmware PXE)",
        "pc sb   5.0 s  boot file: shimx64.efi (shim), TFTP",
        f"pc sb   5.0 s  GRUB config grub/hosts/{UEFI_MAC}.cfg (TFTP): live",
    ]
    assert lines[-1] == "pc sb  25.0 s  reboot: QEMU exits (-no-reboot)" and follower.ok


def test_uefi_own_disk_needs_shim_again_and_the_local_disk_config():
    chunks = [
        "  Station IP address is 198.18.0.101\r\n  NBP filename is shimx64.efi\r\n"
        "  NBP file downloaded successfully.\r\n",
        f"provision: {UEFI_MAC} -> local disk\r\nprovision: chainloading (hd0,gpt2)/EFI/BOOT/BOOTX64.EFI\r\n",
        *BIOS_OWN_DISK[2:],
    ]
    follower = own_disk("sb", FakePC(chunks), 50.0, "uefi-secureboot", UEFI_MAC)
    follower.pc = FakePC(chunks)  # keeps running after the callback: ends POWER_OFF_TIMEOUT later
    lines = run(follower)
    assert [line.split("  ", 2)[-1] for line in lines] == [
        "DHCP: address 198.18.0.101 (firmware PXE)",
        "boot file: shimx64.efi (shim), TFTP",
        f"GRUB config grub/hosts/{UEFI_MAC}.cfg (TFTP): local disk",
        "first boot of tiny-41936d48a27f from its own disk",
        "callback: POST /api/v1/firstboot accepted",
    ]
    assert follower.ok and fl.POWERED_OFF not in follower.times


def test_two_pcs_followed_in_parallel_names_aligned():
    bios = imaging("bios", FakePC(BIOS_NETBOOT + LIVE, exit_after=7))
    sb = imaging("uefi-secureboot", FakePC(UEFI_NETBOOT + LIVE, exit_after=7), "uefi-secureboot", UEFI_MAC)
    lines = run(bios, sb)
    assert lines[0].startswith("pc bios              5.0 s  DHCP") and lines[1].startswith("pc uefi-secureboot   5.0 s")
    assert bios.ok and sb.ok


@pytest.mark.parametrize(
    ("chunks", "exit_after", "error"),
    [
        (["No bootable device.\r\n"], None, "printed 'No bootable device' while waiting for DHCP"),
        ([*BIOS_NETBOOT, *LIVE[:2], "PROVISION-LIVE-AGENT-EXIT 4\r\n"], None, "'PROVISION-LIVE-AGENT-EXIT 4'"),
        (
            [*BIOS_NETBOOT, *LIVE[:3], f"PROVISION-AGENT-RESULT failed {RUN} too small\n"],
            None,
            f"'PROVISION-AGENT-RESULT failed {RUN} too small' while waiting for written + verified",
        ),
        (
            [*BIOS_NETBOOT, *LIVE[:2], "agent INFO x: server says wait (image tiny is not available); asking\n"],
            None,
            "'server says wait (image tiny is not available); asking' while waiting for imaging plan",
        ),
        ([*BIOS_NETBOOT, "Kernel panic - not syncing: VFS\r\n"], None, "'Kernel panic' while waiting for kernel"),
        (BIOS_NETBOOT[:2], 2, "QEMU stopped before live boot"),
        (BIOS_NETBOOT[:1], None, "no boot file within 12 s (imaging)"),
    ],
)
def test_imaging_failures(chunks, exit_after, error):
    timeout = 12 if "within" in error else 300
    follower = imaging("bios", FakePC(chunks, exit_after=exit_after), timeout=timeout)
    lines = run(follower)
    assert follower.error is not None and error in follower.error and not follower.ok
    assert lines[-1].endswith(f"FAILED: {follower.error}") and fl.REBOOT not in follower.times


@pytest.mark.parametrize(
    ("chunks", "error"),
    [
        ([BIOS_OWN_DISK[0], f"provision: {BIOS_MAC} -> live environment\r\n"], "'-> live environment'"),
        ([*BIOS_OWN_DISK[:2], "PROVISION-TINY-FAILED no root\r\n"], "'PROVISION-TINY-FAILED no root'"),
        (
            [*BIOS_OWN_DISK[:3], "PROVISION-TINY-CALLBACK-FAILED no answer\r\n"],
            "'PROVISION-TINY-CALLBACK-FAILED no answer' while waiting for callback",
        ),
        ([BIOS_OWN_DISK[0], "provision: no boot loader found on a local disk\r\n"], "no boot loader found"),
    ],
)
def test_own_disk_failures(chunks, error):
    follower = own_disk("bios", FakePC(chunks), 60.0)
    run(follower)
    assert follower.error is not None and error in follower.error and fl.CALLBACK not in follower.times


def test_a_failed_phase_gets_no_next_phase_call_twice():
    calls: list[fl.Follower] = []

    def next_phase(follower: fl.Follower) -> None:
        calls.append(follower)

    failed = imaging("bios", FakePC(BIOS_NETBOOT[:1], exit_after=1))
    ok = imaging("sb", FakePC(UEFI_NETBOOT + LIVE, exit_after=7), "uefi-secureboot", UEFI_MAC)
    run(failed, ok, next_phase=next_phase)
    assert calls == [failed, ok]


# ------------------------------------------------------------------------------------------------ report
def test_run_record_verified_only_for_a_done_run_with_a_complete_verification_of_its_digest():
    assert RunRecord.from_api(api_run()).verified_digest == DIGEST
    assert RunRecord.from_api(api_run(complete=False)).verified_digest is None
    assert RunRecord.from_api(api_run(state="failed")).verified_digest is None
    assert RunRecord.from_api(api_run(digest="f" * 64)).verified_digest is None
    assert RunRecord.from_api({**api_run(), "verifications": [], "mean_rate": None}).mean_rate is None


def good(name: str, mac: str, firmware: str, secure_boot: bool | None, base: float) -> PCResult:
    times = {fl.DHCP: base, fl.LIVE_UP: base + 30, fl.VERIFIED: base + 40, fl.REBOOT: base + 41}
    times |= {fl.POWER_ON: base + 41.2, fl.LOCAL_DISK: base + 50, fl.FIRSTBOOT: base + 60, fl.CALLBACK: base + 62}
    record = RunRecord.from_api({**api_run(), "recipe": f"{firmware}-pc"})
    return PCResult(name, name, mac, times, None, None, "done", 2, firmware, secure_boot, "6.1", record, "tiny-4193",
                    f"poste-{firmware}")  # fmt: skip


def demo(*pcs: PCResult) -> DemoResult:
    return DemoResult(pcs, "prov-1-1", "http://198.18.0.1:8080", "tiny-41936d48a27f", DIGEST, 12.3, 121.4, 0)


def test_tables_and_summary_when_every_pc_was_imaged_and_called_back():
    res = demo(good("bios", BIOS_MAC, "bios", None, 5.0), good("uefi-secureboot", UEFI_MAC, "uefi", True, 7.25))
    assert res.ok and res.failures() == []
    header = "MAC                PC               FIRMWARE  SECURE BOOT  RECIPE   RUN   VERIFIED      MB/S  IMAGED"
    assert result_table(res) == [
        f"{header}  CALLBACK  HOST NAME",
        "52:54:00:de:00:01  bios             bios      n/a          bios-pc  done  8829dcb30439  50    45.0 s  67.0 s"
        "    poste-bios",
        "52:54:00:de:00:02  uefi-secureboot  uefi      on           uefi-pc  done  8829dcb30439  50    47.2 s  69.2 s"
        "    poste-uefi",
    ]
    table = milestone_table(res)
    assert table[0] == "MILESTONE (s)        bios  uefi-secureboot"
    assert table[1] == "DHCP                  5.0              7.2"
    assert table[2].split() == ["boot", "file", "-", "-"] and table[-1].split() == ["callback", "67.0", "69.2"]
    assert summary_line(res) == (
        "OK: 2 of 2 PCs imaged with tiny-41936d48a27f (root digest 8829dcb30439, verified) and booted from their "
        "own disk to the first-boot callback (121 s from start, set-up 12 s)"
    )


def test_table_and_reasons_when_pcs_failed():
    failed = PCResult("uefi-secureboot", "uefi-secureboot", UEFI_MAC, {fl.DHCP: 5.0}, "no boot file within 300 s\nx")
    not_called = PCResult(**{**good("bios-2", "52:54:00:de:00:03", "bios", None, 1).__dict__, "firstboot": None})
    unverified = good("uefi", "52:54:00:de:00:04", "uefi", False, 1)
    unverified = PCResult(**{**unverified.__dict__, "run": RunRecord.from_api(api_run(state="failed"))})
    res = demo(good("bios", BIOS_MAC, "bios", None, 5.0), failed, not_called, unverified)
    assert not res.ok
    assert result_table(res)[2].split() == [UEFI_MAC, "uefi-secureboot", *["-"] * 6, "failed", "failed", "-"]
    assert result_table(res)[4].split()[5:] == ["failed", "-", "50", "failed", "failed", "poste-uefi"]
    assert res.failures() == [
        "uefi-secureboot: no boot file within 300 s",
        "bios-2: no first-boot callback recorded",
        "uefi: not imaged (run failed)",
    ]
    assert summary_line(res).startswith("FAILED: 1 of 4 PCs")
    assert not demo().ok  # no PCs is no success
