"""The smartctl parsers: inline edge cases, then the 6 real SMART samples of ../shared/hardware/smart/.

The real samples are read in place; expected values were read from the files themselves (and match
../shared/hardware/README.md).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from provision.facts import SmartReport, SmartVerdict, parse_smartctl_json, parse_smartctl_text
from tests.support.paths import HARDWARE

SMART = HARDWARE / "smart"

# --- inline edge cases ---------------------------------------------------------------------------------

SMART_A = """\
Device Model:     WDC WD5000AAKX-08U6AA0
Serial Number:    WD-WCC2EA1B2C3D
ATA Version is:   ATA8-ACS (minor revision not indicated)
SMART overall-health self-assessment test result: FAILED!
Drive failure expected in less than 24 hours. SAVE ALL DATA.

ID# ATTRIBUTE_NAME          FLAG     VALUE WORST THRESH TYPE      UPDATED  WHEN_FAILED RAW_VALUE
  5 Reallocated_Sector_Ct   0x0033   001   001   140    Pre-fail  Always   FAILING_NOW 2002
  9 Power_On_Hours          0x0032   012   012   000    Old_age   Always       -       64433h+05m+12.000s
187 Reported_Uncorrect      0x0032   100   100   000    Old_age   Always       -       0 (0 2)
194 Temperature_Celsius     0x0022   040   045   000    Old_age   Always       -       40 (Min/Max 20/45)
197 Current_Pending_Sector  0x0032   200   200   000    Old_age   Always       -       17
199 UDMA_CRC_Error_Count    0x0032   200   200   000    Old_age   Always       -       0

