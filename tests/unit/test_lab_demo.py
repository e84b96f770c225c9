"""`provision lab demo` without QEMU: --pcs parsing, the milestone follower over fake serial logs, the report."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.cli import build_parser, main
from provision.lab import netboot_missing
from provision.lab.demo import (
    CALLBACK,
    DEFAULT_PCS,
    LIVE_NOTE,
    DemoPC,
    DemoResult,
    Follower,
    PCResult,
    follow,
    parse_pcs,
    result_table,
    steps_for,
    summary_line,
)

BIOS_MAC = "52:54:00:de:00:01"
UEFI_MAC = "52:54:00:de:00:02"

# What the PCs print on serial, cut down from real lab runs.
BIOS_SERIAL = [
    "iPXE initialising devices...ok\r\nConfiguring (net0 52:54:00:de:00:01)...... ok\r\n"
    "net0: 198.18.0.100/255.255.255.0 gw 198.18.0.1\r\nFilename: undionly.kpxe\r\n",
    "tftp://198.18.0.1/undionly.kpxe... ok\r\nundionly.kpxe : 70123 bytes [PXE-NBP]\r\n",
    f"http://198.18.0.1:8080/boot/{BIOS_MAC}.ipxe... ok\r\n{BIOS_MAC}.ipxe : 612 bytes [script]\r\n",
    "[    0.000000] Linux version 6.1.0-41-amd64 (debian-kernel@lists.debian.org)\r\n",
    "provision-test-init: started\r\nPROVISION-CALLBACK-OK\r\n",
]
UEFI_SERIAL = [
    ">>Start PXE over IPv4.\r\n  Station IP address is 198.18.0.101\r\n",
    "  NBP filename is shimx64.efi\r\n  NBP filesize is 959504 Bytes\r\n Downloading NBP file...\r\n\r\n"
    "  NBP file downloaded successfully.\r\n",
    f"provision: network boot of {UEFI_MAC}\r\nprovision: {UEFI_MAC} -> live environment\r\n",
    "[    0.000000] Linux version 6.1.0-41-amd64 (debian-kernel@lists.debian.org)\r\n",
    "PROVISION-CALLBACK-OK\r\n",
]


@dataclass
class FakePC:
    """A PC whose serial log grows by one chunk per poll; ``elapsed`` goes up 5 s per poll."""

    chunks: list[str]
    exit_after: int | None = None  # QEMU stops after this many chunks
    shown: int = 0
    clock: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.exit_after is None or self.shown < self.exit_after

    @property
    def elapsed(self) -> float:
        return self.clock

    def serial_text(self) -> str:
        self.shown += 1
        self.clock += 5.0
        return "".join(self.chunks[: self.shown])


# ------------------------------------------------------------------------------------------------ --pcs
def test_default_pcs_are_seabios_and_secure_boot():
    expected = (DemoPC("bios", "bios", BIOS_MAC), DemoPC("uefi-secureboot", "uefi-secureboot", UEFI_MAC))
    assert expected == DEFAULT_PCS
    assert "iPXE" in DEFAULT_PCS[0].description and "Secure Boot on" in DEFAULT_PCS[1].description


def test_parse_pcs_names_repeats_and_gives_distinct_macs():
    pcs = parse_pcs(" bios, uefi ,bios,uefi-secureboot")
    assert [pc.name for pc in pcs] == ["bios", "uefi", "bios-2", "uefi-secureboot"]
    assert [pc.firmware for pc in pcs] == ["bios", "uefi", "bios", "uefi-secureboot"]
    assert len({pc.mac for pc in pcs}) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no PCs"), (" , ", "no PCs"), ("bios,efi", "unknown PC kind 'efi'"), (",".join(["bios"] * 9), "at most 8")],
)
def test_parse_pcs_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pcs(text)


def test_cli_parses_pcs_and_defaults():
    args = build_parser().parse_args(["lab", "demo"])
    assert args.pcs == DEFAULT_PCS and not args.keep_running and args.cache is None and args.workdir is None
    args = build_parser().parse_args(["lab", "demo", "--pcs", "uefi", "--keep-running", "--workdir", "/tmp/x"])
    assert [pc.firmware for pc in args.pcs] == ["uefi"] and args.keep_running and args.workdir == "/tmp/x"


def test_cli_bad_pcs_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lab", "demo", "--pcs", "bios,pdp11"])
    assert exc.value.code == 2
    assert "provision: error: argument --pcs: unknown PC kind 'pdp11'" in capsys.readouterr().err


def test_cli_lab_unavailable_is_a_clean_error(monkeypatch, tmp_path):
    monkeypatch.setattr(
        "provision.lab.demo.netboot_missing", lambda firmware: ["qemu-system-x86_64 (Debian package qemu-system-x86)"]
    )
    out, err = io.StringIO(), io.StringIO()
    code = main(["lab", "demo", "--workdir", str(tmp_path / "w")], out=out, err=err)
    assert code == 1 and out.getvalue() == ""
    assert err.getvalue() == (
        "provision: error: lab unavailable, missing: qemu-system-x86_64 (Debian package qemu-system-x86)\n"
    )


def test_netboot_missing_names_debian_packages():
    for item in netboot_missing(["bios", "uefi-secureboot"]):  # empty on a ready machine
        assert item.startswith("root") or "Debian package" in item or item == "/dev/net/tun"


# ------------------------------------------------------------------------------------------------ milestones
def run_followers(*followers: Follower, timeout: float = 180.0) -> list[str]:
    lines: list[str] = []
    follow(followers, lines.append, timeout, poll=0)
    return lines


def test_bios_pc_followed_to_callback_and_power_off():
    pc = FakePC(BIOS_SERIAL, exit_after=len(BIOS_SERIAL) + 1)
    follower = Follower("bios", pc, steps_for("bios", BIOS_MAC))
    lines = run_followers(follower)
    assert lines == [
        "pc bios   5.0 s  DHCP: address 198.18.0.100 (iPXE NIC ROM)",
        "pc bios  10.0 s  boot file: undionly.kpxe, TFTP",
        f"pc bios  15.0 s  boot script: /boot/{BIOS_MAC}.ipxe, HTTP",
        "pc bios  20.0 s  kernel: Linux 6.1.0-41-amd64 starts",
        "pc bios  25.0 s  callback: POST /api/v1/hello accepted",
        "pc bios  35.0 s  powered off",
    ]
    assert follower.error is None and follower.times[CALLBACK] == 25.0


def test_uefi_pc_milestones_reported_together_when_they_land_in_one_poll():
    pc = FakePC(["".join(UEFI_SERIAL[:3]), *UEFI_SERIAL[3:]], exit_after=3)
    follower = Follower("sb", pc, steps_for("uefi-secureboot", UEFI_MAC))
    lines = run_followers(follower)
    assert lines[:3] == [
        "pc sb   5.0 s  DHCP: address 198.18.0.101 (firmware PXE)",
        "pc sb   5.0 s  boot file: shimx64.efi (shim), TFTP",
        f"pc sb   5.0 s  GRUB config: grub/hosts/{UEFI_MAC}.cfg, TFTP",
    ]
    assert lines[-1] == "pc sb  20.0 s  powered off"


def test_two_pcs_followed_in_parallel_names_aligned():
    bios = Follower("bios", FakePC(BIOS_SERIAL, exit_after=5), steps_for("bios", BIOS_MAC))
    sb = Follower("uefi-secureboot", FakePC(UEFI_SERIAL, exit_after=5), steps_for("uefi-secureboot", UEFI_MAC))
    lines = run_followers(bios, sb)
    assert lines[0].startswith("pc bios              5.0 s  DHCP") and lines[1].startswith("pc uefi-secureboot   5.0 s")
    assert bios.error is None and sb.error is None


@pytest.mark.parametrize(
    ("chunks", "exit_after", "timeout", "error"),
    [
        (
            ["Nothing to boot\r\nNo bootable device.\r\n"],
            None,
            180,
            "printed 'No bootable device' while waiting for DHCP",
        ),
        (
            [*BIOS_SERIAL[:4], "PROVISION-CALLBACK-FAILED no lease\r\n"],
            None,
            180,
            "'PROVISION-CALLBACK-FAILED no lease'",
        ),
        (BIOS_SERIAL[:2], 2, 180, "QEMU stopped before boot script"),
        (BIOS_SERIAL[:1], None, 12, "no boot file within 12 s"),
    ],
)
def test_failures(chunks, exit_after, timeout, error):
    follower = Follower("bios", FakePC(chunks, exit_after=exit_after), steps_for("bios", BIOS_MAC))
    lines = run_followers(follower, timeout=timeout)
    assert follower.error is not None and error in follower.error
    assert lines[-1].endswith(f"FAILED: {follower.error}") and CALLBACK not in follower.times


# ------------------------------------------------------------------------------------------------ report
def result(*pcs: PCResult) -> DemoResult:
    return DemoResult(pcs, "prov-1-1", "http://198.18.0.1:8080", 61.4, 0)


def good(pc: DemoPC, firmware: str, secure_boot: bool, seconds: float) -> PCResult:
    return PCResult(pc, {CALLBACK: seconds}, None, "waiting", 1, firmware, secure_boot, "6.1.0-41-amd64", Path("s"))


def test_table_and_summary_when_every_pc_called_back():
    res = result(good(DEFAULT_PCS[0], "bios", False, 24.53), good(DEFAULT_PCS[1], "uefi", True, 47.0))
    assert res.ok and res.failures() == []
    assert result_table(res) == [
        "MAC                PC               FIRMWARE  SECURE BOOT  STATE    CALLBACK",
        "52:54:00:de:00:01  bios             bios      off          waiting  24.5 s",
        "52:54:00:de:00:02  uefi-secureboot  uefi      on           waiting  47.0 s",
    ]
    assert summary_line(res) == (
        f"OK: 2 of 2 PCs network-booted to the live environment and called back (61 s from start; {LIVE_NOTE})"
    )
    assert "imaging" in LIVE_NOTE


def test_table_and_reasons_when_a_pc_failed():
    failed = PCResult(DEFAULT_PCS[1], {"DHCP": 5.0}, "no boot file within 180 s\nmore", serial_log=Path("s"))
    res = result(good(DEFAULT_PCS[0], "bios", False, 24.5), failed)
    assert not res.ok
    assert result_table(res)[2].split() == ["52:54:00:de:00:02", "uefi-secureboot", "-", "-", "-", "failed"]
    assert res.failures() == ["uefi-secureboot: no boot file within 180 s"]
    assert summary_line(res).startswith("FAILED: 1 of 2 PCs")
    assert not result().ok  # no PCs is no success
