"""`provision serve --interface br0` answers HTTP on br0 only (issue 12, defect 8), across network namespaces.

The server runs in a lab namespace (`provision.lab.netns.Lab`: bridge br0, 198.18.0.1/24) through
`provision.lab.server.LabServer`. A PC on the imaging LAN is a namespace whose ``eth0`` is a veth into br0
(`netns_hosts.Host`); another host sits on a second interface of the server, ``lan2`` (198.18.1.1/24), with a
route to the imaging LAN through it. Before the fix, that host got every answer the PC got: the HTTP socket
listened on the serve address, and Linux accepts a packet for any local address on any interface. Now the
socket is bound to br0 (SO_BINDTODEVICE), like the DHCP and TFTP sockets: the kernel refuses the connection.
Requests from the server's own namespace still work (the lab's API calls, `provision` tools on the server).

Needs root and `ip`; everything is removed by PID and name when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provision.lab.host import LabUnavailable
from provision.lab.netns import Lab
from provision.lab.server import LabServer
from tests.support.netns_hosts import Host

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip (Debian package iproute2)"),
]

SERVER = "198.18.0.1"
LAN2 = "198.18.1.1"
HTTP_PORT = 8080
BOOT_FILE = b"undionly" * 100
GET = (
    "import sys, urllib.request\n"
    "try:\n"
    "    with urllib.request.urlopen(sys.argv[1], timeout=3) as reply:\n"
    "        print('STATUS', reply.status, len(reply.read()))\n"
    "except OSError as exc:\n"
    "    print('ERROR', getattr(exc, 'reason', exc))\n"
)


@contextlib.contextmanager
def lab_server(workdir: Path) -> Iterator[LabServer]:
    lab = Lab()
    try:
        lab.start()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    try:
        boot = workdir / "boot"
        boot.mkdir()
        (boot / "undionly.kpxe").write_bytes(BOOT_FILE)
        server = LabServer.start(lab, boot, {"ports": {"http": HTTP_PORT}}, dhcp="proxy")
        try:
            yield server
        finally:
            server.stop()
    finally:
        lab.close()


Runner = Callable[..., subprocess.CompletedProcess[str]]


def get(run: Runner, url: str) -> str:
    """GET `url` with Python from wherever `run` runs commands; 'STATUS 200 N' or 'ERROR reason'."""
    done = run([sys.executable, "-c", GET, url], timeout=30)
    return done.stdout.strip() or done.stderr


def test_defect8_http_refuses_other_interfaces(tmp_path: Path) -> None:
    with lab_server(tmp_path) as server:
        lab = server.lab
        pc = Host(lab.name, mac="52:54:00:d8:00:01", cidr="198.18.0.50/24", workdir=tmp_path / "pc")
        other = Host(
            lab.name,
            mac="52:54:00:d8:00:02",
            bridge=None,
            peer="lan2",
            server_cidr=f"{LAN2}/24",
            cidr="198.18.1.2/24",
            workdir=tmp_path / "other",
        )
        with pc, other:
            other.run(["ip", "route", "add", "198.18.0.0/24", "via", LAN2], check=True)
            url = f"http://{SERVER}:{HTTP_PORT}/files/undionly.kpxe"
            if shutil.which("ping"):  # the other host does reach the server's address through lan2
                assert other.run(["ping", "-c", "1", "-W", "2", SERVER]).returncode == 0
            on_lan = get(pc.run, url)
            elsewhere = get(other.run, url)
            elsewhere_own = get(other.run, f"http://{LAN2}:{HTTP_PORT}/files/undionly.kpxe")
            local = get(lambda argv, timeout: lab.run(argv, check=False, timeout=timeout), url)
        log = server.log_text()
    assert on_lan == f"STATUS 200 {len(BOOT_FILE)}", on_lan
    assert elsewhere.startswith("ERROR") and "refused" in elsewhere, elsewhere
    assert elsewhere_own.startswith("ERROR") and "refused" in elsewhere_own, elsewhere_own
    assert local == f"STATUS 200 {len(BOOT_FILE)}", local
    assert "interface br0 only" in log
