"""Files standing in for a PC's drives in the erasure's tests, and a fake nvme-cli that really erases them.

- ``PATTERN``: the donor's data the drives are filled with first; ``fill(path, size)`` writes it over a whole
  file, ``pattern_left(path)``: the offsets of the 1 MiB pieces that still hold any of it.
- ``disk(name, path, **lsblk)``: the wire's ``Disk`` of a file (its size; transport, serial ...).
- ``FakeNvme``: a runner (``subprocess.run``'s signature) answering like nvme-cli for the NVMe drives it is
  given (id-ctrl, id-ns, format, version) and "not installed" for every other tool. Each drive behaves as
  told: ``honest`` (Format NVM really zeroes the file, or fills it with noise for a crypto erase), ``lying``
  (exit 0, nothing erased: what FOG's NVMe wipe did), ``failing`` (the command fails with an NVMe status).
  Every argv is recorded in ``calls``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from provision.agent.erasure.nvme import controller_of
from provision.wire.probe import Disk
from tests.support.erasure_fakes import FakeTools

MiB = 1 << 20
PATTERN = b"donor ACME Assurances, payroll 2019: J. Martin IBAN FR76 3000 6000 0112 3456 7890 189; "

Behaviour = Literal["honest", "lying", "failing"]


def fill(path: Path, size: int, pattern: bytes = PATTERN) -> Path:
    """``path`` made ``size`` bytes of ``pattern`` repeated (every byte: no hole left)."""
    piece = (pattern * (MiB // len(pattern) + 1))[:MiB]
    with path.open("wb") as f:
        for start in range(0, size, MiB):
            f.write(piece[: min(MiB, size - start)])
    return path


def pattern_left(path: Path, pattern: bytes = PATTERN) -> list[int]:
    """Offsets of the 1 MiB pieces of ``path`` still holding a run of the pattern (its first 24 bytes, or
    any 24-byte slice: a piece boundary may cut it)."""
    probes = {pattern[i : i + 24] for i in range(0, len(pattern) - 24, 8)}
    found = []
    with path.open("rb") as f:
        offset = 0
        while piece := f.read(MiB):
            if any(p in piece for p in probes):
                found.append(offset)
            offset += len(piece)
    return found


def disk(name: str, path: Path, **lsblk: Any) -> Disk:
    """The ``Disk`` lsblk would list for the file ``path`` (size from the file)."""
    return Disk(name=name, size_bytes=path.stat().st_size, **lsblk)


@dataclass
class NvmeDrive:
    path: Path
    serial: str
    behaviour: Behaviour = "honest"
    crypto: bool = False  # Format NVM offers a crypto erase (FNA bit 2): SES=2, noise after


@dataclass
class FakeNvme:
    """nvme-cli for the drives of ``drives`` (kernel name -> NvmeDrive); everything else "not installed"."""

    drives: dict[str, NvmeDrive]
    calls: list[list[str]] = field(default_factory=list)

    def _drive(self, target: str) -> NvmeDrive | None:
        """The drive a namespace path or its controller's path names."""
        for name, drive in self.drives.items():
            if target in (str(drive.path), str(drive.path.parent / controller_of(name))):
                return drive
        return None

    def __call__(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        args = [str(a) for a in argv]
        self.calls.append(args)
        if args[0] != "nvme":
            raise FileNotFoundError(2, "No such file or directory", args[0])
        if args[1] == "version":
            return self._answer(args, 0, "nvme version 2.4 (git 2.4+debian-1)\n")
        drive = self._drive(args[2]) if len(args) > 2 else None
        if drive is None:
            return self._answer(args, 1, "", f"{args[2] if len(args) > 2 else '?'}: No such device\n")
        if args[1] == "id-ctrl":
            ident = {"vid": 0x144D, "sn": drive.serial, "mn": "Samsung SSD 970 EVO Plus 500GB", "fr": "2B2QEXM7",
                     "oacs": 0x17, "sanicap": 0, "fna": 4 if drive.crypto else 0, "nn": 1}  # fmt: skip
            return self._answer(args, 0, json.dumps(ident))
        if args[1] == "id-ns":
            return self._answer(args, 0, json.dumps({"dlfeat": 9, "flbas": 0, "lbafs": [{"ms": 0, "ds": 9, "rp": 0}]}))
        if args[1] == "format":
            return self._format(args, drive)
        return self._answer(args, 1, "", f"unknown command {args[1]}\n")

    def _format(self, args: list[str], drive: NvmeDrive) -> subprocess.CompletedProcess[bytes]:
        if drive.behaviour == "failing":
            return self._answer(args, 1, "", "NVMe status: INVALID_FORMAT: The LBA Format specified is not supported\n")
        if drive.behaviour == "honest":
            size = drive.path.stat().st_size
            crypto = "--ses=2" in args
            with drive.path.open("r+b") as f:
                for start in range(0, size, MiB):
                    n = min(MiB, size - start)
                    f.write(os.urandom(n) if crypto else bytes(n))
        return self._answer(args, 0, "Success formatting namespace:1\n")

    @staticmethod
    def _answer(args: list[str], code: int, out: str, err: str = "") -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(args, code, out.encode(), err.encode())


_ERASES = ("--security-erase", "--security-erase-enhanced", "--sanitize-block-erase", "--sanitize-crypto-scramble")
_CRYPTO = ("--sanact=4", "--ses=2", "--sanitize-crypto-scramble", "--security-erase-enhanced", "-C", "--crypto")


@dataclass
class ErasingTools(FakeTools):
    """A1's ``FakeTools`` (captured hdparm / nvme-cli / sg3_utils answers) whose erase commands really erase
    the file standing in for the drive: zeros, or noise for a crypto erase (and an enhanced security erase,
    whose pattern is the vendor's). A drive whose path is in ``lying`` answers success and keeps its data."""

    lying: frozenset[str] = frozenset()

    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        reply = super().answer(argv)
        erases = argv[:2] in (["nvme", "sanitize"], ["nvme", "format"]) or argv[0] == "sg_sanitize"
        if reply[0] == 0 and (erases or any(a in _ERASES for a in argv)):
            found = self.drive(argv[1:])
            if found is not None and found[0] not in self.lying:
                path = Path(found[0])
                size = path.stat().st_size
                crypto = any(a in _CRYPTO for a in argv)
                with path.open("r+b") as f:
                    for start in range(0, size, MiB):
                        n = min(MiB, size - start)
                        f.write(os.urandom(n) if crypto else bytes(n))
        return reply
