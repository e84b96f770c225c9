"""Donor data erasure on the wire: what the server orders (``ErasePlan``, from a recipe's ``erase:``) and what
the agent reports, drive by drive (``ErasureReport`` of ``DriveErasure``), to ``POST /api/v1/runs/<run>/erasure``.

Every disk of the machine is erased, not only the one the image goes to (the live medium and removable media
excepted, and said so in ``skipped``). The method is the strongest the drive can do, per NIST SP 800-88 Rev. 1
(``METHODS``: each with its NIST category), and every method is followed by a verification that reads back the
whole drive or a documented sample and checks for the pattern the method leaves. A drive whose verification
fails is reported ``ok: false`` with the reason in plain words: the run then ends ``repair``, never ``done``.

The server keeps each ``DriveErasure`` as the drive's erasure record (adding the operator); certificates are
made from those records (``provision.certificates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from provision.wire.schema import Message, rule

Category = Literal["clear", "purge"]

# method -> NIST SP 800-88 Rev. 1 category. "overwrite" is one pass of zeros over every LBA, done by the agent
# itself: Clear on any drive (on flash, the spare area is not reached: never Purge).
METHODS: dict[str, Category] = {
    "nvme-sanitize-crypto": "purge",
    "nvme-sanitize-block": "purge",
    "nvme-sanitize-overwrite": "purge",
    "nvme-format-crypto": "purge",  # Format NVM, Secure Erase Setting 2
    "nvme-format-user-data": "purge",  # Format NVM, Secure Erase Setting 1
    "ata-sanitize-crypto": "purge",
    "ata-sanitize-block": "purge",
    "ata-sanitize-overwrite": "purge",
    "ata-security-erase-enhanced": "purge",
    "ata-security-erase": "purge",
    "scsi-sanitize-crypto": "purge",
    "scsi-sanitize-block": "purge",
    "scsi-sanitize-overwrite": "purge",
    "overwrite": "clear",
}
Method = Literal[
    "nvme-sanitize-crypto", "nvme-sanitize-block", "nvme-sanitize-overwrite", "nvme-format-crypto",
    "nvme-format-user-data", "ata-sanitize-crypto", "ata-sanitize-block", "ata-sanitize-overwrite",
    "ata-security-erase-enhanced", "ata-security-erase", "scsi-sanitize-crypto", "scsi-sanitize-block",
    "scsi-sanitize-overwrite", "overwrite",
]  # fmt: skip
# what the verification looks for: every byte read is 0x00 ("zeros") or 0xff ("ones"), or, after a crypto erase
# (which leaves unreadable noise), no sampled block reads as it did before the erase ("changed")
Pattern = Literal["zeros", "ones", "zeros-or-ones", "changed"]
MAX_DRIVES = 32
MAX_ERRORS = 50
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"  # UTC, e.g. 2026-12-06T23:10:00Z


@dataclass(frozen=True)
class ErasePlan(Message):
    """What the recipe's ``erase:`` orders, for every disk of the machine.

    ``method``: ``auto`` (the strongest method the drive supports, NIST Purge where it can) or ``overwrite``
    (one pass of zeros only: Clear). ``hidden_areas``: ``report`` (HPA/DCO detected and recorded) or ``remove``
    (also restored to the native size before the erase, so they are erased too). ``verify``: ``full`` (every
    byte read back) or ``sample`` (``sample_percent`` of the drive in pseudo-random 1 MiB blocks plus the
    first and last 16 MiB: NIST SP 800-88's representative sampling); an overwrite is always read back
    ``full`` when ``verify`` is ``full``. ``unfreeze``: a frozen ATA drive is unfrozen by a suspend to RAM
    (``rtcwake -m mem``) before its security erase; without it a frozen drive falls back to overwrite."""

    omit_none = True

    method: Literal["auto", "overwrite"] = "auto"
    hidden_areas: Literal["report", "remove"] = "report"
    verify: Literal["sample", "full"] = "sample"
    sample_percent: float = field(default=5.0, metadata=rule(ge=0.01))
    unfreeze: bool = True
    only: bool = False  # an erase-only run: no image follows (the PC leaves as parts)
    lot: str | None = field(default=None, metadata=rule(max_length=128, clean_text=True))  # the donor's delivery


@dataclass(frozen=True)
class HiddenAreas(Message):
    """Host Protected Area and Device Configuration Overlay (ATA): ``None`` where the drive cannot say."""

    omit_none = True

    hpa: bool | None = None
    hpa_sectors: int | None = field(default=None, metadata=rule(ge=0))  # hidden by the HPA
    dco: bool | None = None
    dco_sectors: int | None = field(default=None, metadata=rule(ge=0))  # hidden by the DCO
    removed: bool = False  # restored to the native size before the erase


@dataclass(frozen=True)
class Verification(Message):
    """The read-back after the method: ``method`` full or sample, the pattern looked for, how much was read,
    and the first offsets that did not match."""

    omit_none = True

    method: Literal["full", "sample"]
    pattern: Pattern
    ok: bool
    bytes_checked: int = field(metadata=rule(ge=0))
    samples: int = field(default=0, metadata=rule(ge=0))  # pieces of at most 1 MiB read
    mismatches: int = field(default=0, metadata=rule(ge=0))  # pieces that did not match
    first_mismatches: list[int] = field(default_factory=list, metadata=rule(max_length=16))  # byte offsets
    seconds: float = field(default=0.0, metadata=rule(ge=0))
    # what the read-back could not tell, in plain words (e.g. a crypto erase of a drive that held almost no
    # data: nothing to compare with); None when it could tell
    note: str | None = field(default=None, metadata=rule(max_length=500, clean_text=True))

    def __post_init__(self) -> None:
        if self.ok and (self.mismatches or not self.samples or not self.bytes_checked):
            raise ValueError("a verification is ok only when it read something and nothing mismatched")


def _tools(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 16 or any(len(k) > 64 or len(v) > 200 for k, v in value.items()):
        raise ValueError("at most 16 tools, names of 64 and versions of 200 characters")
    return value


def _commands(value: list[list[str]]) -> list[list[str]]:
    if any(len(argv) > 32 or any(len(arg) > 500 for arg in argv) for argv in value):
        raise ValueError("a command has at most 32 arguments of 500 characters")
    return value


@dataclass(frozen=True)
class Smart(Message):
    """The drive's SMART health summary at the time of the erase (None: not reported)."""

    omit_none = True

    passed: bool | None = None
    power_on_hours: int | None = field(default=None, metadata=rule(ge=0))
    reallocated: int | None = field(default=None, metadata=rule(ge=0))
    pending: int | None = field(default=None, metadata=rule(ge=0))
    media_errors: int | None = field(default=None, metadata=rule(ge=0))
    percentage_used: int | None = field(default=None, metadata=rule(ge=0))


@dataclass(frozen=True)
class DriveErasure(Message):
    """One drive's erasure, as the certificate states it. ``ok`` only when the method ran and its
    verification found the pattern everywhere it read; else ``reason`` says what went wrong in plain words."""

    omit_none = True

    device: str = field(metadata=rule(pattern=r"[a-z][a-z0-9]{0,31}"))  # kernel name: sda, nvme0n1
    size_bytes: int = field(metadata=rule(ge=0))
    interface: str = field(metadata=rule(max_length=16))  # nvme, sata, sas, scsi, usb, virtio, mmc, unknown
    method: Method
    category: Category
    ok: bool
    started: str = field(metadata=rule(pattern=ISO_TIME))
    ended: str = field(metadata=rule(pattern=ISO_TIME))
    verification: Verification | None = None  # None only when the method failed before any read-back
    vendor: str | None = field(default=None, metadata=rule(max_length=64, clean_text=True))
    model: str | None = field(default=None, metadata=rule(max_length=128, clean_text=True))
    serial: str | None = field(default=None, metadata=rule(max_length=128, clean_text=True))
    firmware: str | None = field(default=None, metadata=rule(max_length=64, clean_text=True))
    rotational: bool | None = None
    passes: int = field(default=1, metadata=rule(ge=0))
    # tool -> version (nvme-cli, hdparm, sg3_utils, provision), and the tool calls made
    tools: dict[str, str] = field(default_factory=dict, metadata=rule(clean_text=True, check=_tools))
    commands: list[list[str]] = field(default_factory=list, metadata=rule(max_length=64, check=_commands))
    hidden_areas: HiddenAreas = field(default_factory=HiddenAreas)
    smart: Smart = field(default_factory=Smart)
    fallback: str | None = field(default=None, metadata=rule(max_length=500, clean_text=True))  # why not stronger
    reason: str | None = field(default=None, metadata=rule(max_length=2000, clean_text=True))
    errors: list[str] = field(
        default_factory=list, metadata=rule(max_length=MAX_ERRORS, item_max_length=1000, clean_text=True)
    )

    def __post_init__(self) -> None:
        if METHODS[self.method] != self.category:
            raise ValueError(f"{self.method} is NIST {METHODS[self.method]}, not {self.category}")
        if self.ok and (self.verification is None or not self.verification.ok):
            raise ValueError("an erasure is ok only with a verification that found the pattern")
        if not self.ok and not self.reason:
            raise ValueError("a failed erasure needs a reason")


@dataclass(frozen=True)
class Skipped(Message):
    """A disk not erased, and why. A removable drive (USB, SD card) or the live medium leaves with its owner:
    not part of the PC. ``internal``: a drive of the PC itself that could not be erased (too many drives, held
    by something): the machine's erasure is then incomplete, the run goes to ``repair``."""

    device: str = field(metadata=rule(pattern=r"[a-z][a-z0-9]{0,31}"))
    reason: str = field(metadata=rule(max_length=500, clean_text=True))
    internal: bool = False


@dataclass(frozen=True)
class ErasureReport(Message):
    """Every drive's erasure for one run; ``ok`` only when there was at least one drive, all are ok and no
    internal drive was left out."""

    token: str = field(metadata=rule(min_length=8, max_length=128))
    drives: list[DriveErasure] = field(metadata=rule(max_length=MAX_DRIVES))
    skipped: list[Skipped] = field(default_factory=list, metadata=rule(max_length=MAX_DRIVES))

    @property
    def ok(self) -> bool:
        return erasure_complete(self.drives, self.skipped)


def erasure_complete(drives: Sequence[DriveErasure], skipped: Sequence[Skipped]) -> bool:
    """A machine's erasure is complete when it had at least one drive, all are ok and no internal drive was
    left out (the one rule: ``ErasureReport.ok`` and the agent's ``Erased.ok``)."""
    return bool(drives) and all(d.ok for d in drives) and not any(s.internal for s in skipped)


@dataclass(frozen=True)
class ErasureProgress(Message):
    """While drives are erased: per drive, its stage (``erasing`` or ``verifying``) and the fraction done
    (None where the tool gives none, e.g. an ATA security erase)."""

    token: str = field(metadata=rule(min_length=8, max_length=128))
    drives: dict[str, float | None] = field(metadata=rule(max_length=MAX_DRIVES))
    stage: Literal["erasing", "verifying"] = "erasing"
