"""``provision serve`` as a real process on 127.0.0.1, every port 0 (functional tests).

- ``Running``: the process, the ports of its ready file, its boot root and state folder; ``url`` of its HTTP.
- ``start(tmp_path, *extra, wait)``: a boot root with a fake undionly.kpxe and kernel under ``tmp_path``, then
  ``python -m provision serve`` with ``extra`` arguments, waited for (its ready file) unless ``wait=False``.
- ``stop(run)``: SIGTERM; (exit code, stdout, stderr).
- ``netboot(run, mac)``: what a PC's PXE ROM does first: a PXE DHCPDISCOVER from ``mac`` to the server's DHCP
  port, answered (the server then knows the PC network-booted: a run in flight may get a new token).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from provision.dhcp import MessageType, client_request
from tests.support.wait import wait_for

START_TIMEOUT = 20.0


@dataclass
class Running:
    proc: subprocess.Popen[str]
    ports: dict[str, int]
    root: Path
    state: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"


def start(tmp_path: Path, *extra: str, wait: bool = True) -> Running:
    """``provision serve`` on ``tmp_path``'s boot root and state; its ready file read when ``wait``."""
    root = tmp_path / "boot"
    root.mkdir(exist_ok=True)
    (root / "undionly.kpxe").write_bytes(os.urandom(70_000))
    (root / "live").mkdir(exist_ok=True)
    (root / "live" / "vmlinuz").write_bytes(b"kernel" * 1000)
    state = tmp_path / "state"
    ready = tmp_path / "ready.json"
    ready.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "provision", "serve", "--address", "127.0.0.1", "--state-dir", str(state),
        "--boot-root", str(root), "--http-port", "0", "--tftp-port", "0", "--dhcp-port", "0", "--proxy-port", "0",
        "--ready-file", str(ready), *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        wait_for(lambda: ready.exists() or proc.poll() is not None, START_TIMEOUT, interval=0.05)
        if not ready.exists():
            out, err = proc.communicate(timeout=5)
            raise AssertionError(f"serve did not start: rc={proc.returncode}\n{out}\n{err}")
    ports = json.loads(ready.read_text()) if wait else {}
    return Running(proc, ports, root, state)


def stop(run: Running) -> tuple[int, str, str]:
    """SIGTERM the server; (exit code, stdout, stderr)."""
    run.proc.send_signal(signal.SIGTERM)
    out, err = run.proc.communicate(timeout=15)
    return run.proc.returncode, out, err


PXE_OPTIONS = {60: b"PXEClient:Arch:00000:UNDI:002001", 93: b"\x00\x00"}


def netboot(run: Running, mac: str, timeout: float = 5.0) -> None:
    """A PXE DHCPDISCOVER from ``mac`` to the server (proxy or full DHCP on 127.0.0.1), and its answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        packet = client_request(MessageType.DISCOVER, mac, xid=0x5E7B007, options=PXE_OPTIONS)
        sock.sendto(packet.encode(), ("127.0.0.1", run.ports["dhcp"]))
        sock.recvfrom(4096)
