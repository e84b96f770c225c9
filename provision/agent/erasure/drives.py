"""What one drive can do for its erasure: ``inspect_drive`` asks the drive's own tools and returns a
``DriveInfo`` (identity, interface, ATA / NVMe / SCSI capabilities, hidden areas, SMART summary, tool
versions, and the raw outputs kept for the record).

Which tools, by interface (the kernel's transport from lsblk, else the device name):

- ``nvme``: ``nvme id-ctrl /dev/nvmeX -o json`` (the controller) and ``nvme id-ns /dev/nvmeXnY -o json``;
- ``sata`` (and an ``sd``/``hd`` disk of unknown transport that answers ``hdparm -I``): ``hdparm -I``,
  ``hdparm -N`` (HPA) and, when the drive has the DCO feature set, ``hdparm --dco-identify``;
- ``sas`` / ``scsi``: ``sg_opcodes`` (is SANITIZE, opcode 0x48, supported and how);
- every interface but ``virtio`` and ``mmc``: ``smartctl -j -a``.

A USB drive is asked only for SMART: its bridge may not pass erase commands faithfully, so it is overwritten
(``methods.choose_method`` says why). A tool that is missing or fails leaves its part None ("unknown").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from provision.agent.erasure.hdparm import AtaCaps, NativeMax, parse_dco, parse_identify, parse_native_max
from provision.agent.erasure.nvme import NvmeCaps, add_id_ns, controller_of, parse_id_ctrl
from provision.agent.erasure.scsi import ScsiCaps, parse_opcodes
from provision.agent.erasure.smart import parse_smart
from provision.agent.erasure.tools import Ran, run_tool, tool_versions
from provision.agent.inventory import Runner
from provision.wire.erasure import HiddenAreas, Smart

__all__ = ["INTERFACES", "DriveInfo", "hidden_areas", "inspect_ata", "inspect_drive", "interface_of"]

log = logging.getLogger(__name__)

INTERFACES = ("nvme", "sata", "sas", "scsi", "usb", "virtio", "mmc", "unknown")
_TRANSPORTS = {"nvme": "nvme", "sata": "sata", "ata": "sata", "sas": "sas", "usb": "usb", "spi": "scsi",
               "fc": "scsi", "iscsi": "scsi", "srp": "scsi", "mmc": "mmc", "virtio": "virtio"}  # fmt: skip
# PCI vendor ids of NVMe drives (id-ctrl "vid")
_PCI_VENDORS = {0x144D: "Samsung", 0x8086: "Intel", 0x15B7: "Western Digital", 0x1B96: "Western Digital",
                0x1C5C: "SK hynix", 0x1E0F: "KIOXIA", 0x1179: "Toshiba", 0x2646: "Kingston", 0x1344: "Micron",
                0x1987: "Phison", 0x126F: "Silicon Motion", 0x1CC1: "ADATA", 0x1B36: "QEMU"}  # fmt: skip
# leading word of an ATA model number -> maker
_MODEL_VENDORS = {"samsung": "Samsung", "intel": "Intel", "wdc": "Western Digital", "hgst": "HGST",
                  "hitachi": "Hitachi", "toshiba": "Toshiba", "kingston": "Kingston", "crucial": "Crucial",
                  "sandisk": "SanDisk", "micron": "Micron", "qemu": "QEMU", "seagate": "Seagate"}  # fmt: skip


@dataclass(frozen=True)
class DriveInfo:
    """One drive as its tools describe it. ``path`` is the block device (the namespace for NVMe)."""

    device: str  # kernel name: sda, nvme0n1
    path: Path
    size_bytes: int
    logical_sector: int
    interface: str  # one of INTERFACES
    rotational: bool | None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    ata: AtaCaps | None = None
    nvme: NvmeCaps | None = None
    scsi: ScsiCaps | None = None
    hidden: HiddenAreas = field(default_factory=HiddenAreas)
    native_max: NativeMax | None = None  # hdparm -N
    dco_max: int | None = None  # hdparm --dco-identify: real max sectors
    smart: Smart = field(default_factory=Smart)
    tools: dict[str, str] = field(default_factory=dict)  # tool -> version line
    raw: dict[str, str] = field(default_factory=dict)  # "hdparm -I /dev/sda" -> its output, for the record

    @property
    def controller(self) -> Path:
        """The NVMe controller's character device (``/dev/nvme0`` for ``/dev/nvme0n1``); else ``path``."""
        return self.path.parent / controller_of(self.device) if self.interface == "nvme" else self.path

    @property
    def solid_state(self) -> bool | None:
        return None if self.rotational is None else not self.rotational


def interface_of(name: str, transport: str | None) -> str:
    """The interface from lsblk's TRAN, else from the kernel name (``unknown`` for an ``sd`` disk)."""
    known = _TRANSPORTS.get((transport or "").strip().lower())
    if known:
        return known
    for prefix, interface in (("nvme", "nvme"), ("vd", "virtio"), ("mmcblk", "mmc"), ("xvd", "virtio")):
        if name.startswith(prefix):
            return interface
    return "unknown"


