"""Read a probe folder (the files the live environment collected) into :class:`Facts`, and read ``Facts``
back from the JSON of :meth:`Facts.to_dict`.

A probe folder may hold any of::

    dmidecode.txt  lspci.txt  lsblk.json  meminfo[.txt]  cpuinfo[.txt]  firmware  mac
    smartctl*.json  smartctl*.txt   (one per disk, e.g. smartctl-sda.json)

Missing files are absent facts. A file that is present but cannot be read or understood becomes a line in
``Facts.warnings``, never a crash; only a folder that is not a directory, cannot be listed, or holds a file
larger than :data:`MAX_FILE_BYTES` raises :class:`ProbeError`.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from provision.errors import ProbeError
from provision.facts.dmidecode import parse_dmidecode
from provision.facts.lsblk import LsblkFormatError, parse_lsblk_strict
from provision.facts.lspci import parse_lspci
from provision.facts.model import (
    BiosInfo,
    BoardInfo,
    CpuInfo,
    Disk,
    DmiFacts,
    Facts,
    Firmware,
    MemInfo,
    MemoryDevice,
    PciDevice,
    SmartReport,
    SmartVerdict,
    SystemInfo,
)
from provision.facts.procfs import parse_cpuinfo, parse_meminfo
from provision.facts.smart import SmartFormatError, parse_smartctl_json_strict, parse_smartctl_text
from provision.wire import probe

log = logging.getLogger(__name__)

__all__ = ["MAX_FILE_BYTES", "facts_from_dict", "load_facts_json", "load_probe", "read_probe_file"]

MAX_FILE_BYTES = 16 * 1024 * 1024

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)


def read_probe_file(path: Path) -> str:
    """Text of one probe file: UTF-8, undecodable bytes replaced; over :data:`MAX_FILE_BYTES` is refused.

    Raises :class:`ProbeError` when the file is too large, :class:`OSError` when it cannot be read.
    """
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ProbeError(f"file larger than {MAX_FILE_BYTES} bytes refused", path=str(path))
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)  # the size may change between stat() and read()
    if len(data) > MAX_FILE_BYTES:
        raise ProbeError(f"file larger than {MAX_FILE_BYTES} bytes refused", path=str(path))
    text = data.decode("utf-8", errors="replace")
    if "\ufffd" in text and b"\xef\xbf\xbd" not in data:
        log.debug("%s: bytes that are not UTF-8 were replaced", path)
    return text


class _Reader:
    """Reads the files of one probe folder, remembering which were read and what went wrong."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sources: list[str] = []
        self.warnings: list[str] = []

    def warn(self, name: str, message: str) -> None:
        log.warning("probe %s: %s: %s", self.folder, name, message)
        self.warnings.append(f"{name}: {message}")

    def text(self, *names: str) -> tuple[str, str] | None:
        """(name, text) of the first existing file among ``names``; ``None`` if none exists or is readable."""
        for name in names:
            path = self.folder / name
            if not path.exists() and not path.is_symlink():
                continue
            if not path.is_file():
                self.warn(name, "not a regular file, skipped")
                return None
            try:
                text = read_probe_file(path)
            except OSError as exc:
                self.warn(name, f"cannot be read ({exc.strerror or exc})")
                return None
            self.sources.append(name)
            return name, text
        return None

    def parse(self, parser: Callable[[str], _T], *names: str) -> _T | None:
        found = self.text(*names)
        if found is None:
            return None
        name, text = found
        try:
            return parser(text)
        except (LsblkFormatError, SmartFormatError) as exc:
            self.warn(name, str(exc))
            return None


def _firmware(text: str) -> Firmware:
    value = text.strip().lower()
    return Firmware(value) if value in (Firmware.UEFI, Firmware.BIOS) else Firmware.UNKNOWN


def _smart(reader: _Reader) -> tuple[SmartReport, ...]:
    try:
        names = sorted(p.name for p in reader.folder.iterdir() if probe.is_smartctl_name(p.name))
    except OSError as exc:
        reader.warn("smartctl*", f"folder cannot be listed ({exc.strerror or exc})")
        return ()
    reports = []
    for name in names:
        parser = parse_smartctl_json_strict if name.endswith(".json") else parse_smartctl_text
        report = reader.parse(parser, name)
        if report is not None:
            reports.append(report)
    return tuple(reports)


def load_probe(path: Path) -> Facts:
    """Facts of one machine from a probe folder; see the module docstring for the files read."""
    if not path.is_dir():
        raise ProbeError("probe path is not a directory", path=str(path))
    try:
        next(path.iterdir(), None)
    except OSError as exc:
        raise ProbeError(f"probe folder cannot be listed ({exc.strerror or exc})", path=str(path)) from exc
    reader = _Reader(path)
    dmi = reader.parse(parse_dmidecode, probe.DMIDECODE)
    pci = reader.parse(parse_lspci, probe.LSPCI)
    disks = reader.parse(parse_lsblk_strict, probe.LSBLK)
    meminfo = reader.parse(parse_meminfo, probe.MEMINFO, f"{probe.MEMINFO}.txt")
    cpu = reader.parse(parse_cpuinfo, probe.CPUINFO, f"{probe.CPUINFO}.txt")
    firmware = reader.parse(_firmware, probe.FIRMWARE)
    mac = reader.parse(str.strip, probe.MAC)
    smart = _smart(reader)
    return Facts(
        mac=mac or None,
        firmware=firmware or Firmware.UNKNOWN,
        dmi=dmi or DmiFacts(),
        pci=pci or (),
        disks=disks or (),
        smart=smart,
        cpu=cpu or CpuInfo(),
        meminfo=meminfo or MemInfo(),
        sources=tuple(reader.sources),
        warnings=tuple(reader.warnings),
    )


