"""What ``hdparm`` says of an ATA drive, as typed values: pure functions of text (standard library only).

- ``parse_identify``: ``hdparm -I DEV`` -> ``AtaCaps`` (model, serial, firmware, the Security section, the
  SANITIZE feature set, the rotation rate, the logical sector size, the LBA count), or None when the text is
  not an ATA identify answer (a USB bridge that does not pass it, an NVMe drive, an error).
- ``parse_native_max``: ``hdparm -N DEV`` (`` max sectors   = 976771055/976773168, HPA is enabled``) ->
  ``NativeMax`` (visible and native sector counts, whether an HPA hides the difference).
- ``parse_dco``: ``hdparm --dco-identify DEV`` -> the DCO's ``Real max sectors``.
- ``parse_sanitize_status``: ``hdparm --sanitize-status DEV`` -> ``SanitizeStatus``.

The line formats are hdparm's own (identify.c and hdparm.c of hdparm 9.x, Debian 13 ships 9.65): each feature
line is ``[*]<TAB>name`` under "Commands/features", each Security line ``[not]<TAB>name``. Bad or empty text
gives None (or None fields), never an exception: a drive that cannot say is "unknown", and the method choice
then falls back to what it can prove.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["AtaCaps", "NativeMax", "SanitizeStatus", "parse_dco", "parse_identify", "parse_native_max",
           "parse_sanitize_status"]  # fmt: skip


@dataclass(frozen=True)
class AtaCaps:
    """An ATA drive's identify data, as far as the erasure needs it. ``None``: hdparm did not say."""

    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    # the Security feature set (word 128): supported, enabled (a user password is set), locked (refuses I/O
    # until unlocked), frozen (refuses security commands until a power cycle or a suspend to RAM),
    # count expired (too many wrong passwords: refuses until a power cycle)
    security_supported: bool | None = None
    security_enabled: bool | None = None
    locked: bool | None = None
    frozen: bool | None = None
    count_expired: bool | None = None
    enhanced_erase: bool | None = None
    security_level: str | None = None  # "high" or "maximum" (only when a password is set)
    erase_minutes: int | None = None  # the drive's own estimate for SECURITY ERASE UNIT
    enhanced_erase_minutes: int | None = None  # ... for ENHANCED SECURITY ERASE UNIT
    # the SANITIZE feature set (word 59) and its commands
    sanitize: bool = False
    sanitize_crypto: bool = False  # CRYPTO_SCRAMBLE_EXT
    sanitize_block: bool = False  # BLOCK_ERASE_EXT
    sanitize_overwrite: bool = False  # OVERWRITE_EXT
    solid_state: bool | None = None  # "Nominal Media Rotation Rate: Solid State Device"
    rpm: int | None = None  # "Nominal Media Rotation Rate: 7200"
    logical_sector: int | None = None
    sectors: int | None = None  # "LBA48  user addressable sectors" (else the 28-bit count)
    hpa_feature: bool = False  # "Host Protected Area feature set" listed
    dco_feature: bool = False  # "Device Configuration Overlay feature set" listed
    trim: bool = False  # "Data Set Management TRIM supported"


@dataclass(frozen=True)
class NativeMax:
    """``hdparm -N``: the sectors the host sees and the drive's native count; ``hpa`` when they differ."""

    visible: int
    native: int
    hpa: bool

    @property
    def hidden(self) -> int:
        return max(0, self.native - self.visible)


@dataclass(frozen=True)
class SanitizeStatus:
    """``hdparm --sanitize-status``: ``state`` "idle" (SD0), "frozen" (SD1), "in-progress" (SD2), "failed"
    (SD3) or "unknown";
    ``progress`` the fraction done (0..1) while in progress; ``failed`` when the last sanitize failed."""

    state: str
    progress: float | None = None
    failed: bool = False
    completed: bool = False  # "Last Sanitize Operation Completed Without Error"


_FIELD = re.compile(r"^\s*(Model Number|Serial Number|Firmware Revision):\s*(.*?)\s*$", re.M)
_SECURITY_LINE = re.compile(
    r"^(not\s+)?(supported: enhanced erase|supported|enabled|locked|frozen|expired: security count)$"
)
_ERASE_TIME = re.compile(r"(?:more than\s+)?(\d+)\s*min for (ENHANCED )?SECURITY ERASE UNIT")
_ROTATION = re.compile(r"Nominal Media Rotation Rate:\s*(.+?)\s*$", re.M)
_LOGICAL_SECTOR = re.compile(r"Logical\s+Sector size:\s*(\d+)\s*bytes", re.I)
_LBA48 = re.compile(r"LBA48\s+user addressable sectors:\s*(\d+)")
_LBA28 = re.compile(r"LBA\s+user addressable sectors:\s*(\d+)")
_NATIVE = re.compile(r"max sectors\s*=\s*(\d+)\s*/\s*(\d+)(?:\s*,\s*(.*))?")
_DCO_REAL = re.compile(r"Real max sectors:\s*(\d+)")
_SANITIZE_STATE = re.compile(r"State:\s*SD(\d)")
_SANITIZE_PROGRESS = re.compile(r"Progress:\s*0x([0-9a-fA-F]+)\s*\((\d+)%\)")