SMART Error Log Version: 1
"""

SMART_NVME = """\
Model Number:                       Samsung SSD 970 EVO Plus 1TB
Serial Number:                      S4EWNX0N123456
SMART overall-health self-assessment test result: PASSED
Percentage Used:                    12%
Power On Hours:                     1,234
Media and Data Integrity Errors:    0
"""


def test_smart_text_ata_table() -> None:
    report = parse_smartctl_text(SMART_A)
    assert report.verdict is SmartVerdict.FAILED
    assert (report.model, report.serial, report.protocol) == (
        "WDC WD5000AAKX-08U6AA0",
        "WD-WCC2EA1B2C3D",
        "ATA",
    )
    assert (report.reallocated_sectors, report.pending_sectors, report.crc_errors) == (2002, 17, 0)
    assert report.reported_uncorrect == 0  # "0 (0 2)": the leading integer
    assert report.power_on_hours == 64433
    assert report.offline_uncorrectable is None  # attribute absent


def test_smart_text_nvme() -> None:
    report = parse_smartctl_text(SMART_NVME)
    assert (report.verdict, report.protocol) == (SmartVerdict.PASSED, "NVMe")
    assert (report.percentage_used, report.power_on_hours, report.media_errors) == (12, 1234, 0)


def test_smart_json_verdict_comes_from_smart_status() -> None:
    data = {
        "device": {"name": "/dev/sda", "protocol": "ATA"},
        "smart_status": {"passed": True},
        "ata_smart_attributes": {
            "table": [
                {"id": 5, "when_failed": "now", "raw": {"value": 3000, "string": "3000"}},
                {"id": "x"},
                7,
            ]
        },
    }
    report = parse_smartctl_json(json.dumps(data))
    assert (report.verdict, report.reallocated_sectors, report.device) == (
        SmartVerdict.PASSED,
        3000,
        "/dev/sda",
    )


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "\x00\xff", "null"])
def test_smart_json_invalid_is_unknown(text: str) -> None:
    assert parse_smartctl_json(text) == SmartReport()


@pytest.mark.parametrize("text", ["", "garbage", "ID# RAW_VALUE\n  5 x\n", "SMART overall-health: MAYBE\n"])
def test_smart_text_garbage_is_unknown(text: str) -> None:
    assert parse_smartctl_text(text).verdict is SmartVerdict.UNKNOWN


# --- the real samples -----------------------------------------------------------------------------------


PASSED, FAILED = SmartVerdict.PASSED, SmartVerdict.FAILED

EXPECTED: dict[str, SmartReport] = {
    # SATA HDD behind a USB bridge (JMicron): failing now, attribute 5 value 1 <= threshold 5.
    "hitachi-hds721050dle630-failing": SmartReport(
        device="/dev/sdc",
        model="Hitachi HDS721050DLE630",
        serial="MSK423Y20S3HBC",
        protocol="ATA",
        verdict=FAILED,
        reallocated_sectors=1975,
        pending_sectors=8,
        offline_uncorrectable=0,
        reported_uncorrect=None,  # attribute 187 is not in this drive's table
        crc_errors=0,
        power_on_hours=65592,
    ),
    "samsung-ssd-840-crc-errors": SmartReport(
        device="/dev/sda",
        model="Samsung SSD 840 Series",
        serial="S14LNEACC02756X",
        protocol="ATA",
        verdict=PASSED,
        reallocated_sectors=0,
        reported_uncorrect=0,  # Samsung names 187 "Uncorrectable_Error_Cnt"
        crc_errors=108,  # Samsung names 199 "CRC_Error_Count"
        power_on_hours=19497,
    ),
    "samsung-ssd-860-evo-500gb": SmartReport(
        device="/dev/sda",
        model="Samsung SSD 860 EVO 500GB",
        serial="S3YZNB0KB00864E",
        protocol="ATA",
        verdict=PASSED,
        reallocated_sectors=0,
        reported_uncorrect=0,
        crc_errors=0,
        power_on_hours=14551,
    ),
    "samsung-ssd-970-evo-500gb-media-errors": SmartReport(
        device="/dev/nvme0",
        model="Samsung SSD 970 EVO 500GB",
        serial="S466NX0M776250H",
        protocol="NVMe",
        verdict=PASSED,
        media_errors=7,
        percentage_used=3,
        power_on_hours=12798,
    ),
    "intel-ssdpeknw010t8-660p": SmartReport(
        device="/dev/testfoobarpass",  # edited upstream
        model="INTEL SSDPEKNW010T8",
        serial="BTNH93710FS91P0B",
        protocol="NVMe",
        verdict=PASSED,
        media_errors=0,
        percentage_used=0,
        power_on_hours=2401,
    ),
    # smartctl text (-x layout: "ID# ATTRIBUTE_NAME FLAGS VALUE WORST THRESH FAIL RAW_VALUE").
    "hgst-hts725050a7e630-e861b5e1a8fe": SmartReport(
        device=None,  # the text output does not name the device
        model="HGST HTS725050A7E630",
        serial=None,  # masked "--" by the publisher
        protocol="ATA",
        verdict=PASSED,
        reallocated_sectors=0,
        pending_sectors=0,
        offline_uncorrectable=0,
        # Recorded as read: HGST packs several counters in this 48-bit raw field (65536 = 1 << 16 after
        # 7 power-on hours); judging it is the health policy's job, not the parser's.
        reported_uncorrect=65536,
        crc_errors=0,
        power_on_hours=7,
    ),
}


def _sample(folder: str) -> tuple[str, str]:
    if not SMART.is_dir():
        pytest.skip(f"shared SMART samples not found at {SMART}")
    files = sorted((SMART / folder).glob("smartctl.*"))
    assert len(files) == 1, files
    return files[0].suffix, files[0].read_text()


def _parse(folder: str) -> SmartReport:
    suffix, text = _sample(folder)
    return parse_smartctl_json(text) if suffix == ".json" else parse_smartctl_text(text)


def test_every_sample_is_covered() -> None:
    if not SMART.is_dir():
        pytest.skip(f"shared SMART samples not found at {SMART}")
    assert sorted(p.name for p in SMART.iterdir() if p.is_dir()) == sorted(EXPECTED)


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_sample(folder: str) -> None:
    assert _parse(folder) == EXPECTED[folder]


def test_failing_hitachi_keeps_the_drive_verdict_even_if_status_said_passed() -> None:
    _, text = _sample("hitachi-hds721050dle630-failing")
    data = json.loads(text)
    failing = [a for a in data["ata_smart_attributes"]["table"] if a.get("when_failed") == "now"]
    assert [a["id"] for a in failing] == [5]
    data["smart_status"]["passed"] = True  # a drive that still says PASSED with a failing attribute
    report = parse_smartctl_json(json.dumps(data))
    assert report.verdict is PASSED  # smart_status decides; the policy judges the counters
    assert report.reallocated_sectors == 1975


def test_json_without_smart_status_is_unknown() -> None:
    _, text = _sample("samsung-ssd-860-evo-500gb")
    data = json.loads(text)
    del data["smart_status"]
    assert parse_smartctl_json(json.dumps(data)) == replace(
        EXPECTED["samsung-ssd-860-evo-500gb"], verdict=SmartVerdict.UNKNOWN
    )


def _as_a_layout(text: str) -> str:
    """The attribute table of ``smartctl -x`` text rewritten in the ``smartctl -a`` layout."""
    lines, in_table = [], False
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("ID#"):
            in_table = True
            line = "ID# ATTRIBUTE_NAME FLAG VALUE WORST THRESH TYPE UPDATED WHEN_FAILED RAW_VALUE"
        elif in_table and parts and parts[0].isdigit():
            attribute_id, name, _flags, value, worst, thresh, fail, *raw = parts
            raw_value = " ".join(raw)
            line = f"{attribute_id:>3} {name} 0x0032 {value} {worst} {thresh} Old_age Always {fail} {raw_value}"
        else:
            in_table = False
        lines.append(line)
    return "\n".join(lines)


def test_hgst_text_in_the_a_layout_gives_the_same_counters() -> None:
    """The same table printed in the ``smartctl -a`` layout (TYPE/UPDATED/WHEN_FAILED columns)."""
    _, text = _sample("hgst-hts725050a7e630-e861b5e1a8fe")
    converted = _as_a_layout(text)
    assert "Old_age Always - 35 (Min/Max 33/35)" in converted
    assert parse_smartctl_text(converted) == EXPECTED["hgst-hts725050a7e630-e861b5e1a8fe"]


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_truncated_samples_never_raise(folder: str) -> None:
    suffix, text = _sample(folder)
    parse = parse_smartctl_json if suffix == ".json" else parse_smartctl_text
    for end in range(0, len(text), max(1, len(text) // 97)):
        report = parse(text[:end])
        assert isinstance(report, SmartReport)
