"""Hosts for interop tests: extra network namespaces wired by veth pairs into a lab's server namespace.

- ``Host``: one namespace with one interface ``eth0`` on the lab bridge or on its own LAN; runs and tracks
  processes inside it (``HostError`` when ``ip`` fails); ``cleanup_stale_hosts()`` removes those of dead runs.
- ``Capture`` / ``Frame`` / ``parse_frame(raw, outgoing)``: the DHCP frames seen on an interface, both ways.
- ``ip(*args)``: ``ip`` with a timeout; ``stop_process(proc)``: SIGTERM, then SIGKILL, a tracked process.

A `Host` is one namespace (``pvhost-<pid>-<n>``) with one interface ``eth0`` whose peer lives in the server
namespace, either enslaved to the lab bridge (a PC on the imaging LAN) or standing alone with an address (a
second LAN of the server). Everything is created with ``ip`` and argument lists, and undone by `Host.close`:
tracked processes are killed by PID, then anything left in the namespace, then the veth pair and the
namespace are deleted. A host left behind by a killed run (its PID is gone) is removed by the next run.

`Capture` records the DHCP frames (UDP port 67 or 68) seen on an interface of a namespace with a raw
AF_PACKET socket, in both directions, from a helper process inside the namespace: this file run as a script
(``python netns_hosts.py capture IFACE OUT``). ``python netns_hosts.py exchange ...`` sends one UDP datagram
from a bound socket and prints the replies: a PXE ROM's DHCPREQUEST to port 4011.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

from provision.lab.host import kill_pid, pid_alive

PREFIX = "pvhost"
NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-(\d+)$")
HERE = Path(__file__).resolve()
SCRIPT = [sys.executable, "-P", str(HERE)]  # -P: the modules beside this file must not shadow top-level ones
IP_TIMEOUT = 30.0
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_counter = itertools.count(1)


class HostError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    if check and done.returncode != 0:
        raise HostError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _kill_namespace_pids(namespace: str) -> None:
    for pid in ip("netns", "pids", namespace, check=False).stdout.split():
        if int(pid) != os.getpid():
            kill_pid(int(pid))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate (then kill) a child started by us, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def cleanup_stale_hosts() -> None:
    """Delete host namespaces of earlier runs whose process is gone (a killed test run)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = NAME_RE.match(name)
        if match and not pid_alive(int(match.group(1))):
            _kill_namespace_pids(name)
            ip("netns", "delete", name, check=False)


