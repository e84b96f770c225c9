"""What a drive can do: the parsers on every captured sample (tests/samples/erasure/, the SMART samples of
../shared/hardware/smart/) and on bad text, and ``inspect_drive``'s tool calls checked with ``FakeTools``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.agent.erasure.drives import hidden_areas, inspect_drive, interface_of
from provision.agent.erasure.hdparm import parse_dco, parse_identify, parse_native_max, parse_sanitize_status
from provision.agent.erasure.nvme import add_id_ns, controller_of, parse_id_ctrl, parse_sanitize_log
from provision.agent.erasure.scsi import parse_opcodes
from provision.agent.erasure.smart import parse_smart
from provision.wire.erasure import HiddenAreas, Smart
from tests.support.erasure_fakes import FakeTools, Override
from tests.support.paths import HARDWARE, SAMPLES

ERASURE = SAMPLES / "erasure"
INTEL = ERASURE / "intel-ssdsc2ct240a4"
LOCKED = ERASURE / "intel-ssdsc2ct240a4-locked"
WDC = ERASURE / "wdc-pc-sn730"
HPA = ERASURE / "forensicswiki-hpa"
DCO = ERASURE / "forensicswiki-dco"
SMART = HARDWARE / "smart"
BAD = ["", "garbage\n", "{not json", "\x00\xff", "[]", "null", "/dev/sda: No such file or directory\n"]


def test_every_sample_folder_names_its_source() -> None:
    folders = [p for p in ERASURE.iterdir() if p.is_dir()]
    assert len(folders) >= 5
    for folder in folders:
        if (folder / "COMMANDS.tsv").is_file():  # captured in our lab (QEMU): the commands that made each file
            continue
        source = (folder / "SOURCE.txt").read_text()
        assert "commit" in source and "path" in source, folder


def test_hdparm_identify_of_the_intel_335() -> None:
    caps = parse_identify((INTEL / "hdparm-I.txt").read_text())
    assert caps is not None
    assert (caps.model, caps.serial, caps.firmware) == ("INTEL SSDSC2CT240A4", "CVKI3206029X240DGN", "335u")
    assert caps.security_supported is True and caps.security_enabled is False
    assert caps.locked is False and caps.frozen is False and caps.count_expired is False
    assert caps.enhanced_erase is True
    assert (caps.erase_minutes, caps.enhanced_erase_minutes) == (4, 2)
    assert not (caps.sanitize or caps.sanitize_crypto or caps.sanitize_block or caps.sanitize_overwrite)
    assert caps.solid_state is True and caps.rpm is None
    assert caps.logical_sector == 512 and caps.sectors == 468862128
    assert caps.hpa_feature and not caps.dco_feature and caps.trim


def test_hdparm_identify_of_the_locked_and_frozen_drive() -> None:
    caps = parse_identify((LOCKED / "hdparm-I.txt").read_text())
    assert caps is not None
    assert caps.security_enabled is True and caps.locked is True and caps.frozen is True
    assert caps.count_expired is False


def test_hdparm_identify_of_a_hard_disk_with_sanitize() -> None:
    # the lines as hdparm 9.x prints them (identify.c): a rotation rate, the SANITIZE feature set, a level
    text = (
        "/dev/sdb:\n\nATA device, with non-removable media\n\tModel Number:       ST2000DM008-2FR102\n"
        "\tNominal Media Rotation Rate: 7200\nCommands/features:\n\tEnabled\tSupported:\n"
        "\t   *\tSANITIZE feature set\n\t   *\tCRYPTO_SCRAMBLE_EXT command\n\t   *\tOVERWRITE_EXT command\n"
        "\t   *\tBLOCK_ERASE_EXT command\n\t   *\tDevice Configuration Overlay feature set\nSecurity: \n"
        "\tMaster password revision code = 65534\n\t\tsupported\n\t\tenabled\n\tnot\tlocked\n\tnot\tfrozen\n"
        "\t\texpired: security count\n\tnot\tsupported: enhanced erase\n\tSecurity level high\n"
        "\tmore than 508min for SECURITY ERASE UNIT.\nChecksum: correct\n"
    )
    caps = parse_identify(text)
    assert caps is not None and caps.model == "ST2000DM008-2FR102"
    assert caps.sanitize and caps.sanitize_crypto and caps.sanitize_block and caps.sanitize_overwrite
    assert caps.solid_state is False and caps.rpm == 7200 and caps.dco_feature
    assert caps.count_expired is True and caps.enhanced_erase is False and caps.security_level == "high"
    assert caps.erase_minutes == 508 and caps.enhanced_erase_minutes is None


@pytest.mark.parametrize("text", BAD)
def test_bad_text_is_unknown_never_an_exception(text: str) -> None:
    assert parse_identify(text) is None
    assert parse_native_max(text) is None
    assert parse_dco(text) is None
    assert parse_sanitize_status(text).state == "unknown"
    assert parse_id_ctrl(text) is None
    assert parse_sanitize_log(text).status == "unknown"
    assert parse_opcodes(text).reported is False
    assert parse_smart(text) == Smart()


def test_hdparm_native_max_with_and_without_hpa() -> None:
    hpa = parse_native_max((HPA / "hdparm-N.txt").read_text())
    assert hpa is not None and hpa.hpa and (hpa.visible, hpa.native, hpa.hidden) == (586070255, 586072368, 2113)
    none = parse_native_max((DCO / "hdparm-N.txt").read_text())
    assert none is not None and not none.hpa and none.hidden == 0
    # a USB bridge's garbage answer (hdparm prints it with exit status 0)
    assert parse_native_max(" max sectors   = 0/1, HPA setting seems invalid (buggy kernel device driver?)") is None


def test_hdparm_dco_and_hidden_areas() -> None:
    real = parse_dco((DCO / "hdparm-dco-identify.txt").read_text())
    assert real == 1465149168
    assert parse_dco("DCO Revision: 0x0000 -- unknown, treating as 0002\n\tReal max sectors: 1\n") is None  # aborted
    native = parse_native_max((DCO / "hdparm-N.txt").read_text())
    assert hidden_areas(native, real) == HiddenAreas(hpa=False, hpa_sectors=0, dco=False, dco_sectors=0)
    hpa = parse_native_max((HPA / "hdparm-N.txt").read_text())
    assert hidden_areas(hpa, 586072368 + 100) == HiddenAreas(hpa=True, hpa_sectors=2113, dco=True, dco_sectors=100)
    assert hidden_areas(hpa, None) == HiddenAreas(hpa=True, hpa_sectors=2113)
    assert hidden_areas(None, None) == HiddenAreas()


def test_hdparm_sanitize_status() -> None:
    running = parse_sanitize_status(
        "/dev/sda:\nIssuing SANITIZE_STATUS command\nSanitize status:\n"
        "    State:    SD2 Sanitize operation In Process\n    Progress: 0x41c2 (25%)\n"
    )
    assert running.state == "in-progress" and running.progress == pytest.approx(0x41C2 / 0xFFFF)
    done = parse_sanitize_status("Sanitize status:\n    State:    SD0 Sanitize Idle\n"
                                 "    Last Sanitize Operation Completed Without Error\n")  # fmt: skip
    assert done.state == "idle" and done.completed and not done.failed
    assert parse_sanitize_status("    State:    SD1 Sanitize Frozen\n").state == "frozen"
    # hdparm 9.65's other wordings (strings of the Debian 12 binary)
    failed = parse_sanitize_status("    State:    SD3 Sanitize Operation Failed\n")
    assert failed.state == "failed" and failed.failed
    assert parse_sanitize_status(
        "    State:    SD0 Sanitize Idle\nLast Sanitize Command completed unsuccessfully\n"
    ).failed


def test_nvme_id_ctrl_of_the_wd_sn730() -> None:
    caps = parse_id_ctrl((WDC / "nvme-id-ctrl.json").read_text())
    assert caps is not None
    assert (caps.model, caps.serial, caps.firmware) == ("WDC PC SN730 SDBQNTY-256G-1001", "1951B3444502", "11170101")
    assert caps.vendor_id == 0x15B7 and caps.namespaces == 1
    assert caps.sanitize_crypto and caps.sanitize_block and not caps.sanitize_overwrite
    assert caps.format_nvm and caps.format_crypto
    assert caps.dlfeat is None and caps.deallocated_reads is None


def test_nvme_id_ns_dlfeat_and_sector_size() -> None:
    caps = parse_id_ctrl((WDC / "nvme-id-ctrl.json").read_text())
    assert caps is not None
    ns = {"nsze": 1953525168, "nlbaf": 1, "flbas": 1, "dlfeat": 9, "lbafs": [{"ms": 0, "ds": 9, "rp": 2},
                                                                             {"ms": 0, "ds": 12, "rp": 0}]}  # fmt: skip
    with_ns = add_id_ns(caps, json.dumps(ns))
    assert with_ns.dlfeat == 9 and with_ns.deallocated_reads == "zeros" and with_ns.logical_sector == 4096
    assert add_id_ns(caps, json.dumps({**ns, "dlfeat": 2})).deallocated_reads == "ones"
    assert add_id_ns(caps, json.dumps({**ns, "dlfeat": 0})).deallocated_reads is None
    assert add_id_ns(caps, "not json") == caps


def test_nvme_sanitize_log_forms() -> None:
    status = "(2) A Sanitize Operation is Currently in Progress."
    nested = {"nvme0": {"sprog": 32768, "sstat": {"global_erased": 0, "no_cmplted_passes": 0, "status": status}}}
    log = parse_sanitize_log(json.dumps(nested))
    assert log.status == "in-progress" and log.progress == pytest.approx(0.5, abs=0.001) and log.passes == 0
    assert parse_sanitize_log(json.dumps({"sprog": 65535, "sstat": 0x101})).status == "completed"
    assert parse_sanitize_log(json.dumps({"sprog": 0, "sstat": 3})).status == "failed"
    assert parse_sanitize_log(json.dumps({"sprog": 65535, "sstat": 0})).status == "never"
    assert controller_of("nvme0n1") == "nvme0" and controller_of("nvme12c3n2") == "nvme12"
    assert controller_of("sda") == "sda"


def test_sg_opcodes_sanitize_service_actions() -> None:
    # the table sg_opcodes prints (REPORT SUPPORTED OPERATION CODES): opcode, service action, name
    text = (
        "  SEAGATE   ST600MM0006       0004\n  Peripheral device type: disk\n\n"
        "Opcode  Service    CDB    Name\n(hex)   action(h)  size\n"
        "-----------------------------------------------\n"
        " 00                  6    Test Unit Ready\n"
        " 48        1        10    Sanitize, overwrite\n"
        " 48        2        10    Sanitize, block erase\n"
        " 48       1f        10    Sanitize, exit failure mode\n"
    )
    caps = parse_opcodes(text)
    assert caps.reported and caps.sanitize_overwrite and caps.sanitize_block and not caps.sanitize_crypto
    assert not parse_opcodes(" 00                  6    Test Unit Ready\n").sanitize


def _smart(name: str) -> str:
    path = SMART / name / "smartctl.json"
    if not path.is_file():
        pytest.skip(f"shared SMART samples not found at {SMART}")
    return path.read_text()


def test_smart_of_an_nvme_drive_with_media_errors() -> None:
    smart = parse_smart(_smart("samsung-ssd-970-evo-500gb-media-errors"))
    assert smart == Smart(passed=True, power_on_hours=12798, media_errors=7, percentage_used=3)


def test_smart_of_every_shared_sample() -> None:
    if not SMART.is_dir():
        pytest.skip(f"shared SMART samples not found at {SMART}")
    for path in sorted(SMART.glob("*/smartctl.json")):
        data = json.loads(path.read_text())
        smart = parse_smart(path.read_text())
        assert smart.passed == data.get("smart_status", {}).get("passed"), path
        assert smart.power_on_hours is not None, path
        raw = {row["id"]: row["raw"]["value"] for row in data.get("ata_smart_attributes", {}).get("table", [])}
        assert (smart.reallocated, smart.pending) == (raw.get(5), raw.get(197)), path
    failing = parse_smart(_smart("hitachi-hds721050dle630-failing"))
    assert (failing.reallocated or 0) > 0 and (failing.pending or 0) > 0


def test_interface_from_transport_or_name() -> None:
    assert interface_of("sda", "sata") == "sata" and interface_of("sda", "ata") == "sata"
    assert interface_of("nvme0n1", None) == "nvme" and interface_of("sdb", "usb") == "usb"
    assert interface_of("vda", None) == "virtio" and interface_of("mmcblk0", None) == "mmc"
    assert interface_of("sdc", "sas") == "sas" and interface_of("sdd", None) == "unknown"


def test_inspect_a_sata_ssd_asks_hdparm_and_smartctl() -> None:
    tools = FakeTools({"/dev/sda": INTEL})
    info = inspect_drive("sda", Path("/dev/sda"), size_bytes=240057409536, transport="sata", rotational=None,
                         model="INTEL SSDSC2CT24", serial=None, run=tools)  # fmt: skip
    assert tools.calls == [
        ["hdparm", "-I", "/dev/sda"], ["hdparm", "-N", "/dev/sda"], ["smartctl", "-j", "-a", "/dev/sda"],
        ["hdparm", "-V"], ["smartctl", "--version"],
    ]  # fmt: skip
    assert info.interface == "sata" and info.vendor == "Intel" and info.model == "INTEL SSDSC2CT240A4"
    assert info.serial == "CVKI3206029X240DGN" and info.firmware == "335u" and info.rotational is False
    assert info.ata is not None and info.ata.enhanced_erase and info.nvme is None
    assert info.hidden == HiddenAreas() and info.smart == Smart()  # no -N nor smartctl captured: unknown
    assert info.tools == {"hdparm": "hdparm v9.65", "smartmontools": "smartctl 7.4 2023-08-01 r5530 "
                          "[x86_64-linux-6.12.0-amd64] (local build)"}  # fmt: skip
    assert info.raw["hdparm -I /dev/sda"].startswith("/dev/sda:")


def test_inspect_reports_an_hpa_and_smart() -> None:
    smart = SMART / "samsung-ssd-860-evo-500gb" / "smartctl.json"
    overrides: dict[tuple[str, ...], Override] = {("hdparm", "-N", "/dev/sda"): HPA / "hdparm-N.txt"}
    if smart.is_file():
        overrides[("smartctl", "-j", "-a", "/dev/sda")] = smart
    info = inspect_drive("sda", Path("/dev/sda"), size_bytes=1, transport=None, rotational=None, model=None,
                         serial=None, run=FakeTools({"/dev/sda": INTEL}, overrides))  # fmt: skip
    assert info.interface == "sata"  # an sd disk of unknown transport that answers hdparm -I
    assert info.hidden == HiddenAreas(hpa=True, hpa_sectors=2113)
    assert info.native_max is not None and info.native_max.native == 586072368
    if smart.is_file():
        assert info.smart.passed is True and info.smart.reallocated is not None


def test_inspect_an_nvme_drive_asks_the_controller_and_the_namespace() -> None:
    tools = FakeTools({"/dev/nvme0n1": WDC})
    info = inspect_drive("nvme0n1", Path("/dev/nvme0n1"), size_bytes=256060514304, transport="nvme",
                         rotational=None, model=None, serial=None, run=tools)  # fmt: skip
    assert tools.calls[:3] == [
        ["nvme", "id-ctrl", "/dev/nvme0", "-o", "json"], ["nvme", "id-ns", "/dev/nvme0n1", "-o", "json"],
        ["smartctl", "-j", "-a", "/dev/nvme0n1"],
    ]  # fmt: skip
    assert info.interface == "nvme" and info.controller == Path("/dev/nvme0") and info.rotational is False
    assert info.vendor == "Western Digital" and info.serial == "1951B3444502" and info.firmware == "11170101"
    assert info.nvme is not None and info.nvme.sanitize_crypto and info.logical_sector == 512
    assert info.tools["nvme-cli"] == "nvme version 2.13 (git 2.13)"


def test_inspect_usb_and_virtio_drives_ask_no_erase_tool() -> None:
    tools = FakeTools({"/dev/sdb": INTEL, "/dev/vda": None})
    usb = inspect_drive("sdb", Path("/dev/sdb"), size_bytes=1, transport="usb", rotational=True, model="Flash",
                        serial="X1", run=tools)  # fmt: skip
    assert usb.interface == "usb" and usb.ata is None and usb.model == "Flash" and usb.serial == "X1"
    virtio = inspect_drive("vda", Path("/dev/vda"), size_bytes=1, transport=None, rotational=True, model=None,
                           serial=None, run=tools)  # fmt: skip
    assert virtio.interface == "virtio" and virtio.tools == {}
    assert [c[0] for c in tools.calls] == ["smartctl", "smartctl"]


def test_inspect_survives_missing_tools() -> None:
    tools = FakeTools(
        {"/dev/sda": INTEL}, {("hdparm",): FileNotFoundError("hdparm"), ("smartctl",): FileNotFoundError()}
    )
    info = inspect_drive("sda", Path("/dev/sda"), size_bytes=1, transport="sata", rotational=True, model="M",
                         serial="S", run=tools)  # fmt: skip
    assert info.ata is None and info.model == "M" and info.tools == {} and info.smart == Smart()
