"""Parse ``lsblk --json -b -O`` output into :class:`Disk` entries.

Only whole disks (``"type": "disk"``, not ``zram*``) are kept; partitions and stacked devices (LVM, crypt,
RAID) below a disk only contribute their mount points. Both the current JSON (lsblk >= 2.33: real booleans
and numbers, ``mountpoints`` list since 2.37) and the older one (strings ``"0"``/``"1"``, sizes as strings,
a single ``mountpoint``) are understood.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from provision.facts.model import Disk

log = logging.getLogger(__name__)

__all__ = ["LsblkFormatError", "parse_lsblk", "parse_lsblk_strict"]

#: How deep partitions / holders are followed below a disk when collecting mount points.
_MAX_DEPTH = 16


class LsblkFormatError(ValueError):
    """The text is not lsblk JSON output (invalid JSON or no ``blockdevices`` list)."""


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
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
    if "virtio" in subsystems.split(":"):
        return "virtio"
    return None


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
    if depth >= _MAX_DEPTH or not isinstance(children, list):
        return
    for child in children:
        if isinstance(child, dict):
            _mount_points(child, found, depth + 1)


def _disk(device: dict[str, Any]) -> Disk | None:
    name = _as_text(device.get("name"))
    if name is None:
        return None
    if device.get("type") != "disk" or name.startswith("zram"):
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
    """Like :func:`parse_lsblk`, but raise :class:`LsblkFormatError` when the text is not lsblk JSON."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LsblkFormatError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("blockdevices"), list):
        raise LsblkFormatError('no "blockdevices" list at the top level')
    disks = []
    for device in data["blockdevices"]:
        if not isinstance(device, dict):
            continue
        disk = _disk(device)
        if disk is not None:
            disks.append(disk)
    return tuple(disks)


def parse_lsblk(text: str) -> tuple[Disk, ...]:
    """Whole disks of ``lsblk --json -b -O`` output; ``()`` (and a logged warning) if it is not lsblk JSON."""
    try:
        return parse_lsblk_strict(text)
    except LsblkFormatError as exc:
        log.warning("lsblk output ignored: %s", exc)
        return ()