class Host:
    """A namespace with ``eth0``, whose veth peer ``peer`` is in ``server_ns``.

    With ``bridge``, the peer is enslaved to it (a client on the lab LAN); with ``server_cidr`` instead, the
    peer gets that address and stays alone (another LAN of the server). ``cidr`` gives ``eth0`` an address
    (a host with a static address, e.g. the site's DHCP server); clients start without one.
    """

    def __init__(
        self,
        server_ns: str,
        *,
        mac: str,
        bridge: str | None = "br0",
        server_cidr: str | None = None,
        cidr: str | None = None,
        peer: str | None = None,
        workdir: Path,
    ) -> None:
        if (bridge is None) == (server_cidr is None):
            raise HostError("give either bridge or server_cidr")
        index = next(_counter)
        self.name = f"{PREFIX}-{os.getpid()}-{index}"
        self.server_ns = server_ns
        self.peer = peer or f"vh{index}"  # only ever a name inside the server namespace
        self.iface = "eth0"
        self.mac = mac.lower()
        self.bridge = bridge
        self.server_cidr = server_cidr
        self.cidr = cidr
        self.workdir = workdir
        self._procs: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self._created = False
        self._closed = False

    def __enter__(self) -> Host:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        cleanup_stale_hosts()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            ip("netns", "add", self.name)
            self._created = True
            for key in ("all", "default"):
                self.run(["tee", f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6"], input="1\n", check=True)
            # Created inside the server namespace, the peer end moved straight into ours: no name ever
            # appears in the root namespace, where other runs may be creating links.
            veth = ["type", "veth", "peer", "name", self.iface, "netns", self.name]
            ip("-n", self.server_ns, "link", "add", self.peer, *veth)
            ip("-n", self.name, "link", "set", self.iface, "address", self.mac)
            if self.cidr is not None:
                ip("-n", self.name, "addr", "add", self.cidr, "dev", self.iface)
            ip("-n", self.name, "link", "set", "lo", "up")
            ip("-n", self.name, "link", "set", self.iface, "up")
            if self.bridge is not None:
                ip("-n", self.server_ns, "link", "set", self.peer, "master", self.bridge)
            else:
                assert self.server_cidr is not None
                ip("-n", self.server_ns, "addr", "add", self.server_cidr, "dev", self.peer)
            ip("-n", self.server_ns, "link", "set", self.peer, "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill our processes by PID, then anything left in the namespace; delete the veth and namespace."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._procs):
            stop_process(proc)
        for handle in self._files:
            handle.close()
        if self._created:
            _kill_namespace_pids(self.name)
            ip("-n", self.server_ns, "link", "delete", self.peer, check=False)
            ip("netns", "delete", self.name, check=False)

    # ------------------------------------------------------------------------------------ commands
    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False, input: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion in the namespace (killed after ``timeout``), output captured."""
        full = self.argv(argv)
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False, input=input)
        if check and done.returncode != 0:
            raise HostError(f"{' '.join(argv)} failed ({done.returncode}) in {self.name}: {done.stderr.strip()}")
        return done

    def popen(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start in the namespace, output to ``log``; tracked, killed by PID on close."""
        out = log.open("ab")
        self._files.append(out)
        proc = subprocess.Popen(self.argv(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        stop_process(proc)

    def set_address(self, cidr: str) -> None:
        ip("-n", self.name, "addr", "replace", cidr, "dev", self.iface)

    def exchange(
        self, bind: tuple[str, int], dest: tuple[str, int], payload: bytes, timeout: float
    ) -> list[tuple[str, int, bytes]]:
        """Send ``payload`` from a UDP socket bound to ``bind``; the replies received within ``timeout`` (or
        0.3 s after the first): (source address, source port, data)."""
        argv = [*SCRIPT, "exchange", bind[0], str(bind[1]), dest[0], str(dest[1])]
        done = self.run([*argv, payload.hex(), str(timeout)], timeout=timeout + 20, check=True)
        replies = []
        for line in done.stdout.splitlines():
            host, port, data = line.split()
            replies.append((host, int(port), bytes.fromhex(data)))
        return replies


# ---------------------------------------------------------------------------------------------- capture
@dataclass(frozen=True)
class Frame:
    """A UDP/IPv4 datagram to or from port 67/68, as seen on the host's interface."""

    outgoing: bool
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


def parse_frame(raw: bytes, outgoing: bool) -> Frame | None:
    """An Ethernet frame -> Frame when it is UDP/IPv4 to or from port 67/68, else None."""
    if len(raw) < 14 + 20 + 8 or raw[12:14] != b"\x08\x00":
        return None
    ihl = (raw[14] & 0x0F) * 4
    if raw[14 + 9] != 17 or len(raw) < 14 + ihl + 8:
        return None
    udp = 14 + ihl
    sport, dport, length = (int.from_bytes(raw[udp + i : udp + i + 2], "big") for i in (0, 2, 4))
    if not {sport, dport} & {67, 68}:
        return None
    src = socket.inet_ntoa(raw[26:30])
    dst = socket.inet_ntoa(raw[30:34])
    return Frame(outgoing, src, dst, sport, dport, raw[udp + 8 : udp + length])


class Capture:
    """Records the DHCP frames on ``iface`` of ``namespace`` (both directions) while in its ``with`` block.

    The recording process is started (and its socket bound) before the block runs; `frames` is filled when
    the block ends.
    """

    def __init__(self, namespace: str, iface: str, out: Path) -> None:
        self.namespace = namespace
        self.iface = iface
        self.out = out
        self.frames: list[Frame] = []
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Capture:
        self.out.unlink(missing_ok=True)
        log = self.out.with_suffix(".log")
        argv = ["ip", "netns", "exec", self.namespace, *SCRIPT, "capture", self.iface, str(self.out)]
        with log.open("wb") as sink:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10.0
        while not self.out.exists():  # created once the socket is bound
            if self._proc.poll() is not None or time.monotonic() > deadline:
                stop_process(self._proc)
                raise HostError(f"capture on {self.iface} in {self.namespace} did not start: {log.read_text()}")
            time.sleep(0.02)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is None:
            return
        stop_process(self._proc)
        self._proc = None
        self.frames = self.read()

    def read(self) -> list[Frame]:
        """The frames recorded so far."""
        frames = []
        for line in self.out.read_text().splitlines():
            direction, _, data = line.partition(" ")
            frame = parse_frame(bytes.fromhex(data), direction == "out")
            if frame is not None:
                frames.append(frame)
        return frames


# --------------------------------------------------------------------------------- the helper process
def _capture_main(iface: str, out: str) -> int:
    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
        sock.bind((iface, 0))
        sock.setblocking(False)
        with Path(out).open("w") as sink:  # its existence says: bound
            while True:
                # Once told to stop, what the socket already holds is still written: every frame that
                # reached the interface before the stop.
                if not stop:
                    select.select([sock], [], [], 0.02)
                try:
                    data, address = sock.recvfrom(65535)
                except BlockingIOError:
                    if stop:
                        break
                    continue
                if parse_frame(data, False) is not None:
                    sink.write(f"{'out' if address[2] == PACKET_OUTGOING else 'in'} {data.hex()}\n")
                    sink.flush()
    return 0


def _exchange_main(host: str, port: str, dest: str, dest_port: str, payload: str, timeout: str) -> int:
    """Print the replies to one datagram: until ``timeout``, or 0.3 s after the first (to see duplicates)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, int(port)))
        sock.sendto(bytes.fromhex(payload), (dest, int(dest_port)))
        deadline = time.monotonic() + float(timeout)
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if ready:
                data, source = sock.recvfrom(65535)
                print(source[0], source[1], data.hex(), flush=True)
                deadline = min(deadline, time.monotonic() + 0.3)
    return 0


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    sys.exit(_capture_main(*args) if command == "capture" else _exchange_main(*args))