# ---------------------------------------------------------------------------------------------------------
# Facts.to_dict() -> Facts (tolerates missing keys and values of the wrong type: they become "unknown")


def _d(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _s(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _i(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _b(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    return value if isinstance(value, bool) else None


def _strs(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _dicts(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _memory(d: dict[str, Any]) -> MemoryDevice | None:
    size = _i(d, "size_mb")
    if size is None:
        return None
    return MemoryDevice(locator=_s(d, "locator"), size_mb=size, form_factor=_s(d, "form_factor"), type=_s(d, "type"))


def _dmi(d: dict[str, Any]) -> DmiFacts:
    system, board, bios = _d(d, "system"), _d(d, "board"), _d(d, "bios")
    return DmiFacts(
        smbios_version=_s(d, "smbios_version"),
        system=SystemInfo(
            vendor=_s(system, "vendor"),
            product=_s(system, "product"),
            version=_s(system, "version"),
            family=_s(system, "family"),
            serial=_s(system, "serial"),
            sku=_s(system, "sku"),
            uuid=_s(system, "uuid"),
        ),
        board=BoardInfo(vendor=_s(board, "vendor"), product=_s(board, "product"), version=_s(board, "version")),
        bios=BiosInfo(
            vendor=_s(bios, "vendor"),
            version=_s(bios, "version"),
            date=_s(bios, "date"),
            uefi_supported=_b(bios, "uefi_supported"),
        ),
        chassis_type=_s(d, "chassis_type"),
        cpu_version=_s(d, "cpu_version"),
        cpu_family=_s(d, "cpu_family"),
        cpu_cores=_i(d, "cpu_cores"),
        cpu_threads=_i(d, "cpu_threads"),
        memory=tuple(m for m in map(_memory, _dicts(d, "memory")) if m is not None),
    )


def _pci(d: dict[str, Any]) -> PciDevice | None:
    slot = _s(d, "slot")
    if slot is None:
        return None
    return PciDevice(
        slot=slot,
        class_code=_s(d, "class_code"),
        class_name=_s(d, "class_name"),
        vendor_id=_s(d, "vendor_id"),
        device_id=_s(d, "device_id"),
        description=_s(d, "description"),
        subsystem=_s(d, "subsystem"),
        driver=_s(d, "driver"),
        modules=_strs(d, "modules"),
    )


def _disk(d: dict[str, Any]) -> Disk | None:
    name = _s(d, "name")
    if name is None:
        return None
    return Disk(
        name=name,
        size_bytes=_i(d, "size_bytes"),
        rotational=_b(d, "rotational"),
        transport=_s(d, "transport"),
        removable=_b(d, "removable"),
        model=_s(d, "model"),
        serial=_s(d, "serial"),
        logical_sector=_i(d, "logical_sector"),
        physical_sector=_i(d, "physical_sector"),
        mounted=_strs(d, "mounted"),
    )


def _enum(enum_type: type[_E], value: Any, default: _E) -> _E:
    try:
        return enum_type(value)
    except ValueError:
        return default


def _smart_report(d: dict[str, Any]) -> SmartReport:
    return SmartReport(
        device=_s(d, "device"),
        model=_s(d, "model"),
        serial=_s(d, "serial"),
        protocol=_s(d, "protocol"),
        verdict=_enum(SmartVerdict, d.get("verdict"), SmartVerdict.UNKNOWN),
        reallocated_sectors=_i(d, "reallocated_sectors"),
        pending_sectors=_i(d, "pending_sectors"),
        offline_uncorrectable=_i(d, "offline_uncorrectable"),
        reported_uncorrect=_i(d, "reported_uncorrect"),
        crc_errors=_i(d, "crc_errors"),
        media_errors=_i(d, "media_errors"),
        percentage_used=_i(d, "percentage_used"),
        power_on_hours=_i(d, "power_on_hours"),
    )


def facts_from_dict(data: dict[str, Any]) -> Facts:
    """The inverse of :meth:`Facts.to_dict`; missing keys and values of the wrong type become unknown."""
    untrusted: object = data  # callers may pass whatever a JSON document held
    if not isinstance(untrusted, dict):
        return Facts()
    cpu, meminfo = _d(data, "cpu"), _d(data, "meminfo")
    return Facts(
        mac=_s(data, "mac"),
        firmware=_enum(Firmware, data.get("firmware"), Firmware.UNKNOWN),
        dmi=_dmi(_d(data, "dmi")),
        pci=tuple(p for p in map(_pci, _dicts(data, "pci")) if p is not None),
        disks=tuple(d for d in map(_disk, _dicts(data, "disks")) if d is not None),
        smart=tuple(_smart_report(r) for r in _dicts(data, "smart")),
        cpu=CpuInfo(
            model=_s(cpu, "model"),
            sockets=_i(cpu, "sockets"),
            cores=_i(cpu, "cores"),
            threads=_i(cpu, "threads"),
            flags=_strs(cpu, "flags"),
        ),
        meminfo=MemInfo(total_kb=_i(meminfo, "total_kb")),
        sources=_strs(data, "sources"),
        warnings=_strs(data, "warnings"),
    )


def load_facts_json(path: Path) -> Facts:
    """Facts from a JSON file written from :meth:`Facts.to_dict`.

    Raises :class:`ProbeError` when the file cannot be read, is too large, or is not a JSON object.
    """
    try:
        text = read_probe_file(path)
    except OSError as exc:
        raise ProbeError(f"cannot be read ({exc.strerror or exc})", path=str(path)) from exc
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProbeError(f"not valid JSON: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise ProbeError("not a JSON object", path=str(path))
    return facts_from_dict(data)
