"""The probe: the files the agent collects on a PC and the server reads into facts, and the one ``lsblk``
reader both sides use (the agent to choose its target disk, the server for the machine's facts).

``lsblk --json -b -O``: only whole disks (``"type": "disk"``, not ``zram*``) are kept; partitions and stacked
devices (LVM, crypt, RAID) below a disk only contribute their mount points. Both the current JSON (lsblk >=
2.33: real booleans and numbers, ``mountpoints`` list since 2.37) and the older one (strings ``"0"``/``"1"``,
sizes as strings, a single ``mountpoint``) are understood.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The probe folder's files (any subset; the server reads what is there).
DMIDECODE = "dmidecode.txt"  # dmidecode
LSPCI = "lspci.txt"  # lspci -vvnn (or -nn)
LSBLK = "lsblk.json"  # lsblk --json -b -O
MEMINFO = "meminfo"  # /proc/meminfo (meminfo.txt is read too)
CPUINFO = "cpuinfo"  # /proc/cpuinfo (cpuinfo.txt is read too)
FIRMWARE = "firmware"  # "uefi" or "bios": how the live environment booted
MAC = "mac"  # the MAC the PC booted with
SMARTCTL_PREFIX = "smartctl"  # smartctl-<disk>.json (smartctl --json -a) or .txt, one per disk

MAX_DIGITS = 19  # a non-negative number lsblk can print fits in 19 decimal digits (64 bits)
MAX_DEPTH = 16  # how deep partitions / holders are followed below a disk when collecting mount points


def smartctl_name(disk: str) -> str:
    return f"{SMARTCTL_PREFIX}-{disk}.json"


def is_smartctl_name(name: str) -> bool:
    return name.startswith(SMARTCTL_PREFIX) and name.endswith((".json", ".txt"))


class LsblkFormatError(ValueError):
    """The text is not lsblk JSON output (invalid JSON or no ``blockdevices`` list)."""


@dataclass(frozen=True)
class Disk:
    """One whole disk as lsblk describes it; ``None`` where lsblk said nothing usable."""

    name: str  # kernel name: sda, nvme0n1
    size_bytes: int | None = None
    rotational: bool | None = None
    transport: str | None = None  # sata, nvme, usb, ata, virtio (from subsystems), ...
    removable: bool | None = None
    model: str | None = None
    serial: str | None = None
    logical_sector: int | None = None
    physical_sector: int | None = None
    mounted: tuple[str, ...] = ()  # mount points of the disk and its partitions

    @property
    def internal(self) -> bool:
        """A disk that may be imaged: not removable, not on USB."""
        return not self.removable and self.transport != "usb"


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 1 << 63 else None
    text = value.strip() if isinstance(value, str) else ""
    if text.isdecimal() and len(text) <= MAX_DIGITS:  # a longer "number" is not a size: unknown, not an error
        return int(text)
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {0: False, 1: True}.get(value)
    if isinstance(value, str):
        return {"0": False, "1": True, "false": False, "true": True}.get(value.strip().lower())
    return None


def _as_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _transport(device: dict[str, Any]) -> str | None:
    tran = _as_text(device.get("tran"))
    if tran is not None:
        return tran
    subsystems = _as_text(device.get("subsystems")) or ""
    return "virtio" if "virtio" in subsystems.split(":") else None


def _removable(device: dict[str, Any]) -> bool | None:
    flags = [_as_bool(device.get("rm")), _as_bool(device.get("hotplug"))]
    if True in flags:
        return True
    if False in flags:
        return False
    return None


def _mount_points(device: dict[str, Any], found: list[str], depth: int = 0) -> None:
    points = device.get("mountpoints")
    if not isinstance(points, list):
        points = [device.get("mountpoint")]
    for point in points:
        if isinstance(point, str) and point and point not in found:
            found.append(point)
    children = device.get("children")
    if depth >= MAX_DEPTH or not isinstance(children, list):
        return
    for child in children:
        if isinstance(child, dict):
            _mount_points(child, found, depth + 1)


def lsblk_disk(device: dict[str, Any]) -> Disk | None:
    """One lsblk device as a Disk; None when it is not a whole disk (a partition, zram, rom, loop)."""
    name = _as_text(device.get("name"))
    if name is None or device.get("type") != "disk" or name.startswith("zram"):
        return None
    mounted: list[str] = []
    _mount_points(device, mounted)
    return Disk(
        name=name,
        size_bytes=_as_int(device.get("size")),
        rotational=_as_bool(device.get("rota")),
        transport=_transport(device),
        removable=_removable(device),
        model=_as_text(device.get("model")),
        serial=_as_text(device.get("serial")),
        logical_sector=_as_int(device.get("log-sec")),
        physical_sector=_as_int(device.get("phy-sec")),
        mounted=tuple(mounted),
    )


def parse_lsblk_strict(text: str) -> tuple[Disk, ...]:
    """The whole disks of ``lsblk --json -b -O`` output; LsblkFormatError when the text is not lsblk JSON."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LsblkFormatError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("blockdevices"), list):
        raise LsblkFormatError('no "blockdevices" list at the top level')
    found = (lsblk_disk(d) for d in data["blockdevices"] if isinstance(d, dict))
    return tuple(d for d in found if d is not None)
