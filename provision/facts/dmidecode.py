"""Parse the text output of ``dmidecode`` (3.x) into :class:`DmiFacts`.

The output is a header (``# dmidecode 3.3``, ``SMBIOS 2.7 present.`` ...) followed by one block per SMBIOS
structure::

    Handle 0x0000, DMI type 0, 24 bytes
    BIOS Information
    \tVendor: Dell Inc.
    \tCharacteristics:
    \t\tPCI is supported

Only a few structure types are read (0 BIOS, 1 system, 2 board, 3 chassis, 4 processor, 17 memory device);
everything else is ignored. Firmware placeholders ("Not Specified", "To Be Filled By O.E.M.", the ``--`` of
masked serial numbers ...) become ``None``. Anything that does not look like dmidecode output gives empty
facts, never an exception.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from provision.facts.model import BiosInfo, BoardInfo, DmiFacts, MemoryDevice, SystemInfo

log = logging.getLogger(__name__)

__all__ = ["PLACEHOLDERS", "clean_value", "parse_dmidecode"]

#: Values firmware vendors leave in unfilled SMBIOS strings (compared case-insensitively, after strip).
PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "",
        "--",  # masked by the publisher of the probe (serials, UUIDs, asset tags)
        "0123456789",
        "default string",
        "n/a",
        "none",
        "not applicable",
        "not available",
        "not present",
        "not provided",
        "not settable",
        "not specified",
        "system manufacturer",
        "system product name",
        "system serial number",
        "system version",
        "to be filled by o.e.m.",
        "to be filled by o.e.m",
        "unknown",
        "<bad index>",
        "<out of spec>",
    }
)

#: Memory devices smaller than this are not RAM (the HP Compaq 8000 lists a 4 MB flash "Chip").
MIN_RAM_DEVICE_MB = 256

_HANDLE_RE = re.compile(r"^Handle\s+0x[0-9A-Fa-f]+,\s*DMI type\s+(\d+)\b")
_SMBIOS_RE = re.compile(r"^SMBIOS\s+(\d+(?:\.\d+){1,2})\s+present\b")
_SIZE_RE = re.compile(r"^(\d+)\s*(bytes|kB|KB|MB|GB|TB)$")
_SIZE_FACTOR_MB: dict[str, float] = {
    "bytes": 1 / (1024 * 1024),
    "kB": 1 / 1024,
    "KB": 1 / 1024,
    "MB": 1,
    "GB": 1024,
    "TB": 1024 * 1024,
}
_NOT_CPU_TYPES = frozenset({"math processor", "dsp processor", "video processor"})


def clean_value(value: str | None) -> str | None:
    """Strip surrounding whitespace; firmware placeholders become ``None``. Other text is kept unchanged."""
    if value is None:
        return None
    stripped = value.strip()
    if stripped.casefold() in PLACEHOLDERS:
        return None
    return stripped


@dataclass
class _Block:
    """One SMBIOS structure: its type, title, ``Key: Value`` pairs (first wins) and list values."""

    dmi_type: int
    title: str = ""
    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return clean_value(self.values.get(key))


def _split_blocks(text: str) -> tuple[str | None, list[_Block]]:
    smbios: str | None = None
    blocks: list[_Block] = []
    current: _Block | None = None
    title_pending = False
    key_indent: int | None = None  # indentation of the block's "Key: Value" lines
    list_key: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped:
            continue
        indent = len(line) - len(stripped)
        if indent == 0:
            handle = _HANDLE_RE.match(stripped)
            if handle:
                current = _Block(dmi_type=int(handle.group(1)))
                blocks.append(current)
                title_pending, key_indent, list_key = True, None, None
                continue
            if smbios is None and (version := _SMBIOS_RE.match(stripped)):
                smbios = version.group(1)
                continue
            if current is not None and title_pending:
                current.title = stripped
                title_pending = False
                continue
            current = None  # an unknown top-level line ends the block
            continue
        if current is None:
            continue
        title_pending = False
        if key_indent is None:
            key_indent = indent
        if indent > key_indent:
            if list_key is not None:
                current.lists[list_key].append(stripped)
            continue
        key, sep, value = stripped.partition(":")
        if not sep:
            list_key = None  # e.g. an OEM string line without a key
            continue
        key = key.strip()
        if value.strip():
            current.values.setdefault(key, value)
            list_key = None
        else:
            current.values.setdefault(key, "")
            list_key = key
            current.lists.setdefault(key, [])
    return smbios, blocks


def _first(blocks: list[_Block], dmi_type: int) -> _Block | None:
    return next((b for b in blocks if b.dmi_type == dmi_type), None)


def _positive_int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdecimal():
        return None
    number = int(value)
    return number if number > 0 else None


def _bios(block: _Block | None) -> BiosInfo:
    if block is None:
        return BiosInfo()
    uefi: bool | None = None
    characteristics = [c.strip().casefold() for c in block.lists.get("Characteristics", [])]
    if characteristics and characteristics != ["bios characteristics not supported"]:
        uefi = "uefi is supported" in characteristics
    return BiosInfo(
        vendor=block.get("Vendor"),
        version=block.get("Version"),
        date=block.get("Release Date"),
        uefi_supported=uefi,
    )


def _system(block: _Block | None) -> SystemInfo:
    if block is None:
        return SystemInfo()
    return SystemInfo(
        vendor=block.get("Manufacturer"),
        product=block.get("Product Name"),
        version=block.get("Version"),
        family=block.get("Family"),
        serial=block.get("Serial Number"),
        sku=block.get("SKU Number"),
        uuid=block.get("UUID"),
    )


def _board(block: _Block | None) -> BoardInfo:
    if block is None:
        return BoardInfo()
    return BoardInfo(
        vendor=block.get("Manufacturer"),
        product=block.get("Product Name"),
        version=block.get("Version"),
    )


def _populated_cpus(blocks: list[_Block]) -> list[_Block]:
    cpus = []
    for block in blocks:
        if block.dmi_type != 4:
            continue
        status = (block.values.get("Status") or "").strip().casefold()
        if status.startswith("unpopulated"):
            continue
        if (block.values.get("Type") or "").strip().casefold() in _NOT_CPU_TYPES:
            continue
        cpus.append(block)
    return cpus


def _sum_counts(cpus: list[_Block], key: str) -> int | None:
    """Sum of a count over all populated sockets; unknown if any socket does not report it."""
    counts = [_positive_int(cpu.values.get(key)) for cpu in cpus]
    if not counts or any(c is None for c in counts):
        return None
    return sum(c for c in counts if c is not None)


def memory_size_mb(value: str | None) -> int | None:
    """``"2048 MB"`` -> 2048, ``"8 GB"`` -> 8192; "No Module Installed", "Unknown", garbage -> ``None``."""
    if value is None:
        return None
    match = _SIZE_RE.match(value.strip())
    if not match:
        return None
    size = int(int(match.group(1)) * _SIZE_FACTOR_MB[match.group(2)])
    return size if size > 0 else None


def _memory(blocks: list[_Block]) -> tuple[MemoryDevice, ...]:
    devices = []
    for block in blocks:
        if block.dmi_type != 17:
            continue
        size = memory_size_mb(block.values.get("Size"))
        if size is None:
            continue
        if size < MIN_RAM_DEVICE_MB:
            log.debug("memory device %r of %d MB is not RAM: skipped", block.values.get("Locator"), size)
            continue
        devices.append(
            MemoryDevice(
                locator=block.get("Locator"),
                size_mb=size,
                form_factor=block.get("Form Factor"),
                type=block.get("Type"),
            )
        )
    return tuple(devices)


def parse_dmidecode(text: str) -> DmiFacts:
    """Typed facts from the full text output of ``dmidecode``; unknown or missing parts are ``None``."""
    smbios, blocks = _split_blocks(text)
    if not blocks:
        log.debug("no DMI structure found in %d characters of dmidecode output", len(text))
    chassis = _first(blocks, 3)
    cpus = _populated_cpus(blocks)
    return DmiFacts(
        smbios_version=smbios,
        system=_system(_first(blocks, 1)),
        board=_board(_first(blocks, 2)),
        bios=_bios(_first(blocks, 0)),
        chassis_type=chassis.get("Type") if chassis else None,
        cpu_version=next((v for c in cpus if (v := c.get("Version"))), None),
        cpu_family=next((f for c in cpus if (f := c.get("Family"))), None),
        cpu_cores=_sum_counts(cpus, "Core Count"),
        cpu_threads=_sum_counts(cpus, "Thread Count"),
        memory=_memory(blocks),
    )
