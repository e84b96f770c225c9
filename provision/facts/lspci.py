"""Parse ``lspci -nn`` and ``lspci -vvnn`` (or ``-knn``) output into :class:`PciDevice` entries.

Every device starts with an unindented line (here wrapped)::

    00:19.0 Ethernet controller [0200]: Intel Corporation 82567LM-3 Gigabit Network Connection
        [8086:10de] (rev 02)

optionally followed (verbose modes) by indented lines; of those only ``Subsystem:``, ``Kernel driver in use:``
and ``Kernel modules:`` are read. Lines that do not parse are skipped, never fatal.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from provision.facts.model import PciDevice

log = logging.getLogger(__name__)

__all__ = ["parse_lspci", "parse_lspci_line"]

_SLOT = r"(?:[0-9A-Fa-f]{4,8}:)?[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]"
# "BB:DD.F Class name [cccc]: rest" (-nn) or "BB:DD.F Class name: rest" (plain lspci, no numeric ids).
# Written without overlapping repeats so that hostile 10 kB lines cannot make matching slow.
_NN_RE = re.compile(rf"^(?P<slot>{_SLOT})\s(?P<cname>[^\[]*)\[(?P<ccode>[0-9A-Fa-f]{{4}})\]:(?P<rest>.*)$")
_PLAIN_RE = re.compile(rf"^(?P<slot>{_SLOT})\s(?P<cname>[^:\[\]]*):(?P<rest>.*)$")
# Trailing "(rev 02)" and "(prog-if 01 [AHCI 1.0])", in any order.
_SUFFIX_MARKERS = ("(rev ", "(prog-if ")
_SUFFIX_RE = re.compile(r"\((?:rev\s+[0-9A-Fa-f]+|prog-if\s+[^()]*)\)")
_ID_RE = re.compile(r"\[([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})\]")


def _last_id(text: str) -> tuple[re.Match[str] | None, str | None]:
    """The last ``[vvvv:dddd]`` of ``text`` and that id as ``"vvvv:dddd"`` (lower case)."""
    matches = list(_ID_RE.finditer(text))
    if not matches:
        return None, None
    match = matches[-1]
    return match, f"{match.group(1).lower()}:{match.group(2).lower()}"


def _strip_suffixes(rest: str) -> str:
    rest = rest.strip()
    while rest.endswith(")"):
        cut = max(rest.rfind(marker) for marker in _SUFFIX_MARKERS)
        if cut < 0 or not _SUFFIX_RE.fullmatch(rest, cut):
            break
        rest = rest[:cut].rstrip()
    return rest


def parse_lspci_line(line: str) -> PciDevice | None:
    """One ``lspci -nn`` device line (``(prog-if ...)`` allowed) as a :class:`PciDevice`, or ``None``."""
    line = line.strip()
    match = _NN_RE.match(line)
    class_code: str | None = None
    if match:
        class_code = match.group("ccode").lower()
    else:
        match = _PLAIN_RE.match(line)
        if not match:
            return None
    rest = _strip_suffixes(match.group("rest"))
    id_match, pci_id = _last_id(rest)
    vendor_id = device_id = None
    description = rest
    if id_match is not None and pci_id is not None:
        vendor_id, device_id = pci_id.split(":")
        description = rest[: id_match.start()].strip()
    return PciDevice(
        slot=match.group("slot"),
        class_code=class_code,
        class_name=match.group("cname").strip() or None,
        vendor_id=vendor_id,
        device_id=device_id,
        description=description or None,
    )


def _with_detail(device: PciDevice, key: str, value: str) -> PciDevice:
    value = value.strip()
    if key == "Subsystem" and device.subsystem is None:
        _, subsystem = _last_id(value)
        if subsystem is not None:
            return dataclasses.replace(device, subsystem=subsystem)
    elif key == "Kernel driver in use" and device.driver is None and value:
        return dataclasses.replace(device, driver=value)
    elif key == "Kernel modules" and not device.modules:
        modules = tuple(m.strip() for m in value.split(",") if m.strip())
        return dataclasses.replace(device, modules=modules)
    return device


def parse_lspci(text: str) -> tuple[PciDevice, ...]:
    """All devices of ``lspci -nn`` or ``lspci -vvnn`` output, in the order listed."""
    devices: list[PciDevice] = []
    current: PciDevice | None = None
    detail_indent: int | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped:
            continue
        indent = len(line) - len(stripped)
        if indent == 0:
            if current is not None:
                devices.append(current)
            current = parse_lspci_line(stripped)
            detail_indent = None
            if current is None:
                log.debug("lspci line not understood, skipped: %.200r", stripped)
            continue
        if current is None:
            continue
        if detail_indent is None:
            detail_indent = indent
        if indent > detail_indent:
            continue  # nested capability details
        key, sep, value = stripped.partition(":")
        if sep:
            current = _with_detail(current, key.strip(), value)
    if current is not None:
        devices.append(current)
    return tuple(devices)
