"""The clients' network namespace, joined to the lab's bridge by a veth pair."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from .common import BRIDGE_PORT, CLIENT_IF, CLIENT_IP, CLIENT_NS_RE, BenchError, _run
from .measure import _pid_alive, kill_pids


def delete_netns(name: str) -> None:
    pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
    kill_pids(int(p) for p in pids)
    _run(["ip", "netns", "delete", name], check=False)


def cleanup_stale_client_namespaces() -> None:
    for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = (line.split() or [""])[0]
        match = CLIENT_NS_RE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            delete_netns(name)
            print(f"boot_burst: removed stale client namespace {name}", file=sys.stderr)


class ClientNetns:
    """The clients' namespace: `eth0` 198.18.0.2/24, its veth peer a port of the lab's bridge."""

    def __init__(self, lab_name: str, bridge: str) -> None:
        self.name = f"bburst-{os.getpid()}"
        self.lab_name = lab_name
        self.bridge = bridge
        self.created = False

    def start(self) -> None:
        _run(["ip", "netns", "add", self.name])
        self.created = True
        for key in ("all", "default"):
            self.exec(["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"])
        lab = ["ip", "-n", self.lab_name]
        _run([*lab, "link", "add", BRIDGE_PORT, "type", "veth", "peer", "name", CLIENT_IF, "netns", self.name])
        _run([*lab, "link", "set", BRIDGE_PORT, "master", self.bridge, "up"])
        mine = ["ip", "-n", self.name]
        _run([*mine, "link", "set", "lo", "up"])
        _run([*mine, "addr", "add", f"{CLIENT_IP}/24", "dev", CLIENT_IF])
        _run([*mine, "link", "set", CLIENT_IF, "up"])
        deadline = time.monotonic() + 10
        while not self._forwarding():
            if time.monotonic() > deadline:
                raise BenchError(f"bridge port {BRIDGE_PORT} never reached the forwarding state")
            time.sleep(0.05)

    def _forwarding(self) -> bool:
        show = ["ip", "netns", "exec", self.lab_name, "bridge", "link", "show", "dev", BRIDGE_PORT]
        return "state forwarding" in _run(show, check=False).stdout

    def exec(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.name, *argv], **kwargs)

    def close(self) -> None:
        if self.created:
            delete_netns(self.name)
            self.created = False
