"""The tiny image boots from a disk made by the store's export: SeaBIOS, OVMF, and OVMF with Secure Boot on.

images/tiny.yaml is built into a temporary store, exported (disk.img.zst + disk.bmap) and decompressed
into each PC's disk file. The PCs boot from their disk (their NIC has no option ROM and no boot index),
the tiny init prints ``PROVISION-TINY-FIRSTBOOT <label>`` on the serial port, gets a DHCP lease (dnsmasq,
no boot options) and POSTs {mac, image, label, firmware, secure_boot} to the definition's callback URL
(http://198.18.0.1:8080/api/v1/firstboot, answered here by a small recorder), then powers off. The three
PCs run at once (~25-60 s under TCG).

Needs root, qemu-system-x86, ovmf, dnsmasq-base, the image build tools, and the Debian package cache
($PROVISION_DEB_CACHE, default /var/cache/provision/debs).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.bootfiles import DebCache
from provision.builder import build_image
from provision.builder.tinyinit import CALLBACK_OK, FIRSTBOOT_MARKER
from provision.images.store import ImageStore
from provision.lab import PC, Lab, PCSpec, missing_prerequisites, qemu_argv
from provision.lab.qemu import Firmware, firmware_files
from tests.support.e2e import start_site_dhcp
from tests.support.images import unzstd_file
from tests.support.paths import DEB_CACHE, IMAGES

pytestmark = pytest.mark.e2e

TINY = IMAGES / "tiny.yaml"
PORT = 8080
BOOT_TIMEOUT = 240.0  # generous for a busy CI machine; measured 15-40 s per PC
FAIL = (
    r"No bootable device|Kernel panic|PROVISION-TINY-FAILED|Access Denied|Verification failed"
    r"|error: (?!no suitable video)"  # GRUB's errors, but OVMF without a display has no video mode: harmless
)
FIRMWARES: tuple[Firmware, ...] = ("bios", "uefi", "uefi-secureboot")
MACS = {"bios": "52:54:00:18:02:01", "uefi": "52:54:00:18:02:02", "uefi-secureboot": "52:54:00:18:02:03"}
BUILD_TOOLS = ("sfdisk", "mkfs.fat", "mke2fs", "e2fsck", "mcopy", "grub-mkimage")

# The callback recorder: one JSON line per POST (any path) into argv[3]; run inside the lab namespace.
RECORDER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        with open(sys.argv[3], "a") as out:
            out.write(json.dumps({"path": self.path, "body": body}) + "\\n")
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\\n")
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
"""


@dataclass(frozen=True)
class TinyDisk:
    raw: Path  # the decompressed export
    label: str
    digest: str


def _skip_unless_ready() -> None:
    missing = missing_prerequisites(list(FIRMWARES))
    missing += [f"{tool}" for tool in (*BUILD_TOOLS, "dnsmasq") if shutil.which(tool) is None]
    if missing:
        pytest.skip("image boot test unavailable: " + "; ".join(missing))


@pytest.fixture(scope="module")
def tiny_disk(tmp_path_factory: pytest.TempPathFactory) -> TinyDisk:
    _skip_unless_ready()
    tmp = tmp_path_factory.mktemp("tiny")
    store = ImageStore(tmp / "store")
    result = build_image(TINY, store, cache=DebCache(DEB_CACHE), workdir=tmp / "work", log_dir=tmp / "logs")
    zst, bmap = store.export("tiny", tmp / "export")
    assert bmap.is_file()
    raw = tmp / "disk.raw"
    unzstd_file(zst, raw)
    assert raw.stat().st_size == result.disk_size
    return TinyDisk(raw, result.label, result.version.digest)


