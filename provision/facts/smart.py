"""Parse ``smartctl`` output (``--json`` or text) into a :class:`SmartReport`.

Counters are recorded exactly as the drive reports them; judging them is the health policy's job. Note that
ATA attribute raw values are 48-bit vendor-defined fields: several vendors pack more than one counter in them
(e.g. HGST drives report ``Reported_Uncorrect`` 65536 = 1 << 16 on a drive with 7 power-on hours). For
attributes 5, 187, 197, 198 and 199 the leading integer (text) or ``raw.value`` (JSON) is kept as read.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from provision.facts.model import SmartReport, SmartVerdict, fact_int

log = logging.getLogger(__name__)

__all__ = ["SmartFormatError", "parse_smartctl_json", "parse_smartctl_json_strict", "parse_smartctl_text"]

# ATA attribute ids (names vary by vendor, ids do not)
_REALLOCATED = 5  # Reallocated_Sector_Ct
_POWER_ON_HOURS_ID = 9  # Power_On_Hours (raw may be "12345h+12m+01.000s": leading integer)
_REPORTED_UNCORRECT = 187  # Reported_Uncorrect (Samsung: Uncorrectable_Error_Cnt)
_PENDING = 197  # Current_Pending_Sector
_OFFLINE_UNCORRECTABLE = 198  # Offline_Uncorrectable
_CRC_ERRORS = 199  # UDMA_CRC_Error_Count (Samsung: CRC_Error_Count)

_LEADING_INT_RE = re.compile(r"^(\d+)")
# "1,234" / "12 798" (thousands separators vary with the locale smartctl ran in) or plain "1234".
_GROUPED_INT_RE = re.compile(r"^(\d{1,3}(?:[,'\u00a0\u202f ]\d{3})+|\d+)(?![\d,])")
_ATTRIBUTE_ROW_RE = re.compile(r"^\s*(\d{1,3})\s+\S")
_TEXT_KEYS: dict[str, str] = {
    "Device Model": "model",
    "Model Number": "model",  # NVMe
    "Product": "model",  # SCSI
    "Serial Number": "serial",
    "Serial number": "serial",  # SCSI
}
_TEXT_NUMBERS: dict[str, str] = {  # NVMe health log lines
    "Media and Data Integrity Errors": "media_errors",
    "Percentage Used": "percentage_used",
    "Power On Hours": "power_on_hours",
}


class SmartFormatError(ValueError):
    """The text is not smartctl JSON output."""


def _as_int(value: Any) -> int | None:
    return fact_int(value) if isinstance(value, int) else None


def _as_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return None if value in ("", "--") else value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json_attributes(data: dict[str, Any]) -> dict[int, int | None]:
    """``raw.value`` per ATA attribute id (first row of an id wins)."""
    found: dict[int, int | None] = {}
    table = _dict(data.get("ata_smart_attributes")).get("table")
    for row in table if isinstance(table, list) else []:
        attribute_id = _as_int(_dict(row).get("id"))
        if attribute_id is not None and attribute_id not in found:
            found[attribute_id] = _as_int(_dict(_dict(row).get("raw")).get("value"))
    return found


def _report(
    attributes: dict[int, int | None],
    *,
    device: str | None,
    model: str | None,
    serial: str | None,
    protocol: str | None,
    verdict: SmartVerdict,
    media_errors: int | None,
    percentage_used: int | None,
    power_on_hours: int | None,
) -> SmartReport:
    if power_on_hours is None:
        power_on_hours = attributes.get(_POWER_ON_HOURS_ID)
    return SmartReport(
        device=device,
        model=model,
        serial=serial,
        protocol=protocol,
        verdict=verdict,
        reallocated_sectors=attributes.get(_REALLOCATED),
        pending_sectors=attributes.get(_PENDING),
        offline_uncorrectable=attributes.get(_OFFLINE_UNCORRECTABLE),
        reported_uncorrect=attributes.get(_REPORTED_UNCORRECT),
        crc_errors=attributes.get(_CRC_ERRORS),
        media_errors=media_errors,
        percentage_used=percentage_used,
        power_on_hours=power_on_hours,
    )


def parse_smartctl_json_strict(text: str) -> SmartReport:
    """Like :func:`parse_smartctl_json`, but raise :class:`SmartFormatError` on text that is not JSON."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SmartFormatError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SmartFormatError("top level is not a JSON object")
    device = _dict(data.get("device"))
    passed = _dict(data.get("smart_status")).get("passed")
    verdict = SmartVerdict.UNKNOWN
    if isinstance(passed, bool):
        # smart_status is the drive's own verdict; a failing attribute alone does not change it here.
        verdict = SmartVerdict.PASSED if passed else SmartVerdict.FAILED
    nvme = _dict(data.get("nvme_smart_health_information_log"))
    hours = _as_int(_dict(data.get("power_on_time")).get("hours"))
    if hours is None:
        hours = _as_int(nvme.get("power_on_hours"))
    return _report(
        _json_attributes(data),
        device=_as_text(device.get("name")),
        model=_as_text(data.get("model_name")),
        serial=_as_text(data.get("serial_number")),
        protocol=_as_text(device.get("protocol")),
        verdict=verdict,
        media_errors=_as_int(nvme.get("media_errors")),
        percentage_used=_as_int(nvme.get("percentage_used")),
        power_on_hours=hours,
    )


