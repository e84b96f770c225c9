"""Typed hardware facts of one machine, and the parsers that read them from probe outputs.

Parsers never raise on unknown, truncated or hostile input: what cannot be read is ``None`` ("unknown").
"""

from __future__ import annotations

from provision.facts.dmidecode import parse_dmidecode
from provision.facts.lsblk import parse_lsblk
from provision.facts.lspci import parse_lspci
from provision.facts.model import (
    UNKNOWN,
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
from provision.facts.probe import facts_from_dict, load_facts_json, load_probe
from provision.facts.procfs import parse_cpuinfo, parse_meminfo
from provision.facts.shape import FactsInvalid
from provision.facts.smart import parse_smartctl_json, parse_smartctl_text

__all__ = [
    "UNKNOWN",
    "BiosInfo",
    "BoardInfo",
    "CpuInfo",
    "Disk",
    "DmiFacts",
    "Facts",
    "FactsInvalid",
    "Firmware",
    "MemInfo",
    "MemoryDevice",
    "PciDevice",
    "SmartReport",
    "SmartVerdict",
    "SystemInfo",
    "facts_from_dict",
    "load_facts_json",
    "load_probe",
    "parse_cpuinfo",
    "parse_dmidecode",
    "parse_lsblk",
    "parse_lspci",
    "parse_meminfo",
    "parse_smartctl_json",
    "parse_smartctl_text",
]
