"""The flat fact names that recipes match on and templates render with.

This is the recipe vocabulary: ``vendor``, ``model``, ``ram_mb`` ... Each value is a string, a number, a bool,
a list of strings, or ``None`` when unknown. Documented in docs/recipes.md; keep both in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from provision.facts.model import Facts, SmartReport, SmartVerdict

FactValue = str | int | bool | list[str] | None

# DMI chassis types (SMBIOS 7.4.1) grouped into the form factors a workshop sorts by.
_LAPTOP = {
    "portable",
    "laptop",
    "notebook",
    "hand held",
    "sub notebook",
    "convertible",
    "detachable",
    "tablet",
}
_MINI = {"mini pc", "stick pc", "compact pci", "lunch box"}
_TOWER = {"tower", "mini tower"}
_DESKTOP = {
    "desktop",
    "low profile desktop",
    "space-saving",
    "pizza box",
    "all in one",
    "main server chassis",
}

_MAKERS = (
    ("dell", "dell"),
    ("hewlett", "hp"),
    ("hp", "hp"),
    ("lenovo", "lenovo"),
    ("fujitsu", "fujitsu"),
    ("acer", "acer"),
    ("asus", "asus"),
    ("toshiba", "toshiba"),
    ("qemu", "qemu"),
)

# Lenovo puts the machine type ("6258D2G", "10AXA204FR") in Product Name and the model in Version.
_LENOVO_TYPE = re.compile(r"^[0-9A-Z]{7,10}$")


@dataclass(frozen=True)
class FactDoc:
    name: str
    kind: str  # "str", "int", "bool", "list"
    doc: str


FACT_DOCS: tuple[FactDoc, ...] = (
    FactDoc("mac", "str", "MAC address of the booting NIC (aa:bb:cc:dd:ee:ff)"),
    FactDoc("vendor", "str", 'DMI system manufacturer as reported ("Dell Inc.", "LENOVO")'),
    FactDoc("maker", "str", "normalised maker: dell, hp, lenovo, fujitsu, ... or the vendor in lower case"),
    FactDoc("product", "str", "DMI product name (Lenovo: the machine type, e.g. 6258D2G)"),
    FactDoc("model", "str", 'human model name: DMI version for Lenovo ("ThinkCentre M58"), else product'),
    FactDoc("family", "str", "DMI system family"),
    FactDoc("version", "str", "DMI system version"),
    FactDoc("serial", "str", "DMI system serial number"),
    FactDoc("sku", "str", "DMI SKU number"),
    FactDoc("board_vendor", "str", "base board manufacturer"),
    FactDoc("board_product", "str", "base board product"),
    FactDoc("bios_vendor", "str", "BIOS vendor"),
    FactDoc("bios_version", "str", "BIOS version"),
    FactDoc("bios_date", "str", "BIOS release date as ISO yyyy-mm-dd"),
    FactDoc("bios_year", "int", "year of the BIOS release date"),
    FactDoc("smbios_version", "str", 'SMBIOS version ("2.7")'),
    FactDoc("chassis", "str", 'DMI chassis type ("Low Profile Desktop", "Notebook")'),
    FactDoc("form_factor", "str", "laptop, desktop, tower, mini or unknown (from the chassis type)"),
    FactDoc("uefi_capable", "bool", 'DMI says "UEFI is supported"'),
    FactDoc("firmware", "str", "how the live environment was booted: uefi, bios or unknown"),
    FactDoc("ram_mb", "int", "installed RAM in MiB (DMI modules; else /proc/meminfo rounded up to 256 MiB)"),
    FactDoc("cpu_model", "str", "CPU model name"),
    FactDoc("cpu_cores", "int", "physical CPU cores"),
    FactDoc("cpu_threads", "int", "logical CPUs"),
    FactDoc("disk_count", "int", "internal disks (not removable, not USB)"),
    FactDoc("disk_gb", "int", "size of the largest internal disk in GB (10^9 bytes)"),
    FactDoc("disk_transport", "list", "transports of the internal disks (sata, nvme, virtio, ...)"),
    FactDoc("disk_rotational", "bool", "at least one internal disk is rotational"),
    FactDoc("pci_ids", "list", 'PCI vendor:device ids present ("8086:10de")'),
    FactDoc("pci_drivers", "list", "kernel drivers bound to PCI devices"),
    FactDoc("nic_drivers", "list", "kernel drivers of Ethernet controllers"),
    FactDoc("smart_verdict", "str", "worst SMART verdict of all disks: failed, passed or unknown"),
    FactDoc("smart_reallocated", "int", "largest reallocated sector count of all disks"),
    FactDoc("smart_pending", "int", "largest pending sector count of all disks"),
    FactDoc("smart_media_errors", "int", "largest NVMe media error count of all disks"),
    FactDoc("smart_crc_errors", "int", "largest UDMA CRC error count (cabling) of all disks"),
    FactDoc("smart_power_on_hours", "int", "largest power-on hours of all disks"),
)

FACT_NAMES: frozenset[str] = frozenset(d.name for d in FACT_DOCS)
FACT_KINDS: dict[str, str] = {d.name: d.kind for d in FACT_DOCS}


def maker_of(vendor: str | None) -> str | None:
    if vendor is None:
        return None
    low = vendor.lower()
    for needle, maker in _MAKERS:
        if low.startswith(needle):
            return maker
    return low.split()[0] if low.split() else None


def form_factor_of(chassis: str | None) -> str:
    if chassis is None:
        return "unknown"
    low = chassis.lower()
    for group, name in ((_LAPTOP, "laptop"), (_MINI, "mini"), (_TOWER, "tower"), (_DESKTOP, "desktop")):
        if low in group:
            return name
    return "unknown"


def iso_date(date: str | None) -> str | None:
    """DMI dates are mm/dd/yyyy (sometimes yy); give yyyy-mm-dd, or None."""
    if date is None:
        return None
    m = re.fullmatch(r"\s*(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})\s*", date)
    if not m:
        return None
    month, day, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if year < 100:
        year += 1900 if year >= 80 else 2000
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{year:04d}-{month:02d}-{day:02d}"


def _max(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _smart_verdict(reports: tuple[SmartReport, ...]) -> str:
    verdicts = {r.verdict for r in reports}
    if SmartVerdict.FAILED in verdicts:
        return "failed"
    if SmartVerdict.PASSED in verdicts:
        return "passed"
    return "unknown"


def _model(vendor: str | None, product: str | None, version: str | None) -> str | None:
    if maker_of(vendor) == "lenovo" and version and (product is None or _LENOVO_TYPE.match(product)):
        return version
    return product


def _ram_mb(facts: Facts) -> int | None:
    installed = facts.dmi.ram_installed_mb
    if installed:
        return installed
    if facts.meminfo.total_kb:
        # MemTotal is installed RAM less what firmware and kernel reserve: round up to 256 MiB.
        mib = facts.meminfo.total_kb / 1024
        return int(-(-mib // 256) * 256)
    return None


def derive(facts: Facts) -> dict[str, FactValue]:
    """Flatten typed facts into the recipe vocabulary (see FACT_DOCS)."""
    dmi = facts.dmi
    sysinfo = dmi.system
    internal = [d for d in facts.disks if d.internal]
    sizes = [d.size_bytes for d in internal if d.size_bytes is not None]
    bios_date = iso_date(dmi.bios.date)
    nics = [p.driver for p in facts.pci if p.class_code == "0200" and p.driver]
    have_disks = "lsblk.json" in facts.sources or bool(facts.disks)
    out: dict[str, FactValue] = {
        "mac": facts.mac,
        "vendor": sysinfo.vendor,
        "maker": maker_of(sysinfo.vendor),
        "product": sysinfo.product,
        "model": _model(sysinfo.vendor, sysinfo.product, sysinfo.version),
        "family": sysinfo.family,
        "version": sysinfo.version,
        "serial": sysinfo.serial,
        "sku": sysinfo.sku,
        "board_vendor": dmi.board.vendor,
        "board_product": dmi.board.product,
        "bios_vendor": dmi.bios.vendor,
        "bios_version": dmi.bios.version,
        "bios_date": bios_date,
        "bios_year": int(bios_date[:4]) if bios_date else None,
        "smbios_version": dmi.smbios_version,
        "chassis": dmi.chassis_type,
        "form_factor": form_factor_of(dmi.chassis_type),
        "uefi_capable": dmi.bios.uefi_supported,
        "firmware": facts.firmware.value,
        "ram_mb": _ram_mb(facts),
        "cpu_model": facts.cpu.model or dmi.cpu_version,
        "cpu_cores": facts.cpu.cores or dmi.cpu_cores,
        "cpu_threads": facts.cpu.threads or dmi.cpu_threads,
        "disk_count": len(internal) if have_disks else None,
        "disk_gb": max(sizes) // 10**9 if sizes else None,
        "disk_transport": sorted({d.transport for d in internal if d.transport}),
        "disk_rotational": any(d.rotational for d in internal) if internal else None,
        "pci_ids": sorted({p.pci_id for p in facts.pci if p.pci_id}),
        "pci_drivers": sorted({p.driver for p in facts.pci if p.driver}),
        "nic_drivers": sorted(set(nics)),
        "smart_verdict": _smart_verdict(facts.smart),
        "smart_reallocated": _max([r.reallocated_sectors for r in facts.smart]),
        "smart_pending": _max([r.pending_sectors for r in facts.smart]),
        "smart_media_errors": _max([r.media_errors for r in facts.smart]),
        "smart_crc_errors": _max([r.crc_errors for r in facts.smart]),
        "smart_power_on_hours": _max([r.power_on_hours for r in facts.smart]),
    }
    assert set(out) == FACT_NAMES, set(out) ^ FACT_NAMES
    return out


def template_context(facts: dict[str, FactValue]) -> dict[str, Any]:
    """Values for jinja2 templates: unknown strings become "" so `serial[-6:]` works on any machine."""
    ctx: dict[str, Any] = {}
    for name, value in facts.items():
        if value is None and FACT_KINDS.get(name) == "str":
            ctx[name] = ""
        else:
            ctx[name] = value
    return ctx