def start_from_disk(lab: Lab, name: str, firmware: Firmware, mac: str, disk: Path) -> PC:
    """A lab PC whose disk is a copy of ``disk`` and that boots it: the NIC has no ROM and no boot index.

    (``Lab.add_pc`` starts a blank disk with the network first; see docs/image-build.md for the Lab change.)
    """
    pc_dir = lab.workdir / name
    pc_dir.mkdir()
    shutil.copyfile(disk, pc_dir / "disk.raw")  # the sparse export stays sparse enough for a 128 MiB disk
    vars_file = None
    files = firmware_files(firmware)
    if files is not None:
        vars_file = pc_dir / "OVMF_VARS.fd"
        shutil.copyfile(files[1], vars_file)
    spec = PCSpec(name=name, mac=mac, tap=lab.add_tap(), firmware=firmware, disk_size=disk.stat().st_size, rom=False)
    spec.check()
    argv = qemu_argv(
        spec,
        disk=pc_dir / "disk.raw",
        serial=pc_dir / "serial.log",
        sercon=lab.workdir / "sercon-port",
        vars_file=vars_file,
    )
    argv = [arg.replace(",bootindex=0", "") if arg.startswith("virtio-net-pci,") else arg for arg in argv]
    (pc_dir / "serial.log").touch()
    started = time.monotonic()
    proc = lab.popen(argv, log_name=f"{name}/qemu")
    pc = PC(spec, pc_dir, proc, started)
    lab.pcs.append(pc)
    return pc


@dataclass
class BootLab:
    lab: Lab
    record: Path
    pcs: dict[str, PC]

    def callbacks(self, mac: str) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        bodies = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        found = []
        for entry in bodies:
            try:
                body = json.loads(entry["body"])
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("mac") == mac:
                found.append({"path": entry["path"], **body})
        return found


@pytest.fixture(scope="module")
def boot_lab(tiny_disk: TinyDisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootLab]:
    workdir = tmp_path_factory.mktemp("lab")
    with Lab(workdir=workdir) as lab:
        record = workdir / "callbacks.jsonl"
        start_site_dhcp(lab)  # addresses only, no boot options: the PCs boot their disk
        lab.popen([sys.executable, "-c", RECORDER, str(lab.address), str(PORT), str(record)], log_name="recorder")
        lab.wait_tcp(PORT)
        pcs: dict[str, PC] = {fw: start_from_disk(lab, f"tiny-{fw}", fw, MACS[fw], tiny_disk.raw) for fw in FIRMWARES}
        yield BootLab(lab, record, pcs)


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_tiny_image_boots(boot_lab: BootLab, tiny_disk: TinyDisk, firmware: str, timing) -> None:
    pc = boot_lab.pcs[firmware]
    marker = pc.wait_for(rf"{FIRSTBOOT_MARKER} (\S+)", BOOT_TIMEOUT, fail=FAIL)
    timing(f"{firmware}: first-boot marker", pc.elapsed)
    assert marker.group(1) == tiny_disk.label
    pc.wait_for(rf"{CALLBACK_OK}|PROVISION-TINY-CALLBACK-FAILED.*", BOOT_TIMEOUT, fail=FAIL)
    timing(f"{firmware}: callback", pc.elapsed)
    text = pc.serial_text()
    assert CALLBACK_OK in text, pc.tail()
    assert pc.wait_exit(60) == 0  # the init powers off; -no-reboot ends QEMU
    timing(f"{firmware}: powered off", pc.elapsed)
    assert ("Secure boot enabled" in text) == (firmware == "uefi-secureboot")
    if firmware == "bios":
        assert "GRUB loading" in text  # the BIOS chain: boot.img -> core.img in the BIOS boot partition
    (callback,) = boot_lab.callbacks(pc.mac)
    assert callback["path"] == "/api/v1/firstboot"
    assert callback["event"] == "firstboot"
    assert (callback["image"], callback["label"]) == ("tiny", tiny_disk.label)
    assert callback["firmware"] == ("bios" if firmware == "bios" else "uefi")
    assert callback["secure_boot"] is (firmware == "uefi-secureboot")
    assert len(str(callback["machine_id"])) == 32
