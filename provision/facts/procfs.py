"""Parse ``/proc/meminfo`` and ``/proc/cpuinfo`` into :class:`MemInfo` and :class:`CpuInfo`.

``/proc/meminfo`` is one ``Key:   value kB`` line per counter; only ``MemTotal`` is read (the RAM the kernel
can use, a little less than the installed modules that DMI type 17 lists).

``/proc/cpuinfo`` on x86 is one block per logical CPU, each starting with ``processor : N``::

    processor   : 0
    model name  : Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz
    physical id : 0
    cpu cores   : 4
    flags       : fpu vme de pse ...

``physical id`` names the socket and ``cpu cores`` the physical cores of that socket, so physical cores are
summed once per distinct ``physical id``. Virtual machines and some architectures print no topology at all:
then every logical CPU counts as a core, on one socket. Other architectures name the model differently
(``Processor``/``cpu model``/``cpu``) and the flags ``Features``; those are read as fallbacks.
"""

from __future__ import annotations

import logging
import re

from provision.facts.model import CpuInfo, MemInfo, fact_int

log = logging.getLogger(__name__)

__all__ = ["parse_cpuinfo", "parse_meminfo"]

_MEMTOTAL_RE = re.compile(r"^MemTotal:\s*(\d+)\s*(kB)?\s*$")
# Keys naming the CPU model, most common first (x86, ARM 32-bit, MIPS, PowerPC/s390).
_MODEL_KEYS = ("model name", "Processor", "cpu model", "cpu")
_FLAG_KEYS = ("flags", "Features")


def parse_meminfo(text: str) -> MemInfo:
    """``MemTotal`` in kB; ``None`` when absent or not a number."""
    for line in text.splitlines():
        match = _MEMTOTAL_RE.match(line.strip())
        if match:
            return MemInfo(total_kb=fact_int(match.group(1)))
    log.debug("no MemTotal line in meminfo")
    return MemInfo()


def _entries(text: str) -> list[dict[str, str]]:
    """One dict per ``processor`` entry (first value of a key wins within an entry)."""
    entries: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        value = value.strip()
        if key == "processor":
            current = {}
            entries.append(current)
        if current is not None:
            current.setdefault(key, value)
    return entries


def _int(value: str | None) -> int | None:
    return fact_int(value)


def _model(entries: list[dict[str, str]]) -> str | None:
    for key in _MODEL_KEYS:
        model = next((value for entry in entries if (value := entry.get(key))), None)
        if model:
            return model
    return None


def _cores_and_sockets(entries: list[dict[str, str]]) -> tuple[int | None, int | None]:
    cores_by_socket: dict[str, int | None] = {}
    for entry in entries:
        socket = entry.get("physical id")
        if socket is not None and socket not in cores_by_socket:
            cores_by_socket[socket] = _int(entry.get("cpu cores"))
    if not cores_by_socket:
        # Virtual machines (and some architectures) give no topology: count every logical CPU as a core.
        return (len(entries) or None), (1 if entries else None)
    counts = list(cores_by_socket.values())
    cores = None if any(c is None for c in counts) else fact_int(sum(c for c in counts if c is not None))
    return cores or None, len(cores_by_socket)


def parse_cpuinfo(text: str) -> CpuInfo:
    """Model, sockets, physical cores, logical CPUs and flags (of the first processor) from cpuinfo."""
    entries = _entries(text)
    if not entries:
        log.debug("no processor entry in cpuinfo")
        return CpuInfo()
    model = _model(entries)
    cores, sockets = _cores_and_sockets(entries)
    first = entries[0]
    flags_text = next((first[k] for k in _FLAG_KEYS if k in first), "")
    return CpuInfo(
        model=model,
        sockets=sockets,
        cores=cores,
        threads=len(entries),
        flags=tuple(flags_text.split()),
    )
