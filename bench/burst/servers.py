"""The files the servers serve, and starting/stopping one side: provision, or dnsmasq + tftpd-hpa + nginx."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .common import (
    BLKSIZE,
    BOOT_FILE,
    HTTP_PORT,
    NETMASK,
    RANGE_END,
    RANGE_START,
    REPO,
    SERVER_IP,
    TFTP_PORT,
    BenchError,
)
from .measure import CpuCgroup, kill_pids, process_tree


@dataclass
class Files:
    root: Path
    boot: Path  # TFTP root and provision's boot_root: undionly.kpxe
    www: Path  # nginx root: boot/<mac>.ipxe
    content: bytes
    macs: list[str]

    @property
    def boot_file(self) -> Path:
        return self.boot / BOOT_FILE

    def script(self, mac: str) -> Path:
        return self.www / "boot" / f"{mac}.ipxe"


def static_script(mac: str) -> str:
    """About what provision renders for an unknown machine (its template, a fixed token)."""
    url = f"http://{SERVER_IP}:{HTTP_PORT}"
    token = uuid.uuid5(uuid.NAMESPACE_URL, mac).hex
    return (
        "#!ipxe\n"
        f"echo provision: {mac} -> live environment\n"
        f"kernel {url}/files/live/vmlinuz initrd=initrd.img console=ttyS0,115200n8 console=tty0 quiet "
        f"provision.server={url} provision.mac={mac} provision.token={token} || goto failed\n"
        f"initrd --name initrd.img {url}/files/live/initrd.img || goto failed\n"
        "boot || goto failed\n"
        ":failed\n"
        "echo provision: live environment failed to load, retrying in 10 s\n"
        "sleep 10\n"
        f"chain --replace --autofree {url}/boot/${{mac}}.ipxe\n"
    )


def make_files(root: Path, clients: int, size: int) -> Files:
    boot = root / "boot"
    www = root / "www"
    (www / "boot").mkdir(parents=True)
    boot.mkdir()
    content = random.Random(20261101).randbytes(size)
    files = Files(root, boot, www, content, [f"52:54:00:b0:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(1, clients + 1)])
    files.boot_file.write_bytes(content)
    for mac in files.macs:
        files.script(mac).write_text(static_script(mac))
    return files


def nginx_config(prefix: Path, www: Path) -> str:
    temp = prefix / "tmp"
    paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# boot_burst: static boot scripts, one worker (provision serves HTTP from one process too)
user nobody nogroup;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
{paths}
    server {{
        listen {SERVER_IP}:{HTTP_PORT};
        root {www};
        location /boot/ {{ }}
    }}
}}
"""


@dataclass
class Started:
    side: str
    procs: list[subprocess.Popen[bytes]]
    names: list[str]
    logs: list[str]
    udp: list[int]
    tcp: list[int]
    ready_file: Path | None = None


class Servers:
    """Starts and stops one side's servers in the lab namespace, each in the run's cgroup."""

    def __init__(self, lab: Any, files: Files, *, nginx: bool) -> None:
        self.lab = lab
        self.files = files
        self.nginx = nginx

    def _popen(self, argv: list[str], log: str, group: CpuCgroup | None, **kwargs: Any) -> subprocess.Popen[bytes]:
        enter: Callable[[], None] | None = group.enter if group is not None else None
        proc: subprocess.Popen[bytes] = self.lab.popen(argv, log_name=log, preexec_fn=enter, **kwargs)
        return proc

    def start(self, side: str, run_dir: Path, group: CpuCgroup | None) -> Started:
        run_dir.mkdir(parents=True)
        tag = run_dir.name
        if side == "provision":
            config = run_dir / "provision.yaml"
            dhcp = {"mode": "full", "range_start": RANGE_START, "range_end": RANGE_END, "netmask": NETMASK}
            config.write_text(yaml.safe_dump({"dhcp": dhcp}))
            ready = run_dir / "ready.json"
            argv = [
                sys.executable, "-m", "provision", "serve",
                "--interface", "br0", "--address", SERVER_IP, "--dhcp", "full",
                "--state-dir", str(run_dir / "state"), "--boot-root", str(self.files.boot),
                "--config", str(config), "--http-port", str(HTTP_PORT), "--ready-file", str(ready),
            ]  # fmt: skip
            proc = self._popen(argv, f"{tag}-provision", group, cwd=str(REPO))
            return Started(side, [proc], ["provision"], [f"{tag}-provision"], [67, 4011, TFTP_PORT], [HTTP_PORT], ready)
        dnsmasq = [
            "dnsmasq", "--keep-in-foreground", "--port=0", "--bind-interfaces", "--interface=br0", "--no-ping",
            "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--log-facility=-", "--quiet-dhcp",
            f"--pid-file={run_dir / 'dnsmasq.pid'}", f"--dhcp-leasefile={run_dir / 'dnsmasq.leases'}",
            f"--dhcp-range={RANGE_START},{RANGE_END},{NETMASK},1h",
            "--dhcp-match=set:bios,option:client-arch,0", f"--dhcp-boot=tag:bios,{BOOT_FILE},,{SERVER_IP}",
        ]  # fmt: skip
        tftpd = [
            "in.tftpd", "--foreground", "--ipv4", "--address", f"{SERVER_IP}:{TFTP_PORT}", "--secure",
            "--blocksize", str(BLKSIZE), str(self.files.boot),
        ]  # fmt: skip
        procs = [self._popen(dnsmasq, f"{tag}-dnsmasq", group), self._popen(tftpd, f"{tag}-tftpd", group)]
        names, logs, tcp = ["dnsmasq", "in.tftpd"], [f"{tag}-dnsmasq", f"{tag}-tftpd"], []
        if self.nginx:
            prefix = run_dir / "nginx"
            (prefix / "tmp").mkdir(parents=True)
            conf = prefix / "nginx.conf"
            conf.write_text(nginx_config(prefix, self.files.www))
            argv = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
            procs.append(self._popen(argv, f"{tag}-nginx", group))
            names.append("nginx")
            logs.append(f"{tag}-nginx")
            tcp.append(HTTP_PORT)
        return Started(side, procs, names, logs, [67, TFTP_PORT], tcp)

    def _listening(self) -> tuple[set[int], set[int]]:
        out = self.lab.run(["ss", "-H", "-l", "-n", "-u", "-t"], check=False).stdout
        udp: set[int] = set()
        tcp: set[int] = set()
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[4].rpartition(":")[2].isdigit():
                (udp if fields[0] == "udp" else tcp).add(int(fields[4].rpartition(":")[2]))
        return udp, tcp

    def wait_ready(self, started: Started, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for proc, name, log in zip(started.procs, started.names, started.logs, strict=True):
                if proc.poll() is not None:
                    tail = self.lab.log_path(log).read_text(errors="replace")[-1500:]
                    raise BenchError(f"{name} exited with status {proc.returncode} at start:\n{tail}")
            udp, tcp = self._listening()
            ready = started.ready_file is None or started.ready_file.exists()
            if ready and set(started.udp) <= udp and set(started.tcp) <= tcp:
                return
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{started.side} not ready after {timeout:.0f} s: listening udp {sorted(udp)}, tcp {sorted(tcp)}"
                )
            time.sleep(0.1)

    def stop(self, started: Started, group: CpuCgroup | None) -> None:
        pids = process_tree(p.pid for p in started.procs) | set(group.pids() if group else [])
        for proc in started.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in started.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        kill_pids(pids)  # children left behind (tftpd-hpa transfer processes, nginx workers)
        if group is not None:
            kill_pids(group.pids())
