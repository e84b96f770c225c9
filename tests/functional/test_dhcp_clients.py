"""Real DHCP clients (busybox udhcpc) against DhcpServer in full mode, across a veth pair between two network
namespaces: broadcast replies, SO_BINDTODEVICE, and the boot file a PXE-looking client gets. Needs root,
`ip` and `udhcpc`; skipped otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("udhcpc") is None, reason="needs ip and udhcpc"),
]

SERVER_SCRIPT = textwrap.dedent(
    """
    import logging, signal, sys, time
    from ipaddress import IPv4Address as A
    from pathlib import Path
    from provision.dhcp import DhcpServer, LeasePool, PxeSettings
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    pool = LeasePool(start=A("198.18.0.100"), end=A("198.18.0.109"), netmask=A("255.255.255.0"),
                     router=A("198.18.0.1"), lease_time=300)
    server = DhcpServer(PxeSettings(server_ip=A("198.18.0.1"), http_port=8080), "full", interface="vsrv",
                        pool=pool, lease_file=Path(sys.argv[1]))
    server.start()
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))
    while True:
        time.sleep(1)
    """
)
CLIENT_MAC = "52:54:00:dc:00:01"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """Namespaces srv (198.18.0.1 on vsrv, running the server) and cli (vcli, no address)."""
    tag = f"pvdhcp{os.getpid()}"
    srv, cli = f"{tag}s", f"{tag}c"
    leases, log = tmp_path / "leases.json", tmp_path / "server.log"
    proc: subprocess.Popen[str] | None = None
    try:
        ip("netns", "add", srv)
        ip("netns", "add", cli)
        ip("link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        ip("link", "set", f"{tag}a", "netns", srv)
        ip("link", "set", f"{tag}b", "netns", cli)
        ip("-n", srv, "link", "set", f"{tag}a", "name", "vsrv")
        ip("-n", cli, "link", "set", f"{tag}b", "name", "vcli")
        ip("-n", srv, "addr", "add", "198.18.0.1/24", "dev", "vsrv")
        ip("-n", cli, "link", "set", "vcli", "address", CLIENT_MAC)
        for ns, dev in ((srv, "vsrv"), (cli, "vcli")):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        with log.open("w") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", srv, sys.executable, "-c", SERVER_SCRIPT, str(leases)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", log.read_text()
        yield cli, leases, log
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


def udhcpc(ns: str, tmp_path: Path, *extra: str) -> dict[str, str]:
    """Run udhcpc once; return the environment its script saw on 'bound'."""
    out = tmp_path / f"bound-{time.monotonic_ns()}.env"
    script = tmp_path / "script.sh"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    cmd = ["ip", "netns", "exec", ns, "udhcpc", "-i", "vcli", "-n", "-q", "-f", "-t", "4", "-T", "1"]
    result = subprocess.run([*cmd, "-s", str(script), *extra], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


def test_udhcpc_gets_a_lease_and_a_pxe_client_its_boot_file(lan, tmp_path):
    cli, leases, log = lan
    plain = udhcpc(cli, tmp_path)
    assert plain["ip"] == "198.18.0.100" and plain["subnet"] == "255.255.255.0"
    assert plain["router"] == "198.18.0.1" and plain["serverid"] == "198.18.0.1" and plain["lease"] == "300"
    assert "boot_file" not in plain

    pxe = udhcpc(cli, tmp_path, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
    assert pxe["ip"] == "198.18.0.100"  # sticky
    assert pxe["boot_file"] == "undionly.kpxe" and pxe["siaddr"] == "198.18.0.1"
    assert CLIENT_MAC in leases.read_text()
    text = log.read_text()
    assert f"{CLIENT_MAC}: ack 198.18.0.100" in text and "-> 255.255.255.255:68" in text
