"""Choose the disk the agent writes the image onto (standard library only).

Disks come from the wire's one ``lsblk --json -b -O`` reader (``provision.wire.probe``), the same the
server's facts use; strings are carried as data (any character, any length).

Rules: a removable disk, a USB disk, the live medium and any disk holding a mounted filesystem are never
chosen, and the disk must hold the whole image. Sizes are in GB of 10^9 bytes, like the recipes' ``min_gb``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Protocol, TypeVar

from provision.errors import FatalError
from provision.wire.probe import Disk, LsblkFormatError, lsblk_disk, parse_lsblk_strict

__all__ = [
    "AmbiguousTarget",
    "Disk",
    "DiskLike",
    "NoTargetDisk",
    "TargetRuleInvalid",
    "choose_target",
    "live_medium_devices",
    "parse_lsblk_disks",
]

GB = 10**9
_SELECTS = ("auto", "largest", "smallest")
_RULE_KEYS = frozenset({"select", "transport", "model", "name", "min_gb"})
_MAX_SHOWN = 80


class DiskLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def size_bytes(self) -> int | None: ...
    @property
    def transport(self) -> str | None: ...
    @property
    def removable(self) -> bool | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def mounted(self) -> tuple[str, ...]: ...


_D = TypeVar("_D", bound=DiskLike)


class NoTargetDisk(FatalError):
    """No disk qualifies; ``excluded`` maps each disk's name to the reasons it was left out."""

    def __init__(self, message: str, *, excluded: dict[str, list[str]], image_size: int) -> None:
        super().__init__(message, excluded=excluded, image_size=image_size)
        self.excluded = excluded
        self.image_size = image_size


class AmbiguousTarget(FatalError):
    """Several disks qualify and the rule does not say which one to take."""

    def __init__(self, message: str, *, candidates: list[str]) -> None:
        super().__init__(message, candidates=candidates)
        self.candidates = candidates


class TargetRuleInvalid(FatalError):
    """The ``target_disk`` rule handed to the agent is not a valid rule."""


def show(text: str) -> str:
    """A string from a probe, safe for one log line: control characters escaped, length bounded."""
    shown = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= _MAX_SHOWN else shown[:_MAX_SHOWN] + "..."


def size_text(size: int) -> str:
    """``500 GB`` (whole GB from 10 GB on), ``1.5 GB`` below."""
    return f"{size // GB} GB" if size >= 10 * GB else f"{size / GB:.1f} GB"


# ---------------------------------------------------------------------------------------------------------
# lsblk


def parse_lsblk_disks(text: str) -> tuple[Disk, ...]:
    """Whole disks of ``lsblk --json -b -O`` output (the wire's reader); ``()`` when it is not lsblk JSON."""
    try:
        return parse_lsblk_strict(text)
    except LsblkFormatError:
        return ()


# ---------------------------------------------------------------------------------------------------------
# the live medium

_PARTITIONED = re.compile(r"^((?:nvme\d+n\d+)|(?:mmcblk\d+)|(?:nbd\d+))(?:p\d+)?$")
_PLAIN = re.compile(r"^((?:sd|vd|hd|xvd)[a-z]+)\d*$")
_OCTAL = re.compile(r"\\([0-7]{3})")
_BOOT_ARGS = ("live-media=", "root=")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def _disk_of(device: str, disk_names: Iterable[str]) -> str | None:
    """Kernel name of the whole disk behind ``/dev/<device>`` (sdb1 -> sdb); ``None`` for dm, loop, etc."""
    for name in disk_names:
        rest = device[len(name) :] if device.startswith(name) else None
        if rest is not None and re.fullmatch(r"(p?\d+)?", rest):
            return name
    for pattern in (_PARTITIONED, _PLAIN):
        match = pattern.match(device)
        if match:
            return match.group(1)
    return None


def live_medium_devices(mounts_text: str, disks: Sequence[DiskLike] = (), cmdline: str | None = None) -> set[str]:
    """Disks holding a mounted filesystem (from ``/proc/mounts`` text), plus the boot device named by a
    ``live-media=/dev/X`` or ``root=/dev/X`` kernel argument in ``cmdline``.

    Device-mapper, loop and ``/dev/disk/by-*`` sources are ignored (the lsblk mount points of each disk,
    which :func:`choose_target` also checks, cover filesystems stacked on a disk).
    """
    names = sorted((d.name for d in disks), key=len, reverse=True)  # nvme0n1 before a hypothetical nvme0
    sources: list[str] = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if fields:
            sources.append(_unescape(fields[0]))
    for arg in (cmdline or "").split():
        for prefix in _BOOT_ARGS:
            if arg.startswith(prefix):
                sources.append(arg[len(prefix) :])
    found: set[str] = set()
    for source in sources:
        if not source.startswith("/dev/") or "/" in source[5:]:
            continue
        disk = _disk_of(source[5:], names)
        if disk is not None:
            found.add(disk)
    return found


# ---------------------------------------------------------------------------------------------------------
# the choice


@dataclass(frozen=True)
class _Rule:
    select: str
    transport: tuple[str, ...] | None
    model: str | None
    name: str | None
    min_gb: int | None


