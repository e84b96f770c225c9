"""The demo's rack: its PCs (``--pcs bios,uefi-secureboot``: firmware kind, name, MAC) and the recipes the demo
server runs on them (erase every drive, image tiny, grow the root file system, the hostname hook).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast, get_args

from provision.lab.qemu import Firmware

MAX_PCS = 8
MAC_PREFIX = "52:54:00:de:00:"
# the hostname hook (run over SSH in the live environment, in a chroot of the written disk): one name per
# firmware, made unique by the server (poste-uefi, poste-uefi-2 ...)
HOSTNAME_HOOK = 'hooks:\n  - name: hostname\n    params: {hostname: "poste-{{ firmware }}"}\n'
# every drive erased first (the donor's data), by what the drive can do (QEMU's virtio disk: one overwrite pass,
# NIST Clear), read back on a sample, recorded per drive for the certificate (docs/erasure.md)
ERASE = "erase:\n  method: auto\n  verify: sample\n"
RECIPES = {
    f"{kind}-pc.yaml": f"name: {kind}-pc\nmatch:\n  firmware: {kind}\n{ERASE}image: tiny\nwipe: zero\ngrow_root: true\n"
    + HOSTNAME_HOOK
    for kind in ("bios", "uefi")
}
DESCRIPTIONS: dict[str, str] = {
    "bios": "SeaBIOS, Debian 13 iPXE NIC ROM",
    "uefi": "OVMF, Secure Boot off, no NIC ROM (firmware PXE)",
    "uefi-secureboot": "OVMF, Secure Boot on, no NIC ROM (firmware PXE)",
}


@dataclass(frozen=True)
class DemoPC:
    """One PC of the demo rack."""

    name: str
    firmware: Firmware
    mac: str

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.firmware]


def parse_pcs(text: str) -> tuple[DemoPC, ...]:
    """``bios,uefi-secureboot`` -> the demo PCs (a kind given twice gives ``bios``, ``bios-2``); ValueError."""
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    if not kinds:
        raise ValueError("no PCs given (e.g. bios,uefi-secureboot)")
    if len(kinds) > MAX_PCS:
        raise ValueError(f"{len(kinds)} PCs: at most {MAX_PCS}")
    pcs: list[DemoPC] = []
    for index, kind in enumerate(kinds, start=1):
        if kind not in get_args(Firmware):
            raise ValueError(f"unknown PC kind {kind!r} (one of {', '.join(get_args(Firmware))})")
        count = kinds[:index].count(kind)
        name = kind if count == 1 else f"{kind}-{count}"
        pcs.append(DemoPC(name, cast(Firmware, kind), f"{MAC_PREFIX}{index:02x}"))
    return tuple(pcs)


DEFAULT_PCS = parse_pcs("bios,uefi-secureboot")
