"""The lab: a private network namespace with a bridge, taps and the processes (QEMU PCs, servers) in it.

Everything the lab creates is undone on exit, failure or Ctrl-C: processes are killed by PID, then the
namespace is deleted (its bridge and taps go with it). A lab left behind by a killed run
(``prov-<pid>-<n>`` whose pid is gone) is removed when the next lab starts (`provision.lab.host`, which also
checks this machine's prerequisites; its names are re-exported here).
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from provision.lab.disks import LabDisk, create_disk_files
from provision.lab.host import (
    cleanup_stale_labs,
    kill_pid,
    new_lab_name,
    require,
    run_ip,
)
from provision.lab.qemu import (
    PC,
    SERCON_PORT,
    Disk,
    Firmware,
    LabError,
    LabTimeout,
    Nic,
    PCSpec,
    firmware_files,
    qemu_argv,
)

__all__ = ["LAB_NETWORKS", "Lab"]

log = logging.getLogger(__name__)

LAB_NETWORKS = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range, never routed
_open_labs: set[Lab] = set()  # strong refs: a lab dropped without close() is still closed at exit
_lock = threading.Lock()


class Lab:
    """A network namespace with bridge ``br0`` (198.18.0.1/24 by default), taps and tracked processes.

    Use as a context manager::

        with Lab() as lab:
            lab.popen(["dnsmasq", ...])
            pc = lab.add_pc("pc1", firmware="uefi-secureboot", rom=False)
            pc.wait_for("PROVISION-CALLBACK-OK", 120)
    """

    def __init__(
        self,
        network: str = "198.18.0.0/24",
        *,
        bridge: str = "br0",
        workdir: Path | None = None,
        keep_files: bool = False,
    ) -> None:
        self.network = ipaddress.IPv4Network(network)
        if not self.network.subnet_of(LAB_NETWORKS) or self.network.prefixlen > 30:
            raise LabError(f"lab network {network} must be a /30 or larger inside {LAB_NETWORKS}", network=network)
        self.address = self.host(1)
        self.bridge = bridge
        self.name = new_lab_name()
        self._workdir_arg = workdir
        self.workdir = Path()
        self.keep_files = keep_files
        self.pcs: list[PC] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self._taps = 0
        self._created = False
        self._closed = False

    def host(self, index: int) -> ipaddress.IPv4Address:
        """The ``index``-th address of the lab network (1 is the bridge, i.e. the servers)."""
        address = self.network.network_address + index
        if address not in self.network or address in (self.network.network_address, self.network.broadcast_address):
            raise LabError(f"host {index} is outside {self.network}", network=str(self.network))
        return address

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.network.prefixlen}"

    # --- life cycle ---

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Create the namespace, ``lo``, the bridge with the lab address. Undone by ``close()``."""
        require(())
        cleanup_stale_labs()
        if self._workdir_arg is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        else:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        with _lock:
            _open_labs.add(self)
        try:
            run_ip("netns", "add", self.name)
            self._created = True
            for key in ("all", "default"):
                self.run(["tee", f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6"], input="1\n")
            self.ip("link", "set", "lo", "up")
            self.ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
            self.ip("addr", "add", self.cidr, "dev", self.bridge)
            self.ip("link", "set", self.bridge, "up")
            (self.workdir / "sercon-port").write_bytes(SERCON_PORT)
        except BaseException:
            self.close()
            raise
        log.info("lab %s up: %s on %s, files in %s", self.name, self.cidr, self.bridge, self.workdir)

    def close(self) -> None:
        """Kill every process of the lab by PID, delete the namespace, remove the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for pc in self.pcs:
            pc.stop(timeout=3)
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for handle in self._files:
            handle.close()
        if self._created:
            # Anything that escaped (a child's child) still holds the namespace: kill it too.
            for pid in run_ip("netns", "pids", self.name, check=False).stdout.split():
                kill_pid(int(pid))
            run_ip("netns", "delete", self.name, check=False)
        if not self.keep_files and self._workdir_arg is None and self.workdir != Path():
            shutil.rmtree(self.workdir, ignore_errors=True)
        with _lock:
            _open_labs.discard(self)
        log.info("lab %s down", self.name)

    # --- commands in the namespace ---

    def _check_open(self) -> None:
        if not self._created or self._closed:
            raise LabError(f"lab {self.name} is not running", lab=self.name)

    def ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ip -n NS ARGS``; LabError when it fails."""
        return run_ip("-n", self.name, *args)

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace to completion, output captured; LabError if it fails."""
        self._check_open()
        full = ["ip", "netns", "exec", self.name, *argv]
        try:
            done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LabTimeout(f"{argv[0]} timed out after {timeout:.0f} s in lab {self.name}", argv=list(argv)) from exc
        if check and done.returncode != 0:
            raise LabError(
                f"{' '.join(argv)} failed ({done.returncode}) in lab {self.name}: {done.stderr.strip()[-2000:]}",
                argv=list(argv),
                returncode=done.returncode,
            )
        return done

    def popen(self, argv: Sequence[str], *, log_name: str | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace, stdout+stderr to ``workdir/<log_name>.log``.

        The process is tracked by PID and killed when the lab closes. Extra keyword arguments go to
        ``subprocess.Popen`` (e.g. ``cwd``, ``env``).
        """
        self._check_open()
        name = log_name or Path(argv[0]).name
        out = (self.workdir / f"{name}.log").open("ab")
        self._files.append(out)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", out)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv], start_new_session=True, **kwargs
        )
        self._procs.append(proc)
        log.debug("lab %s: started pid %d: %s", self.name, proc.pid, argv)
        return proc

    def log_path(self, log_name: str) -> Path:
        return self.workdir / f"{log_name}.log"

    def add_tap(self) -> str:
        """A new tap interface on the bridge; its name."""
        self._check_open()
        tap = f"tap{self._taps}"
        self._taps += 1
        self.ip("tuntap", "add", "dev", tap, "mode", "tap")
        self.ip("link", "set", tap, "master", self.bridge, "up")
        return tap

    def wait_tcp(self, port: int, timeout: float = 10.0, host: str | None = None) -> None:
        """Wait until something accepts TCP connections on ``host:port`` inside the namespace."""
        target = host or str(self.address)
        code = (
            "import socket,sys,time\n"
            "end=time.monotonic()+float(sys.argv[3])\n"
            "while True:\n"
            " try:\n"
            "  socket.create_connection((sys.argv[1],int(sys.argv[2])),1).close(); break\n"
            " except OSError:\n"
            "  if time.monotonic()>end: sys.exit(1)\n"
            "  time.sleep(0.05)\n"
        )
        done = self.run(
            [sys.executable, "-c", code, target, str(port), str(timeout)], check=False, timeout=timeout + 10
        )
        if done.returncode != 0:
            raise LabTimeout(f"nothing listens on {target}:{port} in lab {self.name} after {timeout:.0f} s", port=port)

    # --- PCs ---

    def add_pc(
        self,
        name: str,
        firmware: Firmware = "bios",
        nic: Nic = "virtio",
        disk: Disk = "virtio",
        disk_size: int = 1 << 30,
        mac: str | None = None,
        memory: int = 512,
        rom: bool | Path = True,
        screen: bool = False,
        disks: Sequence[LabDisk] = (),
    ) -> PC:
        """Start a QEMU PC on a new tap: blank sparse disk, network boot first, serial to a file.

        ``rom=False`` gives the NIC no option ROM: under OVMF the firmware's own PXE client then does
        DHCP (arch 7) and TFTP like a real PC (QEMU's ROMs are iPXE). SeaBIOS cannot netboot without it.
        ``rom=Path`` uses that ROM file instead of QEMU's, e.g. Debian 13's ``efi-virtio.rom`` (iPXE 2025,
        no 13 s wait after DHCP; see ``provision.bootfiles.qemu_roms``). ``screen=True`` gives it a VGA card
        whose picture ``PC.screendump`` saves. ``disks`` (``LabDisk``: nvme, sata, virtio, each with its size,
        serial and initial content) replaces the single ``disk``/``disk_size`` disk (provision/lab/disks.py).
        """
        self._check_open()
        require((firmware,))
        index = len(self.pcs) + 1
        spec = PCSpec(
            name=name,
            mac=(mac or f"52:54:00:12:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}").lower(),
            tap="",
            firmware=firmware,
            nic=nic,
            disk=disk,
            disk_size=disk_size,
            memory=memory,
            rom=rom,
            screen=screen,
            disks=tuple(disks),
        )
        spec.check()
        if any(pc.name == name for pc in self.pcs):
            raise LabError(f"lab {self.name} already has a PC named {name}", pc=name)
        if any(pc.mac == spec.mac for pc in self.pcs):
            raise LabError(f"lab {self.name} already has a PC with MAC {spec.mac}", pc=name, mac=spec.mac)
        pc_dir = self.workdir / name
        pc_dir.mkdir()
        if spec.disks:
            create_disk_files(spec.disks, pc_dir / "disk.raw")
        else:
            with (pc_dir / "disk.raw").open("wb") as disk_file:
                disk_file.truncate(disk_size)
        vars_file = None
        files = firmware_files(firmware)
        if files is not None:
            vars_file = pc_dir / "OVMF_VARS.fd"
            shutil.copyfile(files[1], vars_file)
        spec = PCSpec(**{**spec.__dict__, "tap": self.add_tap()})
        pc = self._launch(spec, pc_dir, vars_file)
        self.pcs.append(pc)
        log.info("lab %s: PC %s (%s, %s, %s) pid %d on %s", self.name, name, firmware, nic, disk, pc.pid, spec.tap)
        return pc

    def _launch(self, spec: PCSpec, pc_dir: Path, vars_file: Path | None) -> PC:
        argv = qemu_argv(
            spec,
            disk=pc_dir / "disk.raw",
            serial=pc_dir / "serial.log",
            sercon=self.workdir / "sercon-port",
            vars_file=vars_file,
        )
        (pc_dir / "serial.log").touch()
        started = time.monotonic()
        proc = self.popen(argv, log_name=f"{spec.name}/qemu")
        return PC(spec, pc_dir, proc, started)

    def power_on(self, pc: PC) -> PC:
        """Start a PC that stopped (powered off, or rebooted: QEMU runs with -no-reboot) again, with the same
        disk, firmware variables, tap and MAC, like pressing its power button. The previous serial log is
        kept as ``serial.<n>.log``; the returned PC replaces ``pc`` in ``self.pcs``."""
        self._check_open()
        if pc.running:
            raise LabError(f"PC {pc.name} is still running", pc=pc.name)
        n = 1
        while (pc.workdir / f"serial.{n}.log").exists():
            n += 1
        pc.serial_log.rename(pc.workdir / f"serial.{n}.log")
        vars_file = pc.workdir / "OVMF_VARS.fd"
        new = self._launch(pc.spec, pc.workdir, vars_file if vars_file.exists() else None)
        self.pcs[self.pcs.index(pc)] = new
        log.info("lab %s: PC %s powered on again, pid %d", self.name, pc.name, new.pid)
        return new


@atexit.register
def _close_open_labs() -> None:
    with _lock:
        labs = list(_open_labs)
    for lab in labs:
        lab.close()
