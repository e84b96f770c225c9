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

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from provision.errors import ProbeError
from provision.facts.dmidecode import parse_dmidecode
from provision.facts.lsblk import LsblkFormatError, parse_lsblk_strict
from provision.facts.lspci import parse_lspci
from provision.facts.model import (
    CpuInfo,
    DmiFacts,
    Facts,
    Firmware,
    MemInfo,
    SmartReport,
)
from provision.facts.procfs import parse_cpuinfo, parse_meminfo
from provision.facts.shape import FactsInvalid, facts_from_dict
from provision.facts.smart import SmartFormatError, parse_smartctl_json_strict, parse_smartctl_text
from provision.wire import probe

log = logging.getLogger(__name__)

__all__ = ["MAX_FILE_BYTES", "FactsInvalid", "facts_from_dict", "load_facts_json", "load_probe", "read_probe_file"]

MAX_FILE_BYTES = 16 * 1024 * 1024

_T = TypeVar("_T")


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


def load_facts_json(path: Path) -> Facts:
    """Facts from a JSON file written from :meth:`Facts.to_dict`.

    Raises :class:`ProbeError` when the file cannot be read, is too large, or is not a JSON object, and its
    :class:`FactsInvalid` (naming the file and the key) when the object is not the shape of ``to_dict()``.
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
    try:
        return facts_from_dict(data)
    except FactsInvalid as exc:
        raise FactsInvalid(exc.key, exc.reason, path=str(path)) from None
