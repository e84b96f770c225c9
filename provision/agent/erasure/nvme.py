"""What ``nvme-cli`` says of an NVMe drive, as typed values: pure functions of text (standard library only).

- ``parse_id_ctrl``: ``nvme id-ctrl /dev/nvmeX -o json`` -> ``NvmeCaps`` (mn/sn/fr/vid; OACS bit 1 Format NVM;
  SANICAP bits 0 crypto erase, 1 block erase, 2 overwrite; FNA bit 2 "crypto erase supported as part of a
  secure erase" i.e. Format NVM with SES=2).
- ``add_id_ns``: ``nvme id-ns /dev/nvmeXnY -o json`` added to them: DLFEAT bits 0-2 (what a deallocated
  block reads as: 1 = zeros, 2 = ones, 0 = not reported) and the in-use LBA format's sector size (FLBAS's
  low four bits index ``lbafs``; ``ds`` is log2 of the size).
- ``parse_sanitize_log``: ``nvme sanitize-log /dev/nvmeX -o json`` -> ``SanitizeLog`` (SPROG, the fraction
  done out of 65535, and SSTAT's status: 0 never sanitized, 1 completed, 2 in progress, 3 failed,
  4 completed without deallocation).
- ``controller_of``: ``nvme0n1`` -> ``nvme0`` (the sanitize command and log take the controller's character
  device, the format and the reads take the namespace's block device).

nvme-cli's JSON prints numbers as JSON numbers (large ones sometimes as strings): both are read. Bad or
empty text gives None, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["NvmeCaps", "SanitizeLog", "add_id_ns", "controller_of", "parse_id_ctrl", "parse_sanitize_log"]

OACS_FORMAT = 1 << 1
SANICAP_CRYPTO, SANICAP_BLOCK, SANICAP_OVERWRITE = 1 << 0, 1 << 1, 1 << 2
FNA_CRYPTO = 1 << 2
SPROG_DONE = 65535
_SSTAT = {0: "never", 1: "completed", 2: "in-progress", 3: "failed", 4: "completed"}


@dataclass(frozen=True)
class NvmeCaps:
    """An NVMe controller's (and its namespace's) identify data, as far as the erasure needs it."""

    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    vendor_id: int | None = None  # PCI vendor id (0x144d Samsung, 0x8086 Intel, 0x15b7 SanDisk/WD ...)
    oacs: int = 0
    sanicap: int = 0
    fna: int = 0
    namespaces: int | None = None  # NN: a Format NVM acts per namespace, a sanitize on the whole controller
    dlfeat: int | None = None  # from id-ns; None: not read
    logical_sector: int | None = None  # from id-ns

    @property
    def format_nvm(self) -> bool:
        return bool(self.oacs & OACS_FORMAT)

    @property
    def sanitize_crypto(self) -> bool:
        return bool(self.sanicap & SANICAP_CRYPTO)

    @property
    def sanitize_block(self) -> bool:
        return bool(self.sanicap & SANICAP_BLOCK)

    @property
    def sanitize_overwrite(self) -> bool:
        return bool(self.sanicap & SANICAP_OVERWRITE)

    @property
    def format_crypto(self) -> bool:
        """Format NVM with SES=2 (cryptographic erase): FNA bit 2."""
        return self.format_nvm and bool(self.fna & FNA_CRYPTO)

    @property
    def deallocated_reads(self) -> str | None:
        """What a deallocated (erased) block reads as, per DLFEAT: "zeros", "ones" or None (not reported)."""
        if self.dlfeat is None:
            return None
        return {1: "zeros", 2: "ones"}.get(self.dlfeat & 0x7)


@dataclass(frozen=True)
class SanitizeLog:
    """``sanitize-log``: ``status`` "never", "completed", "in-progress", "failed" or "unknown"."""

    status: str
    progress: float | None  # SPROG / 65535 (1.0 when no sanitize is running)
    passes: int | None = None


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return None
    return None


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def parse_id_ctrl(text: str) -> NvmeCaps | None:
    """``nvme id-ctrl -o json`` text -> ``NvmeCaps``; None when it is not an identify-controller object."""
    data = _load(text)
    if not isinstance(data, dict) or not any(key in data for key in ("mn", "sn", "oacs")):
        return None
    return NvmeCaps(
        model=_text(data.get("mn")),
        serial=_text(data.get("sn")),
        firmware=_text(data.get("fr")),
        vendor_id=_int(data.get("vid")),
        oacs=_int(data.get("oacs")) or 0,
        sanicap=_int(data.get("sanicap")) or 0,
        fna=_int(data.get("fna")) or 0,
        namespaces=_int(data.get("nn")),
    )


def add_id_ns(caps: NvmeCaps, text: str) -> NvmeCaps:
    """``caps`` with DLFEAT and the logical sector size of ``nvme id-ns -o json`` text (unchanged when bad)."""
    data = _load(text)
    if not isinstance(data, dict):
        return caps
    dlfeat = _int(data.get("dlfeat"))
    flbas = _int(data.get("flbas"))
    formats = data.get("lbafs")
    sector = None
    if flbas is not None and isinstance(formats, list) and (flbas & 0xF) < len(formats):
        chosen = formats[flbas & 0xF]
        ds = _int(chosen.get("ds")) if isinstance(chosen, dict) else None
        sector = 1 << ds if ds is not None and 9 <= ds <= 16 else None
    return replace(caps, dlfeat=dlfeat, logical_sector=sector)


def _find(data: Any, key: str) -> Any:
    """The first value of ``key`` in nested dicts (nvme-cli nests the log under the device's name)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _sstat(value: Any) -> int | None:
    """SSTAT's status (bits 0-2): a number, or nvme-cli's object ``{"status": "(1) ..."}``."""
    number = _int(value)
    if number is not None:
        return number & 0x7
    if isinstance(value, dict):
        for item in value.values():
            match = re.match(r"\s*\((\d+)\)", item) if isinstance(item, str) else None
            if match:
                return int(match.group(1))
    return None


def parse_sanitize_log(text: str) -> SanitizeLog:
    """``nvme sanitize-log -o json`` text -> ``SanitizeLog`` (status "unknown" when it cannot be read)."""
    data = _load(text)
    sprog = _int(_find(data, "sprog"))
    sstat = _find(data, "sstat")
    status = _sstat(sstat)
    passes = _int(sstat.get("no_cmplted_passes")) if isinstance(sstat, dict) else None
    state = _SSTAT.get(status, "unknown") if status is not None else "unknown"
    progress = None if sprog is None else min(1.0, sprog / SPROG_DONE)
    return SanitizeLog(state, progress, passes)


def controller_of(name: str) -> str:
    """The controller of a namespace's kernel name: ``nvme0n1`` -> ``nvme0`` (a controller stays itself)."""
    match = re.fullmatch(r"(nvme\d+)(?:c\d+)?n\d+", name)
    return match.group(1) if match else name
