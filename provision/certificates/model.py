"""What a certificate states, as typed frozen messages (``provision.wire.schema.Message``): the same classes
write the signed JSON (``to_dict``) and read it back, checked, when a donor verifies it (``from_dict``).

A machine's ``Certificate``: the workshop, the machine (MAC, asset id, maker, model, serial, CPU, RAM, disks), the
donor's lot, each drive's erasure as the agent reported it (``provision.wire.erasure.DriveErasure``) with the
operator, the imaging verification (image, version label, root digest, chunks verified, read-back), the hooks that
ran, the issue time, the certificate id (a uuid) and the software version. A certificate never states a failed
erasure: ``Certificate`` refuses a drive that is not ok (``gather`` raises ``NotErased`` before that, naming it).

A ``BatchCertificate`` is one lot (a donor's delivery): the certificates of its machines, one table of drives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from provision.wire.erasure import DriveErasure, Skipped
from provision.wire.schema import Message, rule

FORMAT: Final = "provision-certificate/1"
ISO = "%Y-%m-%dT%H:%M:%SZ"
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TEXT = rule(max_length=256, clean_text=True)


def iso(timestamp: float) -> str:
    """A moment as the certificate writes it: UTC, to the second (``2026-12-06T23:10:00Z``)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime(ISO)


@dataclass(frozen=True)
class Workshop(Message):
    name: str = field(metadata=TEXT)


@dataclass(frozen=True)
class MachineSummary(Message):
    """The machine as its facts describe it (``None``: unknown)."""

    mac: str = field(metadata=rule(pattern=r"[0-9a-f]{2}(:[0-9a-f]{2}){5}"))
    asset_id: str = field(metadata=TEXT)  # the host name it was given, else its MAC
    hostname: str | None = field(default=None, metadata=TEXT)
    vendor: str | None = field(default=None, metadata=TEXT)
    model: str | None = field(default=None, metadata=TEXT)
    serial: str | None = field(default=None, metadata=TEXT)
    cpu: str | None = field(default=None, metadata=TEXT)
    cpu_cores: int | None = field(default=None, metadata=rule(ge=0))
    ram_mb: int | None = field(default=None, metadata=rule(ge=0))
    disk_count: int | None = field(default=None, metadata=rule(ge=0))
    disk_gb: int | None = field(default=None, metadata=rule(ge=0))  # the largest internal disk
    disk_transport: list[str] = field(default_factory=list, metadata=rule(max_length=16, item_max_length=16))


@dataclass(frozen=True)
class CertifiedDrive(Message):
    """One drive's erasure record: what the agent reported, who operated, when the server recorded it."""

    erasure: DriveErasure
    operator: str | None = field(default=None, metadata=TEXT)
    recorded_at: str | None = field(default=None, metadata=rule(pattern=ISO_TIME))


@dataclass(frozen=True)
class ImagingVerification(Message):
    """The image written after the erasure and what the agent read back of it."""

    run: str = field(metadata=TEXT)
    image: str = field(metadata=TEXT)
    label: str = field(metadata=TEXT)  # the version label, YYYYMMDD-HHMMSS-<digest[:12]>
    root_digest: str = field(metadata=rule(pattern=r"[0-9a-f]{64}"))
    chunks: int = field(metadata=rule(ge=0))
    verified: int = field(metadata=rule(ge=0))
    read_back: Literal["ok", "failed"]
    complete: bool  # every chunk read back right: what a `done` run needs


@dataclass(frozen=True)
class HookResult(Message):
    name: str = field(metadata=TEXT)
    ok: bool
    exit_code: int | None = None
    place: str = field(default="target", metadata=TEXT)  # target | live | server


@dataclass(frozen=True)
class Certificate(Message):
    """One machine's certificate (``kind`` machine)."""

    id: str = field(metadata=rule(pattern=UUID))
    issued: str = field(metadata=rule(pattern=ISO_TIME))
    software: str = field(metadata=TEXT)  # "provision 0.1.0"
    workshop: Workshop
    machine: MachineSummary
    run: str = field(metadata=TEXT)  # the run whose erasure or imaging is stated
    drives: list[CertifiedDrive] = field(default_factory=list, metadata=rule(max_length=64))
    skipped: list[Skipped] = field(default_factory=list, metadata=rule(max_length=64))  # disks not erased, and why
    imaging: ImagingVerification | None = None
    hooks: list[HookResult] = field(default_factory=list, metadata=rule(max_length=256))
    lot: str | None = field(default=None, metadata=rule(max_length=128, clean_text=True))
    format: Literal["provision-certificate/1"] = FORMAT
    kind: Literal["machine"] = "machine"

    def __post_init__(self) -> None:
        if self.skipped and not self.drives:
            raise ValueError("disks skipped by an erasure that erased no drive")
        internal = [s.device for s in self.skipped if s.internal]
        if internal:
            raise ValueError(f"a certificate never states an incomplete erasure (internal drive {', '.join(internal)})")
        failed = [d.erasure.device for d in self.drives if not d.erasure.ok]
        if failed:
            raise ValueError(f"a certificate never states a failed erasure (drive {', '.join(failed)})")

    @property
    def erased(self) -> bool:
        """Every drive of the machine erased and verified (False: the certificate states no erasure)."""
        return bool(self.drives)

    @property
    def purged(self) -> bool:
        """Every drive erased to NIST Purge (else at least one is Clear)."""
        return self.erased and all(d.erasure.category == "purge" for d in self.drives)


@dataclass(frozen=True)
class BatchCertificate(Message):
    """A donor's delivery (``kind`` batch): the certificate of every machine of the lot."""

    id: str = field(metadata=rule(pattern=UUID))
    issued: str = field(metadata=rule(pattern=ISO_TIME))
    software: str = field(metadata=TEXT)
    workshop: Workshop
    lot: str = field(metadata=rule(min_length=1, max_length=128, clean_text=True))
    machines: list[Certificate] = field(metadata=rule(max_length=10_000))
    format: Literal["provision-certificate/1"] = FORMAT
    kind: Literal["batch"] = "batch"

    @property
    def drives(self) -> list[tuple[Certificate, CertifiedDrive]]:
        """Every drive of the delivery, with its machine, in machine order."""
        return [(m, d) for m in self.machines for d in m.drives]


AnyCertificate = Certificate | BatchCertificate


def certificate_from_dict(data: Any) -> AnyCertificate:
    """The certificate in a decoded JSON object, checked (InvalidPayload lists every problem)."""
    kind = data.get("kind") if isinstance(data, dict) else None
    return BatchCertificate.from_dict(data) if kind == "batch" else Certificate.from_dict(data)