def parse_smartctl_json(text: str) -> SmartReport:
    """Report from ``smartctl --json`` output; an unknown report (and a logged warning) if it is not JSON."""
    try:
        return parse_smartctl_json_strict(text)
    except SmartFormatError as exc:
        log.warning("smartctl JSON ignored: %s", exc)
        return SmartReport()


def _leading_int(value: str) -> int | None:
    match = _LEADING_INT_RE.match(value.strip())
    return fact_int(match.group(1)) if match else None


def _grouped_int(value: str) -> int | None:
    match = _GROUPED_INT_RE.match(value.strip())
    if not match:
        return None
    return fact_int(re.sub(r"\D", "", match.group(1)))


def _verdict(value: str) -> SmartVerdict:
    word = value.strip().upper()
    if word.startswith("PASSED") or word == "OK":
        return SmartVerdict.PASSED
    if word.startswith("FAIL") or "FAILURE" in word:
        return SmartVerdict.FAILED
    return SmartVerdict.UNKNOWN


def _text_attributes(lines: list[str]) -> dict[int, int | None]:
    """Leading integer of RAW_VALUE per attribute id, for both the ``-a`` and the ``-x`` table layout."""
    found: dict[int, int | None] = {}
    columns = 0  # number of header columns while inside the table, else 0
    for line in lines:
        if line.lstrip().startswith("ID#") and "RAW_VALUE" in line:
            columns = len(line.split())  # RAW_VALUE is the last header column; the raw value may hold spaces
            continue
        if not columns:
            continue
        if not _ATTRIBUTE_ROW_RE.match(line):
            columns = 0  # blank line or legend: end of the table
            continue
        tokens = line.split()
        attribute_id = fact_int(tokens[0])
        if len(tokens) >= columns and attribute_id is not None:
            found.setdefault(attribute_id, _leading_int(" ".join(tokens[columns - 1 :])))
    return found


def parse_smartctl_text(text: str) -> SmartReport:
    """Report from ``smartctl -a``/``-x`` text output (ATA, NVMe, or SCSI health line only)."""
    lines = text.splitlines()
    values: dict[str, str | None] = {}
    numbers: dict[str, int | None] = {}
    verdict = SmartVerdict.UNKNOWN
    protocol: str | None = None
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key.startswith("SMART overall-health self-assessment test result") or key == "SMART Health Status":
            if verdict is SmartVerdict.UNKNOWN:
                verdict = _verdict(value)
        elif key in _TEXT_KEYS:
            values.setdefault(_TEXT_KEYS[key], _as_text(value))
        elif key in _TEXT_NUMBERS:
            numbers.setdefault(_TEXT_NUMBERS[key], _grouped_int(value))
        if protocol is None:
            protocol = _protocol_hint(key)
    return _report(
        _text_attributes(lines),
        device=None,  # the text output does not name the device
        model=values.get("model"),
        serial=values.get("serial"),
        protocol=protocol,
        verdict=verdict,
        media_errors=numbers.get("media_errors"),
        percentage_used=numbers.get("percentage_used"),
        power_on_hours=numbers.get("power_on_hours"),
    )


def _protocol_hint(key: str) -> str | None:
    if key in ("Model Number", "NVMe Version") or key.startswith("SMART/Health Information (NVMe"):
        return "NVMe"
    if key in ("ATA Version is", "SATA Version is", "Device Model"):
        return "ATA"
    if key in ("Transport protocol", "SCSI Version", "Product"):
        return "SCSI"
    return None
