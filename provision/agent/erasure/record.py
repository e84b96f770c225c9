"""The per-drive erasure record (the wire's ``DriveErasure``) and its reasons in plain words: what happened
to the drive, and what to do with it.

A reason names the drive (kernel name and serial, as printed on its label), what was done and what went wrong,
e.g. "drive sdb (serial S3Z9NB0K123456): after the NVMe format, 12 of 640 pieces read still hold data (first
at byte 1048576): the drive did not erase; set it aside".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from provision import __version__
from provision.wire.erasure import (
    MAX_ERRORS,
    METHODS,
    DriveErasure,
    HiddenAreas,
    Method,
    Smart,
    Verification,
)

MAX_COMMANDS = 64
PASSWORD = "provision-erase"  # nosec B105  # noqa: S105 - the ATA erase password, documented (docs/erasure.md): no secret
SET_ASIDE = "set it aside"

# a method in words, after "after the ..." / "the ... failed"
METHOD_WORDS: dict[str, str] = {
    "nvme-sanitize-crypto": "NVMe sanitize (crypto erase)",
    "nvme-sanitize-block": "NVMe sanitize (block erase)",
    "nvme-sanitize-overwrite": "NVMe sanitize (overwrite)",
    "nvme-format-crypto": "NVMe format (crypto erase)",
    "nvme-format-user-data": "NVMe format (user data erase)",
    "ata-sanitize-crypto": "ATA sanitize (crypto erase)",
    "ata-sanitize-block": "ATA sanitize (block erase)",
    "ata-sanitize-overwrite": "ATA sanitize (overwrite)",
    "ata-security-erase-enhanced": "ATA enhanced security erase",
    "ata-security-erase": "ATA security erase",
    "scsi-sanitize-crypto": "SCSI sanitize (crypto erase)",
    "scsi-sanitize-block": "SCSI sanitize (block erase)",
    "scsi-sanitize-overwrite": "SCSI sanitize (overwrite)",
    "overwrite": "overwrite with zeros",
}
PATTERN_WORDS: dict[str, str] = {
    "zeros": "do not read as zeros",
    "ones": "do not read as 0xff bytes",
    "zeros-or-ones": "read neither as zeros nor as 0xff bytes",
    "changed": "still hold the data they held before",
}


def iso(seconds: float) -> str:
    """UTC ISO time with a Z, to the second (the wire's ISO_TIME)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def drive_words(device: str, serial: str | None) -> str:
    return f"drive {device} (serial {serial})" if serial else f"drive {device} (no serial reported)"


def not_verified(device: str, serial: str | None, method: str, check: Verification) -> str:
    """Why a drive whose method ran is not erased: its read-back found the pattern missing."""
    found = PATTERN_WORDS.get(check.pattern, "do not match")
    first = f" (first at byte {check.first_mismatches[0]})" if check.first_mismatches else ""
    return (
        f"{drive_words(device, serial)}: after the {METHOD_WORDS.get(method, method)}, {check.mismatches} of "
        f"{check.samples} pieces read {found}{first}: the drive did not erase; {SET_ASIDE}"
    )


def failed(device: str, serial: str | None, what: str, detail: str) -> str:
    """Why a drive could not be erased or read back (``what``: "the overwrite failed", ...)."""
    return f"{drive_words(device, serial)}: {what}: {detail}; the drive is not erased, {SET_ASIDE}"


def password_left(device: str, serial: str | None, password: str) -> str:
    """Why a drive whose ATA security erase failed is not ok even when the overwrite then erased it: our
    password stays set, and the drive locks itself at its next power-on."""
    return (
        f"{drive_words(device, serial)}: the drive's security password '{password}' is still set: it will lock "
        f"at power-on; unlock it with hdparm --security-disable {password}, or {SET_ASIDE}"
    )


@dataclass
class Draft:
    """What is known of one drive's erasure so far; ``record()`` makes the wire's ``DriveErasure``."""

    device: str
    size_bytes: int
    started: float
    interface: str = "unknown"
    method: Method = "overwrite"
    verification: Verification | None = None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    rotational: bool | None = None
    passes: int = 1
    tools: dict[str, str] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    hidden_areas: HiddenAreas = field(default_factory=HiddenAreas)
    smart: Smart = field(default_factory=Smart)
    fallback: str | None = None
    reason: str | None = None
    errors: list[str] = field(default_factory=list)
    password_left: bool = False  # an ATA erase password could not be removed: the drive locks at power-on

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text[:1000])

    def record(self, ended: float) -> DriveErasure:
        """The drive's record: ``ok`` only with a verification that found the pattern and no reason given."""
        ok = self.reason is None and self.verification is not None and self.verification.ok
        reason = self.reason
        if not ok and reason is None:
            reason = failed(self.device, self.serial, "the erasure did not finish", "no read-back was made")
        if self.password_left:  # however well it was overwritten, the drive locks itself at its next power-on
            left = password_left(self.device, self.serial, PASSWORD)
            ok, reason = False, f"{reason}; {left}" if reason else left
        return DriveErasure(
            device=self.device, size_bytes=self.size_bytes, interface=(self.interface or "unknown")[:16],
            method=self.method, category=METHODS[self.method], ok=ok, started=iso(self.started),
            ended=iso(max(ended, self.started)), verification=self.verification, vendor=_cut(self.vendor, 64),
            model=_cut(self.model, 128), serial=_cut(self.serial, 128), firmware=_cut(self.firmware, 64),
            rotational=self.rotational, passes=self.passes, tools={**self.tools, "provision": __version__},
            commands=[list(c) for c in self.commands[:MAX_COMMANDS]], hidden_areas=self.hidden_areas,
            smart=self.smart, fallback=_cut(self.fallback, 500), reason=None if ok else _cut(reason, 2000),
            errors=self.errors[:MAX_ERRORS],
        )  # fmt: skip


def _cut(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]
