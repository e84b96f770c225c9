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

A value holding a newline could add lines that look like dmidecode's own (real dmidecode prints none: it
replaces control characters in SMBIOS strings with dots). Such lines must not win over the real ones, so
what the text states twice is unknown, a rule no real dump trips (31 real dumps: the only keys repeated in
a block are those of type 10, On Board Devices, which is not read):

- a key stated twice with different values in one structure is unknown (neither the first nor the last);
- a second BIOS (type 0) or system (type 1) structure, of which SMBIOS allows one, makes that one unknown;
- more structures than the header declares (``89 structures occupying 3466 bytes.``: exact in every real
  dump that prints it) means structures were added: the whole table is unknown.

Boards (2) and chassis (3) may be several: the first counts, as before.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from provision.facts.model import BiosInfo, BoardInfo, DmiFacts, MemoryDevice, SystemInfo, fact_int

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

_HANDLE_RE = re.compile(r"^Handle\s+0x[0-9A-Fa-f]+,\s*DMI type\s+(\d{1,3})\b")
_COUNT_RE = re.compile(r"^(\d{1,6}) structures occupying \d+ bytes\.")
_SMBIOS_RE = re.compile(r"^SMBIOS\s+(\d+(?:\.\d+){1,2})\s+present\b")
_SIZE_RE = re.compile(r"^(\d{1,15})\s*(bytes|kB|KB|MB|GB|TB)$")
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
    """One SMBIOS structure: its type, title, ``Key: Value`` pairs and list values; a key stated twice
    differently is ``ambiguous`` (unknown)."""

    dmi_type: int
    title: str = ""
    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)

    def raw(self, key: str) -> str | None:
        return None if key in self.ambiguous else self.values.get(key)

    def get(self, key: str) -> str | None:
        return clean_value(self.raw(key))

    def items(self, key: str) -> list[str]:
        return [] if key in self.ambiguous else self.lists.get(key, [])

    def add(self, key: str, value: str) -> None:
        if key in self.values and (self.values[key].strip() != value.strip() or key in self.lists):
            self.ambiguous.add(key)
        self.values.setdefault(key, value)


@dataclass
class _Table:
    smbios: str | None = None
    declared: int | None = None  # "N structures occupying M bytes."
    blocks: list[_Block] = field(default_factory=list)


def _split_blocks(text: str) -> _Table:
    table = _Table()
    blocks = table.blocks
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
            if table.smbios is None and (version := _SMBIOS_RE.match(stripped)):
                table.smbios = version.group(1)
                continue
            if not blocks and table.declared is None and (count := _COUNT_RE.match(stripped)):
                table.declared = int(count.group(1))
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
        current.add(key, value)
        if value.strip():
            list_key = None
        else:
            list_key = key
            current.lists.setdefault(key, [])
    return table


def _first(blocks: list[_Block], dmi_type: int) -> _Block | None:
    return next((b for b in blocks if b.dmi_type == dmi_type), None)


def _only(blocks: list[_Block], dmi_type: int) -> _Block | None:
    """The structure of a type SMBIOS allows once; a second one makes it unknown."""
    found = [b for b in blocks if b.dmi_type == dmi_type]
    if len(found) > 1:
        log.warning("dmidecode: %d structures of type %d, which SMBIOS allows once: unknown", len(found), dmi_type)
        return None
    return found[0] if found else None


def _positive_int(value: str | None) -> int | None:
    if value is None:
        return None
    return fact_int(value) or None


def _bios(block: _Block | None) -> BiosInfo:
    if block is None:
        return BiosInfo()
    uefi: bool | None = None
    characteristics = [c.strip().casefold() for c in block.items("Characteristics")]
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
        status = (block.raw("Status") or "").strip().casefold()
        if status.startswith("unpopulated"):
            continue
        if (block.raw("Type") or "").strip().casefold() in _NOT_CPU_TYPES:
            continue
        cpus.append(block)
    return cpus


def _sum_counts(cpus: list[_Block], key: str) -> int | None:
    """Sum of a count over all populated sockets; unknown if any socket does not report it."""
    counts = [_positive_int(cpu.raw(key)) for cpu in cpus]
    if not counts or any(c is None for c in counts):
        return None
    return fact_int(sum(c for c in counts if c is not None))


def memory_size_mb(value: str | None) -> int | None:
    """``"2048 MB"`` -> 2048, ``"8 GB"`` -> 8192; "No Module Installed", "Unknown", garbage -> ``None``."""
    if value is None:
        return None
    match = _SIZE_RE.match(value.strip())
    if not match:
        return None
    return fact_int(int(int(match.group(1)) * _SIZE_FACTOR_MB[match.group(2)])) or None


def _memory(blocks: list[_Block]) -> tuple[MemoryDevice, ...]:
    devices = []
    for block in blocks:
        if block.dmi_type != 17:
            continue
        size = memory_size_mb(block.raw("Size"))
        if size is None:
            continue
        if size < MIN_RAM_DEVICE_MB:
            log.debug("memory device %r of %d MB is not RAM: skipped", block.raw("Locator"), size)
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
    table = _split_blocks(text)
    blocks = table.blocks
    if not blocks:
        log.debug("no DMI structure found in %d characters of dmidecode output", len(text))
    if table.declared is not None and len(blocks) > table.declared:
        log.warning("dmidecode: %d structures where the table declares %d: unknown", len(blocks), table.declared)
        return DmiFacts(smbios_version=table.smbios)
    chassis = _first(blocks, 3)
    cpus = _populated_cpus(blocks)
    return DmiFacts(
        smbios_version=table.smbios,
        system=_system(_only(blocks, 1)),
        board=_board(_first(blocks, 2)),
        bios=_bios(_only(blocks, 0)),
        chassis_type=chassis.get("Type") if chassis else None,
        cpu_version=next((v for c in cpus if (v := c.get("Version"))), None),
        cpu_family=next((f for c in cpus if (f := c.get("Family"))), None),
        cpu_cores=_sum_counts(cpus, "Core Count"),
        cpu_threads=_sum_counts(cpus, "Thread Count"),
        memory=_memory(blocks),
    )