def _section(text: str, title: str) -> list[str]:
    """The stripped lines of one top-level section (``Security:``, ``Commands/features:``)."""
    lines: list[str] = []
    inside = False
    for raw in text.splitlines():
        starts_section = bool(raw) and not raw[0].isspace()
        if starts_section:
            if inside:
                break
            inside = raw.strip().rstrip(":").strip() == title.rstrip(":")
            continue
        if inside and raw.strip():
            lines.append(raw.strip())
    return lines


def _security(lines: list[str]) -> dict[str, object]:
    found: dict[str, object] = {}
    names = {
        "supported": "security_supported", "enabled": "security_enabled", "locked": "locked",
        "frozen": "frozen", "expired: security count": "count_expired", "supported: enhanced erase": "enhanced_erase",
    }  # fmt: skip
    for line in lines:
        flat = re.sub(r"\s+", " ", line)
        matched = _SECURITY_LINE.match(flat)
        if matched:
            found[names[matched.group(2)]] = matched.group(1) is None
        elif flat.startswith("Security level"):
            found["security_level"] = flat.removeprefix("Security level").strip() or None
        for minutes, enhanced in _ERASE_TIME.findall(flat):
            found["enhanced_erase_minutes" if enhanced else "erase_minutes"] = int(minutes)
    return found


def _feature(lines: list[str], name: str) -> bool:
    """A feature line names ``name`` (hdparm lists only what the drive supports; ``*`` marks it enabled)."""
    return any(line.lstrip("*").strip().startswith(name) for line in lines)


def _int(pattern: re.Pattern[str], text: str) -> int | None:
    found = pattern.search(text)
    return int(found.group(1)) if found else None


def parse_identify(text: str) -> AtaCaps | None:
    """``hdparm -I`` text -> ``AtaCaps``; None when it holds no identify data (no model, no security, no
    feature list)."""
    if not isinstance(text, str) or not text.strip():
        return None
    fields = {name: value or None for name, value in _FIELD.findall(text)}
    security = _security(_section(text, "Security"))
    features = _section(text, "Commands/features")
    if not fields and not security and not features:
        return None
    rotation = _ROTATION.search(text)
    rate = rotation.group(1) if rotation else ""
    solid = True if "Solid State" in rate else (False if rate.isdigit() else None)
    sectors = _int(_LBA48, text) or _int(_LBA28, text)
    sanitize = _feature(features, "SANITIZE feature set")
    return AtaCaps(
        model=fields.get("Model Number"),
        serial=fields.get("Serial Number"),
        firmware=fields.get("Firmware Revision"),
        sanitize=sanitize,
        sanitize_crypto=_feature(features, "CRYPTO_SCRAMBLE_EXT"),
        sanitize_block=_feature(features, "BLOCK_ERASE_EXT"),
        sanitize_overwrite=_feature(features, "OVERWRITE_EXT"),
        solid_state=solid,
        rpm=int(rate) if rate.isdigit() else None,
        logical_sector=_int(_LOGICAL_SECTOR, text),
        sectors=sectors or None,
        hpa_feature=_feature(features, "Host Protected Area feature set"),
        dco_feature=_feature(features, "Device Configuration Overlay feature set"),
        trim=_feature(features, "Data Set Management TRIM supported"),
        **security,  # type: ignore[arg-type]
    )


def parse_native_max(text: str) -> NativeMax | None:
    """``hdparm -N`` text -> ``NativeMax``; None when it has no ``max sectors = V/N`` line or says the HPA
    setting is invalid (a USB bridge answering garbage: ``0/1``)."""
    found = _NATIVE.search(text or "")
    if not found:
        return None
    visible, native = int(found.group(1)), int(found.group(2))
    note = (found.group(3) or "").lower()
    if native <= 1 or "invalid" in note or visible > native:
        return None
    # hdparm prints "HPA is enabled" / "HPA is disabled", or "ACCESSIBLE MAX ADDRESS enabled" (ACS-3 AMA)
    return NativeMax(visible, native, hpa=visible < native)


def parse_dco(text: str) -> int | None:
    """``hdparm --dco-identify`` text -> the DCO's real max sectors (the size before any overlay), or None
    (also for the ``Real max sectors: 1`` hdparm prints when the drive aborted the command: QEMU's disk)."""
    real = _int(_DCO_REAL, text or "")
    return real if real is not None and real > 1 else None


def parse_sanitize_status(text: str) -> SanitizeStatus:
    """``hdparm --sanitize-status`` text -> ``SanitizeStatus`` (state "unknown" when it cannot be read)."""
    text = text or ""
    state = _SANITIZE_STATE.search(text)
    states = {"0": "idle", "1": "frozen", "2": "in-progress", "3": "failed"}  # hdparm 9.65's SD0..SD3
    progress = _SANITIZE_PROGRESS.search(text)
    fraction = int(progress.group(1), 16) / 0xFFFF if progress else None
    lowered = text.lower()
    return SanitizeStatus(
        state=states.get(state.group(1), "unknown") if state else "unknown",
        progress=min(1.0, fraction) if fraction is not None else None,
        failed=bool(state and state.group(1) == "3")
        or "completed unsuccessfully" in lowered
        or "operation failed" in lowered,
        completed="completed without error" in lowered,
    )
