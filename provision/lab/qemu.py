"""One emulated PC of the lab: its QEMU command line, serial log and life cycle.

QEMU runs under TCG (KVM hangs on the lab machines), without default devices or display, with its
serial port in a file. SeaBIOS is told to mirror its console (and so the NIC's iPXE ROM) to the serial
port with ``etc/sercon-port``; OVMF writes its console there by itself.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from provision.errors import FatalError, RetryableError
from provision.lab.disks import LabDisk, disk_paths, disks_argv, disks_problems
from provision.lab.screenshot import ppm_complete, ppm_to_png

log = logging.getLogger(__name__)

Firmware = Literal["bios", "uefi", "uefi-secureboot"]
Nic = Literal["virtio", "e1000", "e1000e"]
Disk = Literal["virtio", "ahci", "nvme"]

QEMU = "qemu-system-x86_64"
OVMF_DIR = Path("/usr/share/OVMF")
# (code, vars template) per UEFI firmware flavour, as named by Debian 12's ovmf package.
OVMF_FILES: dict[str, tuple[str, str]] = {
    "uefi": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    "uefi-secureboot": ("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd"),
}
NIC_DEVICES: dict[str, str] = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e"}
SERCON_PORT = b"\xf8\x03"  # 0x3f8, COM1, little-endian
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class LabError(FatalError):
    """The lab cannot do what was asked (bad PC definition, QEMU stopped, namespace command failed)."""


class LabTimeout(RetryableError):
    """A PC did not show what was awaited on its serial console in time."""


@dataclass(frozen=True)
class PCSpec:
    """What a lab PC is made of."""

    name: str
    mac: str
    tap: str
    firmware: Firmware = "bios"
    nic: Nic = "virtio"
    disk: Disk = "virtio"
    disk_size: int = 1 << 30
    memory: int = 512
    rom: bool | Path = True  # True: QEMU's own ROM; False: none; a path: that ROM file
    cpus: int = 1
    screen: bool = False  # a VGA card and a monitor socket: PC.screendump() saves what its screen shows
    disks: tuple[LabDisk, ...] = ()  # given: exactly these disks instead of ``disk``/``disk_size`` (lab/disks.py)

    def check(self) -> None:
        """Raise LabError for a value QEMU would choke on, naming it."""
        problems = []
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", self.name):
            problems.append(f"name {self.name!r} (letters, digits, _ . - only)")
        if not MAC_RE.match(self.mac):
            problems.append(f"mac {self.mac!r} (lower-case aa:bb:cc:dd:ee:ff)")
        elif int(self.mac[:2], 16) & 1:
            problems.append(f"mac {self.mac!r} is a multicast address")
        if self.firmware not in get_args(Firmware):
            problems.append(f"firmware {self.firmware!r} (one of {', '.join(get_args(Firmware))})")
        if self.nic not in get_args(Nic):
            problems.append(f"nic {self.nic!r} (one of {', '.join(get_args(Nic))})")
        if self.disk not in get_args(Disk):
            problems.append(f"disk {self.disk!r} (one of {', '.join(get_args(Disk))})")
        if self.disk_size < 1 << 20 or self.disk_size % 512:
            problems.append(f"disk_size {self.disk_size} (at least 1 MiB, a multiple of 512)")
        if isinstance(self.rom, Path) and not self.rom.is_file():
            problems.append(f"rom {self.rom} (no such file)")
        if not 64 <= self.memory <= 16384:
            problems.append(f"memory {self.memory} MiB (64..16384)")
        problems += disks_problems(self.disks)
        if problems:
            raise LabError(f"PC {self.name}: bad " + "; bad ".join(problems), pc=self.name)


def firmware_files(firmware: Firmware, ovmf_dir: Path | None = None) -> tuple[Path, Path] | None:
    """OVMF code and variables template for a UEFI flavour (in ``ovmf_dir``, default OVMF_DIR); None for SeaBIOS."""
    names = OVMF_FILES.get(firmware)
    base = ovmf_dir or OVMF_DIR
    return None if names is None else (base / names[0], base / names[1])


def _no_comma(path: Path) -> str:
    text = str(path)
    if "," in text:
        raise LabError(f"{text}: QEMU option paths must not contain ','", path=text)
    return text


MONITOR = "monitor.sock"  # a PC's QEMU monitor (HMP), in its folder, when it has a screen


def qemu_argv(spec: PCSpec, *, disk: Path, serial: Path, sercon: Path, vars_file: Path | None) -> list[str]:
    """The QEMU command line of one PC (network first, then its disk)."""
    argv = [QEMU, "-name", spec.name, "-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot"]
    argv += ["-m", str(spec.memory), "-smp", str(spec.cpus), "-serial", f"file:{_no_comma(serial)}"]
    files = firmware_files(spec.firmware)
    if files is None:
        argv += ["-machine", "pc", "-fw_cfg", f"name=etc/sercon-port,file={_no_comma(sercon)}"]
    else:
        if vars_file is None:
            raise LabError(f"PC {spec.name}: UEFI needs a variables file", pc=spec.name)
        code, _template = files
        if spec.firmware == "uefi-secureboot":
            argv += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
            argv += ["-global", "ICH9-LPC.disable_s3=1"]
        else:
            argv += ["-machine", "q35"]
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_no_comma(code)}"]
        argv += ["-drive", f"if=pflash,format=raw,unit=1,file={_no_comma(vars_file)}"]
    nic = f"{NIC_DEVICES[spec.nic]},netdev=net0,mac={spec.mac},bootindex=0"
    if spec.rom is False:
        nic += ",romfile="
    elif isinstance(spec.rom, Path):
        nic += f",romfile={_no_comma(spec.rom)}"
        if spec.nic == "virtio":
            # Debian 13's virtio ROMs match only the modern device id (1af4:1041): SeaBIOS skips them on
            # QEMU's default transitional device (1af4:1000).
            nic += ",disable-legacy=on"
    argv += ["-netdev", f"tap,id=net0,ifname={spec.tap},script=no,downscript=no", "-device", nic]
    if spec.screen:
        monitor = disk.parent / MONITOR
        argv += ["-device", "VGA", "-monitor", f"unix:{_no_comma(monitor)},server=on,wait=off"]
    if spec.disks:
        paths = [Path(_no_comma(path)) for path in disk_paths(disk, len(spec.disks))]
        return argv + disks_argv(spec.disks, paths, spec.name)
    argv += ["-drive", f"if=none,id=disk0,format=raw,cache=unsafe,file={_no_comma(disk)}"]
    if spec.disk == "virtio":
        argv += ["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]
    elif spec.disk == "ahci":
        argv += ["-device", "ahci,id=ahci0", "-device", "ide-hd,drive=disk0,bus=ahci0.0,bootindex=1"]
    else:
        argv += ["-device", f"nvme,drive=disk0,serial={spec.name[:20]},bootindex=1"]
    return argv


class PC:
    """A running lab PC. Created by ``Lab.add_pc``; stopped by ``stop()`` or when the lab closes."""

    def __init__(self, spec: PCSpec, workdir: Path, process: subprocess.Popen[bytes], started: float) -> None:
        self.spec = spec
        self.workdir = workdir
        self.process = process
        self.started = started  # time.monotonic() when QEMU was started
        self.stopped: float | None = None

    name = property(lambda self: self.spec.name)
    mac = property(lambda self: self.spec.mac)
    firmware = property(lambda self: self.spec.firmware)

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def disk_path(self) -> Path:
        return self.workdir / "disk.raw"

    @property
    def disk_paths(self) -> list[Path]:
        """Every disk's file, in the order of ``spec.disks`` (one file for a PC without ``disks``)."""
        return disk_paths(self.disk_path, max(1, len(self.spec.disks)))

    def screendump(self, png: Path, timeout: float = 10.0) -> Path:
        """Save what the PC's screen shows now as ``png`` (a PC made with ``screen=True``), through QEMU's
        monitor (``screendump``, a PPM) converted here. LabError when it has no screen or QEMU does not answer."""
        if not self.spec.screen:
            raise LabError(f"PC {self.name} has no screen (add it with screen=True)", pc=self.name)
        ppm = self.workdir / f"screen-{time.monotonic_ns()}.ppm"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mon:
                mon.settimeout(timeout)
                mon.connect(str(self.workdir / MONITOR))
                mon.sendall(f"screendump {ppm}\n".encode())
                deadline = time.monotonic() + timeout
                while not ppm_complete(ppm):
                    if time.monotonic() > deadline:
                        raise LabError(f"PC {self.name}: no screendump within {timeout:.0f} s", pc=self.name)
                    time.sleep(0.1)
        except OSError as exc:
            raise LabError(f"PC {self.name}: QEMU's monitor did not answer: {exc}", pc=self.name) from exc
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(ppm_to_png(ppm.read_bytes()))
        ppm.unlink()
        return png

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        if self.process.poll() is None:
            return True
        self._mark_stopped()
        return False

    @property
    def elapsed(self) -> float:
        """Seconds since QEMU started (until it stopped, if it did)."""
        end = None if self.running else self.stopped
        return (end if end is not None else time.monotonic()) - self.started

    def serial_text(self) -> str:
        """Everything the PC wrote to its serial port so far (control characters kept)."""
        try:
            return self.serial_log.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 15) -> str:
        """The last non-empty lines of the serial log, without terminal escape sequences."""
        text = re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|c)| ?\x08", "", self.serial_text()).replace("\r", "\n")
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        *,
        fail: str | re.Pattern[str] | None = None,
        poll: float = 0.2,
    ) -> re.Match[str]:
        """Wait until the serial log matches ``pattern`` (a regex); the match.

        Raises LabTimeout after ``timeout`` seconds; LabError as soon as QEMU has stopped without
        printing it, or the log matches ``fail`` (e.g. ``No bootable device|Kernel panic``) first.
        Both carry the end of the serial log.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        bad = re.compile(fail) if isinstance(fail, str) else fail
        deadline = time.monotonic() + timeout
        while True:
            exited = not self.running
            text = self.serial_text()
            found = regex.search(text)
            if found:
                return found
            failed = bad.search(text) if bad is not None else None
            if failed:
                raise LabError(
                    f"PC {self.name} printed {failed.group(0)!r} after {self.elapsed:.1f} s while waiting for "
                    f"{regex.pattern!r}; serial log ends:\n{self.tail()}",
                    pc=self.name,
                    pattern=regex.pattern,
                    failure=failed.group(0),
                )
            if exited:
                code = self.process.returncode
                raise LabError(
                    f"PC {self.name} stopped (exit {code}) after {self.elapsed:.1f} s without printing "
                    f"{regex.pattern!r}; serial log ends:\n{self.tail()}",
                    pc=self.name,
                    pattern=regex.pattern,
                    returncode=code,
                )
            if time.monotonic() >= deadline:
                raise LabTimeout(
                    f"PC {self.name}: no {regex.pattern!r} on serial within {timeout:.0f} s; "
                    f"serial log ends:\n{self.tail()}",
                    pc=self.name,
                    pattern=regex.pattern,
                    timeout=timeout,
                )
            time.sleep(poll)

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit (the guest powered off); its exit code. LabTimeout if still running."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabTimeout(
                f"PC {self.name} still running after {timeout:.0f} s; serial log ends:\n{self.tail()}",
                pc=self.name,
                timeout=timeout,
            ) from exc
        self._mark_stopped()
        return code

    def _mark_stopped(self) -> None:
        if self.stopped is None:
            self.stopped = time.monotonic()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop QEMU (SIGTERM, then SIGKILL) by its PID. Safe to call twice."""
        if self.process.poll() is None:
            log.debug("stopping PC %s (pid %d)", self.name, self.pid)
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._mark_stopped()


def missing_qemu(firmware: Firmware = "bios") -> list[str]:
    """What QEMU needs on this machine for ``firmware`` and is missing (empty: all there)."""
    missing = []
    if shutil.which(QEMU) is None:
        missing.append(f"{QEMU} (Debian package qemu-system-x86)")
    files = firmware_files(firmware)
    if files is not None:
        missing += [f"{path} (Debian package ovmf)" for path in files if not path.exists()]
    return missing