def _rule(rule: Mapping[str, object]) -> _Rule:
    unknown = sorted(set(rule) - _RULE_KEYS)
    if unknown:
        raise TargetRuleInvalid(f"target_disk: unknown keys {', '.join(map(repr, unknown))}", rule=dict(rule))
    select = rule.get("select") or "auto"
    transport = rule.get("transport")
    model, name, min_gb = rule.get("model"), rule.get("name"), rule.get("min_gb")
    if select not in _SELECTS:
        raise TargetRuleInvalid(f"target_disk.select must be one of {', '.join(_SELECTS)}", rule=dict(rule))
    if transport is not None and not (
        isinstance(transport, list | tuple) and all(isinstance(t, str) for t in transport)
    ):
        raise TargetRuleInvalid("target_disk.transport must be a list of names", rule=dict(rule))
    if not all(v is None or isinstance(v, str) for v in (model, name)):
        raise TargetRuleInvalid("target_disk.model and target_disk.name must be text", rule=dict(rule))
    if min_gb is not None and (not isinstance(min_gb, int) or isinstance(min_gb, bool) or min_gb < 1):
        raise TargetRuleInvalid("target_disk.min_gb must be a whole number >= 1", rule=dict(rule))
    return _Rule(
        select=str(select),
        transport=tuple(t.lower() for t in transport) if transport is not None else None,
        model=model if isinstance(model, str) else None,
        name=name.removeprefix("/dev/") if isinstance(name, str) else None,
        min_gb=min_gb if isinstance(min_gb, int) else None,
    )


def _reasons(disk: DiskLike, rule: _Rule, image_size: int, live_medium: set[str]) -> list[str]:
    """Why ``disk`` may not take the image; empty when it qualifies."""
    why: list[str] = []
    if disk.removable:
        why.append("removable")
    if disk.transport == "usb":
        why.append("USB")
    if disk.name in live_medium:
        why.append("the live medium or holds a mounted filesystem")
    elif disk.mounted:
        why.append(f"holds mounted filesystems ({', '.join(show(m) for m in disk.mounted[:3])})")
    size = disk.size_bytes
    if size is None:
        why.append("size unknown")
    elif size < image_size:
        why.append(
            f"too small for the image (disk {size_text(size)} = {size} bytes,"
            f" image {size_text(image_size)} = {image_size} bytes)"
        )
    if rule.transport is not None and (disk.transport or "").lower() not in rule.transport:
        why.append(f"transport {show(disk.transport or 'unknown')} not in {', '.join(rule.transport)}")
    if rule.model is not None and not fnmatchcase((disk.model or "").lower(), rule.model.lower()):
        why.append(f"model {show(disk.model or 'unknown')!r} does not match {show(rule.model)!r}")
    if rule.name is not None and disk.name != rule.name:
        why.append(f"name is not {show(rule.name)}")
    if rule.min_gb is not None and size is not None and size < rule.min_gb * GB:
        why.append(f"below min_gb {rule.min_gb} ({size_text(size)})")
    return why


def choose_target(disks: Sequence[_D], rule: Mapping[str, object], image_size: int, live_medium: set[str]) -> _D:
    """The disk to image, per the recipe's ``target_disk`` rule (``select``, ``transport``, ``model``,
    ``name``, ``min_gb``; missing keys mean no constraint, ``select`` defaults to ``auto``).

    Raises :class:`NoTargetDisk` naming every disk and why it was left out, :class:`AmbiguousTarget` when
    ``select: auto`` (or a tie for largest/smallest) leaves several, :class:`TargetRuleInvalid` for a bad rule.
    """
    parsed = _rule(rule)
    excluded: dict[str, list[str]] = {}
    qualifying: list[_D] = []
    for disk in disks:
        why = _reasons(disk, parsed, image_size, live_medium)
        if why:
            excluded[disk.name] = why
        else:
            qualifying.append(disk)
    if not qualifying:
        detail = "; ".join(f"{show(name)}: {', '.join(why)}" for name, why in excluded.items()) or "no disks found"
        raise NoTargetDisk(
            f"no disk can take the image ({size_text(image_size)}): {detail}",
            excluded=excluded,
            image_size=image_size,
        )
    if len(qualifying) == 1:
        return qualifying[0]
    if parsed.select != "auto":
        sizes = [d.size_bytes or 0 for d in qualifying]
        best = max(sizes) if parsed.select == "largest" else min(sizes)
        qualifying = [d for d, s in zip(qualifying, sizes, strict=True) if s == best]
        if len(qualifying) == 1:
            return qualifying[0]
    listed = ", ".join(f"{show(d.name)} {size_text(d.size_bytes or 0)}" for d in qualifying)
    tie = "" if parsed.select == "auto" else f" and are equally {parsed.select}"
    raise AmbiguousTarget(
        f"several disks qualify ({listed}){tie}; set target_disk.select or name in the recipe",
        candidates=[d.name for d in qualifying],
    )


def disks_in_folder(folder: Path) -> tuple[tuple[Disk, Path], ...]:
    """Regular files standing in for disks (tests, demos): each file ``NAME`` in ``folder`` is a disk of its
    size; an optional ``NAME.json`` holds lsblk fields for it (``tran``, ``rm``, ``hotplug``, ``model``,
    ``serial``, ``mountpoints``). Returns ``(disk, path)`` pairs sorted by name."""
    found: list[tuple[Disk, Path]] = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json" or not path.is_file():
            continue
        meta_path = path.with_name(path.name + ".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if not isinstance(meta, dict):
            raise TargetRuleInvalid(f"{meta_path}: not a JSON object", path=str(meta_path))
        disk = lsblk_disk({**meta, "name": path.name, "type": "disk", "size": path.stat().st_size})
        if disk is not None:
            found.append((disk, path))
    return tuple(found)