def hidden_areas(native: NativeMax | None, dco_max: int | None) -> HiddenAreas:
    """HPA from ``hdparm -N``; DCO when the DCO's real max is above the native max (both known)."""
    if dco_max is None or native is None:
        return HiddenAreas(hpa=native.hpa if native else None, hpa_sectors=native.hidden if native else None)
    return HiddenAreas(
        hpa=native.hpa,
        hpa_sectors=native.hidden,
        dco=dco_max > native.native,
        dco_sectors=max(0, dco_max - native.native),
    )


def _vendor(model: str | None, vendor_id: int | None) -> str | None:
    if vendor_id is not None and vendor_id in _PCI_VENDORS:
        return _PCI_VENDORS[vendor_id]
    first = (model or "").split()[0].lower() if (model or "").split() else ""
    if first in _MODEL_VENDORS:
        return _MODEL_VENDORS[first]
    if first[:2] == "st" and first[2:3].isdigit():  # ST2000DM008
        return "Seagate"
    return None


class _Asker:
    """Runs the queries of one drive, keeping each output for the record."""

    def __init__(self, run: Runner, device: str, log_id: str = "") -> None:
        self.run, self.device, self.log_id = run, device, log_id
        self.raw: dict[str, str] = {}

    def __call__(self, *argv: str) -> Ran:
        ran = run_tool(self.run, argv)
        self.raw[" ".join(ran.argv)] = ran.stdout
        if not ran.ok:
            log.info("%s: %s: %s: %s", self.log_id, self.device, " ".join(ran.argv), ran.tail() or ran.returncode)
        return ran


def inspect_ata(info: DriveInfo, run: Runner, *, log_id: str = "") -> DriveInfo:
    """``info`` with its ATA part (identify, HPA, DCO) asked again (after an HPA/DCO change or a resume)."""
    ask = _Asker(run, info.device, log_id)
    dev = str(info.path)
    identify = ask("hdparm", "-I", dev)
    ata = parse_identify(identify.stdout) if identify.ok else None
    native = dco = None
    if ata is not None:
        answer = ask("hdparm", "-N", dev)
        native = parse_native_max(answer.stdout) if answer.ok else None
        if ata.dco_feature:
            answer = ask("hdparm", "--dco-identify", dev)
            dco = parse_dco(answer.stdout) if answer.ok else None
    hidden = replace(hidden_areas(native, dco), removed=info.hidden.removed)
    sector = (ata.logical_sector if ata else None) or info.logical_sector
    return replace(info, ata=ata, native_max=native, dco_max=dco, hidden=hidden, logical_sector=sector,
                   raw={**info.raw, **ask.raw})  # fmt: skip


def inspect_drive(
    name: str,
    path: Path,
    *,
    size_bytes: int,
    transport: str | None,
    rotational: bool | None,
    model: str | None,
    serial: str | None,
    run: Runner,
    log_id: str = "",
) -> DriveInfo:
    """Ask ``path``'s tools what the drive is and can do (never raises for a tool's failure)."""
    interface = interface_of(name, transport)
    ask = _Asker(run, name, log_id)
    info = DriveInfo(device=name, path=path, size_bytes=size_bytes, logical_sector=512, interface=interface,
                     rotational=rotational, model=model, serial=serial)  # fmt: skip
    tools: list[str] = []
    nvme: NvmeCaps | None = None
    if interface == "nvme":
        tools.append("nvme-cli")
        answer = ask("nvme", "id-ctrl", str(info.controller), "-o", "json")
        nvme = parse_id_ctrl(answer.stdout) if answer.ok else None
        if nvme is not None:
            answer = ask("nvme", "id-ns", str(path), "-o", "json")
            nvme = add_id_ns(nvme, answer.stdout) if answer.ok else nvme
        info = replace(info, nvme=nvme, logical_sector=(nvme.logical_sector if nvme else None) or 512,
                       rotational=False if rotational is None else rotational)  # fmt: skip
    elif interface == "sata" or (interface == "unknown" and name[:2] in ("sd", "hd")):
        tools.append("hdparm")
        info = inspect_ata(info, run, log_id=log_id)
        if info.ata is not None and interface == "unknown":
            info = replace(info, interface="sata")
        elif info.ata is None and interface == "unknown":
            info = replace(info, interface="scsi")
    if info.interface in ("sas", "scsi"):
        tools.append("sg3_utils")
        answer = ask("sg_opcodes", str(path))
        info = replace(info, scsi=parse_opcodes(answer.stdout) if answer.ok else ScsiCaps())
    smart = Smart()
    if info.interface not in ("virtio", "mmc"):
        tools.append("smartmontools")
        answer = ask("smartctl", "-j", "-a", str(path))
        smart = parse_smart(answer.stdout) if answer.returncode is not None else Smart()  # status bits: health
    ata = info.ata
    rotation = info.rotational
    if rotation is None and ata is not None and ata.solid_state is not None:
        rotation = not ata.solid_state
    ident = nvme or ata
    return replace(
        info,
        rotational=rotation,
        model=(ident.model if ident else None) or model,
        serial=(ident.serial if ident else None) or serial,
        firmware=ident.firmware if ident else None,
        vendor=_vendor((ident.model if ident else None) or model, nvme.vendor_id if nvme else None),
        smart=smart,
        tools=tool_versions(run, tools),
        raw={**info.raw, **ask.raw},
    )
