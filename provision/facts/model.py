"""Typed hardware facts of one machine.

Every field that could not be read is ``None`` (shown as "unknown"), never a guess. Strings from probes are
carried as data: they may hold any character and any length, and nothing here interprets them.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from provision.wire.probe import Disk as Disk  # the one lsblk reader's type

UNKNOWN = "unknown"

#: The largest number a fact holds: what a probe can honestly report and SQLite can store. A parser reads a
#: larger (or negative) number as unknown; provision.facts.shape refuses one.
MAX_FACT_INT = (1 << 63) - 1


def fact_int(value: object) -> int | None:
    """A whole number 0..MAX_FACT_INT from an int or a string of digits; anything else is ``None``.

    Never raises: a 5,000-digit string (which ``int()`` refuses) is unknown too."""
    if isinstance(value, str):
        value = value.strip()
        if not value.isdecimal() or len(value) > len(str(MAX_FACT_INT)):
            return None
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_FACT_INT else None


class Firmware(enum.StrEnum):
    """How the machine booted the live environment (``/sys/firmware/efi`` present or not)."""

    UEFI = "uefi"
    BIOS = "bios"
    UNKNOWN = "unknown"


class SmartVerdict(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SystemInfo:
    vendor: str | None = None
    product: str | None = None
    version: str | None = None
    family: str | None = None
    serial: str | None = None
    sku: str | None = None
    uuid: str | None = None


@dataclass(frozen=True)
class BoardInfo:
    vendor: str | None = None
    product: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class BiosInfo:
    vendor: str | None = None
    version: str | None = None
    date: str | None = None
    uefi_supported: bool | None = None


@dataclass(frozen=True)
class MemoryDevice:
    locator: str | None
    size_mb: int
    form_factor: str | None
    type: str | None


@dataclass(frozen=True)
class DmiFacts:
    smbios_version: str | None = None
    system: SystemInfo = field(default_factory=SystemInfo)
    board: BoardInfo = field(default_factory=BoardInfo)
    bios: BiosInfo = field(default_factory=BiosInfo)
    chassis_type: str | None = None
    cpu_version: str | None = None
    cpu_family: str | None = None
    cpu_cores: int | None = None
    cpu_threads: int | None = None
    memory: tuple[MemoryDevice, ...] = ()

    @property
    def ram_installed_mb(self) -> int | None:
        total = sum(m.size_mb for m in self.memory)
        return total or None


@dataclass(frozen=True)
class PciDevice:
    slot: str
    class_code: str | None  # "0200"
    class_name: str | None  # "Ethernet controller"
    vendor_id: str | None  # "8086"
    device_id: str | None  # "10de"
    description: str | None  # "Intel Corporation 82567LM-3 Gigabit Network Connection"
    subsystem: str | None = None  # "1028:0446"
    driver: str | None = None
    modules: tuple[str, ...] = ()

    @property
    def pci_id(self) -> str | None:
        if self.vendor_id and self.device_id:
            return f"{self.vendor_id}:{self.device_id}"
        return None


@dataclass(frozen=True)
class SmartReport:
    device: str | None = None
    model: str | None = None
    serial: str | None = None
    protocol: str | None = None  # ATA, NVMe, SCSI
    verdict: SmartVerdict = SmartVerdict.UNKNOWN
    reallocated_sectors: int | None = None
    pending_sectors: int | None = None
    offline_uncorrectable: int | None = None
    reported_uncorrect: int | None = None
    crc_errors: int | None = None
    media_errors: int | None = None
    percentage_used: int | None = None
    power_on_hours: int | None = None


@dataclass(frozen=True)
class CpuInfo:
    model: str | None = None
    sockets: int | None = None
    cores: int | None = None  # physical cores, all sockets
    threads: int | None = None  # logical CPUs
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemInfo:
    total_kb: int | None = None


@dataclass(frozen=True)
class Facts:
    """Everything known about one machine, from one probe."""

    mac: str | None = None
    firmware: Firmware = Firmware.UNKNOWN
    dmi: DmiFacts = field(default_factory=DmiFacts)
    pci: tuple[PciDevice, ...] = ()
    disks: tuple[Disk, ...] = ()
    smart: tuple[SmartReport, ...] = ()
    cpu: CpuInfo = field(default_factory=CpuInfo)
    meminfo: MemInfo = field(default_factory=MemInfo)
    sources: tuple[str, ...] = ()  # which probe files were read
    warnings: tuple[str, ...] = ()  # probe files that were present but unreadable or not understood

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(dataclasses.asdict(self))
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value
