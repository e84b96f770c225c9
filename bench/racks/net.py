"""The rack's network: a switch namespace with bridge ``br0``, the server's namespace and one per agent, each
joined to the bridge by a veth pair whose two ends are shaped with tbf (the link's rate both ways), netem
loss under it where asked (or nftables' random drops at the host's ingress, on a kernel without sch_netem).
Addresses in 198.18.0.0/24 (RFC 2544's 198.18.0.0/15): the server .1, agent i .(10 + i). Names carry this
process's PID (``rack-PID-...``): everything is deleted by name at the end, the processes in a namespace
killed by PID first, and namespaces a killed run left behind (PID gone) at the start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

SERVER_IP = "198.18.0.1"
NS_RE = re.compile(r"^rack-(\d+)-")
DROPPED_RE = re.compile(r"\(dropped (\d+),")  # tc -s: "Sent B bytes P pkt (dropped D, overlimits O ...)"
NFT_TABLE = "rackloss"  # random drops where the kernel has no sch_netem (random_drops)
NFT_COUNTER_RE = re.compile(r"counter packets (\d+) bytes")
GSO_MAX_SEGS = 65535  # a veth's default (``ip -d link``): GSO packets pass whole


class RackError(Exception):
    pass


def ip(*argv: str, check: bool = True, tool: str = "ip") -> subprocess.CompletedProcess[str]:
    done = subprocess.run([tool, *argv], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RackError(f"{tool} {' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def random_drops(ns: str, share: float, netem_error: str) -> None:
    """Drop ``share`` of the packets arriving on ``ns``'s eth0, at random, counted: nftables' netdev ingress
    hook with ``numgen random`` (what netem's ``loss`` does on the way in, for a kernel built without
    sch_netem). RackError when neither is available."""
    if shutil.which("nft") is None:
        raise RackError(f"no loss injection: tc netem: {netem_error}; and no nft (apt install nftables)")
    per = round(share * 100_000)
    rules = (f"table netdev {NFT_TABLE} {{\n chain in {{\n  type filter hook ingress device \"eth0\" priority 0\n"
             f"  numgen random mod 100000 < {per} counter drop\n }}\n}}\n")  # fmt: skip
    done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise RackError(f"no loss injection: tc netem: {netem_error}; nft: {done.stderr.strip()}")


def agent_ip(i: int) -> str:
    return f"198.18.0.{10 + i}"


def mac_of(i: int) -> str:
    """Agent i's eth0 address: the server gives a boot token only to the MAC its neighbour table shows."""
    return f"52:54:00:18:{i // 256:02x}:{i % 256:02x}"


def rate_bits(text: str) -> int:
    """``100mbit`` -> 100_000_000 (tc's units: kbit, mbit, gbit)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(kbit|mbit|gbit)?", text.strip().lower())
    if not match:
        raise RackError(f"rate {text!r}: a number with kbit, mbit or gbit, e.g. 100mbit")
    scale = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9, None: 1}[match.group(2)]
    return int(float(match.group(1)) * scale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(name: str) -> None:
    for pid in ip("netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "delete", name, check=False)


def cleanup_stale() -> list[str]:
    """Delete the namespaces of rack benches whose process is gone; their names."""
    gone = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = (line.split() or [""])[0]
        match = NS_RE.match(name)
        if match and not _alive(int(match.group(1))):
            delete_namespace(name)
            gone.append(name)
    return gone


@dataclass(frozen=True)
class Link:
    """One host's namespace and its bridge port (the veth end in the switch)."""

    ns: str
    port: str
    address: str
    mac: str | None = None


class Rack:
    """The switch, the server and ``agents`` agent namespaces, all links at ``rate`` (tc units)."""

    def __init__(self, agents: int, rate: str) -> None:
        self.prefix = f"rack-{os.getpid()}"
        self.switch = f"{self.prefix}-sw"
        self.rate = rate
        self.server = Link(f"{self.prefix}-srv", "srv", SERVER_IP)
        self.agents = [Link(f"{self.prefix}-a{i}", f"a{i}", agent_ip(i), mac_of(i)) for i in range(agents)]
        self.made: list[str] = []
        self.lossy_nft = shutil.which("nft") is not None  # drops() reads random_drops' counters

    def __enter__(self) -> Rack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, name: str) -> None:
        ip("netns", "add", name)
        self.made.append(name)
        self.exec(name, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        ip("-n", name, "link", "set", "lo", "up")

    def start(self) -> None:
        self._add(self.switch)
        # IGMP snooping with the bridge as querier: a port gets a group's datagrams only while its host is in
        # the group (a leave is followed at once); without it every port is flooded with the carousel, and an
        # agent that left for HTTP on a slow link shares it with datagrams it no longer wants. IGMPv3 (no report
        # suppression) and a general query every second, answered within half a second: a join report the
        # bridge missed (seen: 2 of 8 agents at once, cut off 5 s later when the querier took over) is made up
        # within 1.5 s, as a managed switch does at its own query interval (times in centiseconds)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "1",
           "mcast_querier", "1", "mcast_igmp_version", "3", "mcast_query_interval", "100",
           "mcast_query_response_interval", "50", "mcast_startup_query_interval", "25",
           "mcast_last_member_interval", "50")  # fmt: skip
        ip("-n", self.switch, "link", "set", "br0", "up")
        for link in [self.server, *self.agents]:
            self._add(link.ns)
            ip("-n", self.switch, "link", "add", link.port, "type", "veth", "peer", "name", "eth0", "netns", link.ns)
            ip("-n", self.switch, "link", "set", link.port, "master", "br0", "up")
            if link.mac is not None:
                ip("-n", link.ns, "link", "set", "eth0", "address", link.mac)
            ip("-n", link.ns, "addr", "add", f"{link.address}/24", "brd", "+", "dev", "eth0")  # udpcast: broadcast
            ip("-n", link.ns, "link", "set", "eth0", "up")
            ip("-n", link.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            self.shape(link, self.rate)
        deadline = time.monotonic() + 15
        for link in [self.server, *self.agents]:
            while "forwarding" not in self.exec(self.switch, ["bridge", "link", "show", "dev", link.port]).stdout:
                if time.monotonic() > deadline:
                    raise RackError(f"bridge port {link.port} never forwarding")
                time.sleep(0.05)

    def shape(self, link: Link, rate: str, loss: float = 0.0) -> None:
        """Both ends of ``link`` at ``rate``; ``loss`` (a share) dropped toward the host: by netem under the tbf,
        or where the kernel has no sch_netem, by nftables at the host's eth0 ingress (``random_drops``)."""
        if self.lossy_nft:
            ip("netns", "exec", link.ns, "nft", "delete", "table", "netdev", NFT_TABLE, check=False)
            ip("-n", self.switch, "link", "set", "dev", link.port, "gso_max_segs", str(GSO_MAX_SEGS))
        for ns, dev, lossy in ((self.switch, link.port, loss), (link.ns, "eth0", 0.0)):
            ip("-n", ns, "qdisc", "del", "dev", dev, "root", check=False, tool="tc")
            # 100 ms of queue at the rate, bursts of 64 KiB (a GSO batch of datagrams)
            ip("-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", rate,
               "burst", "64kb", "latency", "100ms", tool="tc")  # fmt: skip
            if lossy > 0:
                netem = ip("-n", ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "netem",
                           "loss", f"{lossy * 100:g}%", "limit", "10000", check=False, tool="tc")  # fmt: skip
                if netem.returncode != 0:
                    # the carousel's GSO batches (up to 45 datagrams in one packet) reach the host whole: dropped
                    # at its ingress, one drop would lose a batch; segmented at the switch's port, as a wire
                    # loses frames, each datagram is dropped on its own
                    ip("-n", self.switch, "link", "set", "dev", link.port, "gso_max_segs", "1")
                    random_drops(link.ns, lossy, netem.stderr.strip())

    def drops(self) -> dict[tuple[str, str], int]:
        """Packets each link's qdiscs dropped so far (tbf/netem ``dropped``; nftables' random drops count as
        ``in``), by (host namespace, ``out`` of the host or ``in`` to it: the switch port's end)."""
        found: dict[tuple[str, str], int] = {}
        for link in [self.server, *self.agents]:
            for way, ns, dev in (("in", self.switch, link.port), ("out", link.ns, "eth0")):
                out = ip("-n", ns, "-s", "qdisc", "show", "dev", dev, check=False, tool="tc").stdout
                found[(link.ns, way)] = sum(int(n) for n in DROPPED_RE.findall(out))
            if self.lossy_nft:
                table = ip("netns", "exec", link.ns, "nft", "list", "table", "netdev", NFT_TABLE, check=False).stdout
                found[(link.ns, "in")] += sum(int(n) for n in NFT_COUNTER_RE.findall(table))
        return found

    def exec(self, ns: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=False)

    def close(self) -> None:
        for name in reversed(self.made):
            delete_namespace(name)
        self.made.clear()
