"""Boot burst: N simulated PXE clients network-boot at once, against provision and against peer tools.

Every client does the whole chain a BIOS PXE ROM + iPXE does:

1. DHCP DISCOVER -> OFFER -> REQUEST -> ACK (its own MAC and xid, vendor class PXEClient, option 93 = 0,
   broadcast flag), sent from 0.0.0.0 with its own source MAC through a packet socket, answers read on
   one shared UDP socket on port 68 and handed to the client by xid;
2. a TFTP read of ``undionly.kpxe`` (random bytes, ~70 KB) with blksize 1468 and tsize, from the
   ``siaddr`` of the ACK, compared byte for byte;
3. an HTTP GET of ``/boot/<mac>.ipxe`` (rendered per MAC by provision; a static file per MAC for nginx).

Servers (in a :class:`provision.lab.netns.Lab` namespace, bridge ``br0`` 198.18.0.1/24):

- ``provision``: ``python -m provision serve --interface br0 --address 198.18.0.1 --dhcp full``;
- ``baseline``: dnsmasq (DHCP only) + tftpd-hpa (``in.tftpd``) + nginx (static boot scripts).

The clients run in a second namespace joined to ``br0`` by a veth pair (198.18.0.2/24), in a worker
process (``--worker SPEC``: this same file under ``ip netns exec``), one thread per client, all released at
once. Each side runs ``--rounds`` times, alternating. Per run: failures, wall time of the burst, per-client
p50/p95 of each step, retransmissions, and the servers' CPU seconds: from a cgroup the servers start in
(every process, also the exited ones: tftpd-hpa forks one child per transfer and lets the kernel reap it,
so its CPU never shows in ``/proc``) and from ``/proc/PID/stat`` (utime+stime+cutime+cstime of the
server processes and their live children, before/after). Nothing is asserted on time: figures are printed,
then one JSON line.

Run as root: ``sudo scripts/bench`` (installs the peer tools first) or ``.venv/bin/python bench/boot_burst.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import math
import os
import queue
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provision.dhcp.codec import BROADCAST_FLAG, DhcpPacket, MalformedPacket, MessageType, Opt, client_request, parse

REPO = Path(__file__).resolve().parent.parent

SERVER_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
NETMASK = "255.255.255.0"
RANGE_START = "198.18.0.100"
RANGE_END = "198.18.0.250"
HTTP_PORT = 8080
TFTP_PORT = 69
BOOT_FILE = "undionly.kpxe"
BLKSIZE = 1468
FILE_SIZE = 70 * 1024 + 123  # ~70 KB, not a multiple of the block size: the last block is short
CLIENT_IF = "eth0"  # the veth end in the client namespace
BRIDGE_PORT = "bburst0"  # its peer, a port of br0 in the lab namespace
CLIENT_NS_RE = re.compile(r"^bburst-(\d+)$")
SIDES = ("provision", "baseline")
STEPS = ("dhcp", "tftp", "http", "total")

# DHCP: tries and their timeouts (PXE ROMs wait 4, 8, 16, 32 s; shortened, the figures show any retry).
DHCP_TIMEOUTS = (2.0, 4.0, 8.0)
# TFTP: first resend timeout, doubled on each resend of the same packet, and resends before giving up.
TFTP_TIMEOUT = 1.0
TFTP_RESENDS = 5
HTTP_TIMEOUT = 10.0
HTTP_ATTEMPTS = 3

PXE_VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
PXE_PARAMETERS = bytes((1, 2, 3, 4, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51)) + bytes(
    (54, 58, 59, 60, 66, 67, *range(128, 136))
)
USER_AGENT = "iPXE/1.21.1+ (boot-burst)"


class BenchError(Exception):
    """The benchmark itself cannot run (not root, a tool missing, a server that does not start)."""


class StepFailed(Exception):
    """One client's step failed after its retries; the message says which and why."""


# ===================================================================================== the clients
def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def dhcp_frame(mac: bytes, payload: bytes) -> bytes:
    """An Ethernet broadcast frame 0.0.0.0:68 -> 255.255.255.255:67 from `mac`, as a PXE ROM sends it."""
    src, dst = bytes(4), b"\xff" * 4
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    udp_sum = _checksum(pseudo + struct.pack("!HHHH", 68, 67, length, 0) + payload) or 0xFFFF
    udp = struct.pack("!HHHH", 68, 67, length, udp_sum) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, random.getrandbits(16), 0, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + header + udp


def pxe_options(mac: str, extra: dict[int, bytes] | None = None) -> dict[int, bytes]:
    """What a BIOS PXE ROM puts after option 53 (RFC 4578): arch 0, UNDI 2.1, a GUID, PXEClient."""
    guid = uuid.uuid5(uuid.NAMESPACE_OID, mac).bytes
    return {
        **(extra or {}),
        Opt.MAX_MESSAGE_SIZE: (1260).to_bytes(2, "big"),
        Opt.CLIENT_ARCH: b"\x00\x00",
        Opt.CLIENT_NDI: b"\x01\x02\x01",
        Opt.CLIENT_MACHINE_ID: b"\x00" + guid,
        Opt.VENDOR_CLASS: PXE_VENDOR_CLASS,
        Opt.PARAMETER_REQUEST_LIST: PXE_PARAMETERS,
    }


class DhcpLink:
    """The clients' shared DHCP plumbing: a packet socket to send, one UDP socket on port 68 to receive.

    A receiver thread parses every reply and hands it to the client that registered its xid.
    """

    def __init__(self, interface: str) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        self.rx.bind(("0.0.0.0", 68))
        self.rx.settimeout(0.2)
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: send only
        self.tx.bind((interface, 0))
        self.queues: dict[int, queue.Queue[DhcpPacket]] = {}
        self.stray = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dhcp-rx", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.rx.close()
        self.tx.close()

    def register(self, xid: int) -> queue.Queue[DhcpPacket]:
        return self.queues.setdefault(xid, queue.Queue())

    def send(self, mac: str, packet: DhcpPacket) -> None:
        self.tx.send(dhcp_frame(bytes.fromhex(mac.replace(":", "")), packet.encode()))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.rx.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                packet = parse(data)
            except MalformedPacket:
                self.stray += 1
                continue
            target = self.queues.get(packet.xid)
            if target is None or packet.op != 2:
                self.stray += 1
                continue
            target.put(packet)


def _exchange(
    link: DhcpLink,
    replies: queue.Queue[DhcpPacket],
    mac: str,
    request: DhcpPacket,
    wanted: set[MessageType],
) -> tuple[DhcpPacket, int]:
    """Send `request` until a reply of a wanted type for `mac` arrives; (reply, resends)."""
    for attempt, timeout in enumerate(DHCP_TIMEOUTS):
        link.send(mac, request)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = replies.get(timeout=left)
            except queue.Empty:
                break
            if reply.mac == mac and reply.message_type in wanted:
                return reply, attempt
    names = "/".join(sorted(m.name for m in wanted))
    mtype = request.message_type
    raise StepFailed(f"DHCP: no {names} to the {mtype.name if mtype else '?'} after {len(DHCP_TIMEOUTS)} tries")


def _option_text(packet: DhcpPacket, code: int) -> str:
    return (packet.option(code) or b"").split(b"\0", 1)[0].decode("latin-1")


def dhcp_lease(link: DhcpLink, mac: str, xid: int, first: bytes) -> tuple[DhcpPacket, int]:
    """DISCOVER (`first`, prebuilt) -> OFFER -> REQUEST -> ACK; the ACK and the number of resends."""
    replies = link.register(xid)
    discover = parse(first)
    offer, resends = _exchange(link, replies, mac, discover, {MessageType.OFFER})
    if offer.server_id is None:
        raise StepFailed("DHCP: the OFFER has no server identifier (option 54)")
    options = pxe_options(mac, {Opt.REQUESTED_IP: offer.yiaddr.packed, Opt.SERVER_ID: offer.server_id.packed})
    request = client_request(MessageType.REQUEST, mac, xid=xid, flags=BROADCAST_FLAG, options=options)
    ack, more = _exchange(link, replies, mac, request, {MessageType.ACK, MessageType.NAK})
    if ack.message_type is MessageType.NAK:
        raise StepFailed(f"DHCP: NAK for {offer.yiaddr}: {_option_text(ack, Opt.MESSAGE)}")
    if ack.yiaddr != offer.yiaddr:
        raise StepFailed(f"DHCP: ACK for {ack.yiaddr}, but {offer.yiaddr} was offered and requested")
    return ack, resends + more


def check_ack(ack: DhcpPacket) -> str:
    """The TFTP server the ACK points at; StepFailed when the lease or the boot information is wrong."""
    if not ipaddress.IPv4Address(RANGE_START) <= ack.yiaddr <= ipaddress.IPv4Address(RANGE_END):
        raise StepFailed(f"DHCP: leased {ack.yiaddr}, outside {RANGE_START}..{RANGE_END}")
    boot_file = ack.file or _option_text(ack, Opt.BOOTFILE_NAME)
    if boot_file != BOOT_FILE:
        raise StepFailed(f"DHCP: boot file {boot_file!r} in the ACK, expected {BOOT_FILE!r}")
    next_server = str(ack.siaddr) if int(ack.siaddr) else _option_text(ack, Opt.TFTP_SERVER_NAME)
    if next_server != SERVER_IP:
        raise StepFailed(f"DHCP: next server {next_server or 'none'} in the ACK, expected {SERVER_IP}")
    return next_server


def _tftp_ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block & 0xFFFF)


def tftp_get(server: str, name: str, client_ip: str, blksize: int = BLKSIZE) -> tuple[bytes, int, int]:
    """Read `name` like iPXE does (octet, blksize, tsize); (content, resends, negotiated blksize)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((client_ip, 0))
        rrq = b"\x00\x01" + name.encode() + b"\0octet\0blksize\0" + str(blksize).encode() + b"\0tsize\0" + b"0\0"
        peer: tuple[str, int] = (server, TFTP_PORT)
        tid: tuple[str, int] | None = None
        last = rrq
        size = 512
        tsize: int | None = None
        expected = 1
        chunks: list[bytes] = []
        resends = 0
        tries = 0
        wait = TFTP_TIMEOUT
        sock.sendto(last, peer)
        deadline = time.monotonic() + wait
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data, source = sock.recvfrom(65536)
            except TimeoutError:
                tries += 1
                if tries > TFTP_RESENDS:
                    raise StepFailed(
                        f"TFTP: nothing after {TFTP_RESENDS} resends, waiting for block {expected}"
                    ) from None
                resends += 1
                wait = min(wait * 2, 8.0)
                sock.sendto(last, tid or peer)
                deadline = time.monotonic() + wait
                continue
            source = (str(source[0]), int(source[1]))
            if tid is None:
                if source[0] != server:
                    continue
                tid = source
            elif source != tid:
                sock.sendto(b"\x00\x05\x00\x05unknown transfer ID\0", source)
                continue
            opcode = int.from_bytes(data[:2], "big")
            if opcode == 5:
                code = int.from_bytes(data[2:4], "big")
                message = data[4:].split(b"\0")[0].decode("latin-1")
                raise StepFailed(f"TFTP: ERROR {code} from the server: {message}")
            progressed = False
            if opcode == 6:  # OACK
                if expected == 1:
                    fields = data[2:].split(b"\0")
                    opts = {fields[i].decode().lower(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
                    size = int(opts.get("blksize", "512"))
                    tsize = int(opts["tsize"]) if "tsize" in opts else None
                    last = _tftp_ack(0)
                    progressed = True
                sock.sendto(_tftp_ack(0), tid)
            elif opcode == 3:
                block = int.from_bytes(data[2:4], "big")
                if block == expected & 0xFFFF:
                    payload = data[4:]
                    chunks.append(payload)
                    last = _tftp_ack(block)
                    sock.sendto(last, tid)
                    expected += 1
                    progressed = True
                    if len(payload) < size:
                        break
                elif block == (expected - 1) & 0xFFFF:
                    sock.sendto(_tftp_ack(block), tid)  # our ACK was lost: say it again
            if progressed:
                tries = 0
                wait = TFTP_TIMEOUT
                deadline = time.monotonic() + wait
        content = b"".join(chunks)
        if tsize is not None and tsize != len(content):
            raise StepFailed(f"TFTP: tsize {tsize} in the OACK, {len(content)} bytes received")
        return content, resends, size


def http_get(server: str, port: int, path: str, client_ip: str) -> tuple[bytes, int]:
    """GET `path` on a fresh connection, as iPXE does; (body, retries). StepFailed on a non-200 status."""
    problem = ""
    for attempt in range(HTTP_ATTEMPTS):
        conn = http.client.HTTPConnection(server, port, timeout=HTTP_TIMEOUT, source_address=(client_ip, 0))
        try:
            conn.request("GET", path, headers={"User-Agent": USER_AGENT})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        finally:
            conn.close()
        if response.status != 200:
            raise StepFailed(f"HTTP: {response.status} {response.reason} for {path}: {body[:120]!r}")
        return body, attempt
    raise StepFailed(f"HTTP: {problem} for {path}, {HTTP_ATTEMPTS} attempts")


@dataclass
class ClientResult:
    mac: str
    ok: bool = False
    error: str = ""
    ip: str = ""
    start: float = 0.0  # seconds after the burst began
    end: float = 0.0  # when the client was done (booted or failed), seconds after the burst began
    dhcp: float | None = None
    tftp: float | None = None
    http: float | None = None
    total: float | None = None
    dhcp_resends: int = 0
    tftp_resends: int = 0
    http_retries: int = 0
    blksize: int = 0


def check_script(mac: str, body: bytes, expected: bytes | None) -> None:
    if expected is not None:
        if body != expected:
            raise StepFailed(f"HTTP: boot script of {len(body)} bytes differs from the {len(expected)}-byte file")
        return
    text = body.decode("utf-8", "replace")
    if not text.startswith("#!ipxe") or mac not in text:
        raise StepFailed(f"HTTP: not an iPXE script for {mac}: {text[:80]!r}")


def run_client(
    spec: dict[str, Any],
    client: dict[str, Any],
    link: DhcpLink,
    go: threading.Event,
    begin: list[float],
    content: bytes,
    result: ClientResult,
) -> None:
    mac = str(client["mac"])
    discover = bytes.fromhex(client["discover"])
    script = Path(client["script"]).read_bytes() if client.get("script") else None
    go.wait()
    t0 = time.perf_counter()
    result.start = t0 - begin[0]
    try:
        ack, result.dhcp_resends = dhcp_lease(link, mac, int(client["xid"]), discover)
        t1 = time.perf_counter()
        result.dhcp = t1 - t0
        result.ip = str(ack.yiaddr)
        tftp_server = check_ack(ack)
        data, result.tftp_resends, result.blksize = tftp_get(tftp_server, BOOT_FILE, spec["client_ip"])
        t2 = time.perf_counter()
        result.tftp = t2 - t1
        if data != content:
            first = next((i for i, (a, b) in enumerate(zip(data, content, strict=False)) if a != b), None)
            raise StepFailed(
                f"TFTP: {len(data)} bytes received, the file has {len(content)}"
                + (f"; first difference at byte {first}" if first is not None else "")
            )
        if spec["http"]:
            body, result.http_retries = http_get(
                SERVER_IP, int(spec["http_port"]), f"/boot/{mac}.ipxe", spec["client_ip"]
            )
            result.http = time.perf_counter() - t2
            check_script(mac, body, script)
        result.total = time.perf_counter() - t0
        result.ok = True
    except StepFailed as exc:
        result.error = str(exc)
    except Exception as exc:  # a client bug must show as a failure, not hang the burst
        result.error = f"{type(exc).__name__}: {exc}"
    result.end = time.perf_counter() - begin[0]


def worker_main(spec_path: Path) -> int:
    """Inside the client namespace: run every client of the spec at once, print the results as JSON."""
    spec = json.loads(spec_path.read_text())
    content = Path(spec["file"]).read_bytes()
    link = DhcpLink(spec["interface"])
    link.start()
    go = threading.Event()
    begin = [0.0]
    results = [ClientResult(mac=c["mac"]) for c in spec["clients"]]
    threads = [
        threading.Thread(target=run_client, args=(spec, c, link, go, begin, content, r), name=c["mac"], daemon=True)
        for c, r in zip(spec["clients"], results, strict=True)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # every thread waits on `go`
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    begin[0] = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    link.close()
    out = {
        "wall_s": max((r.end for r in results), default=0.0),
        "client_cpu_s": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
        "stray_dhcp": link.stray,
        "results": [asdict(r) for r in results],
    }
    json.dump(out, sys.stdout)
    return 0


# ====================================================================================== accounting
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # [0] is field 3 (state): field n is at n - 3


def process_tree(roots: Iterable[int]) -> set[int]:
    """`roots` and all their live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    tree = {pid for pid in roots if pid in parents}
    grown = True
    while grown:
        more = {pid for pid, ppid in parents.items() if ppid in tree and pid not in tree}
        tree |= more
        grown = bool(more)
    return tree


def proc_cpu_seconds(roots: Iterable[int]) -> float:
    """utime+stime+cutime+cstime of `roots` and their live descendants (children reaped by them included)."""
    ticks = 0
    for pid in process_tree(roots):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / CLK_TCK


class CpuCgroup:
    """A cgroup the servers of one run start in; its counter includes every process that ever ran in it."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, name: str) -> CpuCgroup | None:
        """v1 cpuacct or v2, whichever this machine has and lets root write; None when neither."""
        candidates = [
            (Path("/sys/fs/cgroup/cpuacct"), 1, "cpuacct.usage"),
            (Path("/sys/fs/cgroup"), 2, "cgroup.controllers"),
            (Path("/sys/fs/cgroup/unified"), 2, "cgroup.controllers"),
        ]
        for root, version, marker in candidates:
            if not (root / marker).exists():
                continue
            path = root / name
            try:
                path.mkdir()
            except OSError:
                continue
            group = cls(path, version)
            try:
                group.usage_seconds()
            except (OSError, ValueError):
                group.remove()
                continue
            return group
        return None

    def enter(self) -> None:
        """Move the calling process in (a Popen preexec_fn: the server and all it forks are counted)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def usage_seconds(self) -> float:
        if self.version == 1:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        raise ValueError(f"no usage_usec in {self.path}/cpu.stat")

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        print(f"boot_burst: could not remove cgroup {self.path}", file=sys.stderr)


def udp_rcvbuf_errors(snmp: str) -> int:
    """RcvbufErrors of the Udp line of a namespace's /proc/net/snmp: datagrams dropped on a full socket."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return 0
    return int(rows[1][rows[0].index("RcvbufErrors")])


def udp_drops_by_port(table: str, ports: Iterable[int]) -> dict[str, int]:
    """Drops per local port of the UDP sockets open now (/proc/net/udp); the rest under "other"."""
    wanted = set(ports)
    out: dict[str, int] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        port = int(fields[1].rpartition(":")[2], 16)
        key = str(port) if port in wanted else "other"
        out[key] = out.get(key, 0) + int(fields[-1])
    return out


# ===================================================================================== namespaces
def _run(argv: Sequence[str], *, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False, input=input)
    if check and done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done


def _pid_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def kill_pids(pids: Iterable[int], timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, each of these processes (ours: servers we started and their children)."""
    pending = [p for p in pids if _pid_alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            pending = [p for p in pending if _pid_alive(p)]
            time.sleep(0.05)
        if not pending:
            return


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


# ======================================================================================== servers
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
        f"kernel {url}/files/live/vmlinuz initrd=initrd.img console=tty0 console=ttyS0,115200n8 quiet "
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


# ===================================================================================== one run
def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class RunResult:
    side: str
    round: int
    clients: int
    failures: int
    wall_s: float
    cpu_s: float | None  # cgroup: every server process, also the exited ones
    proc_cpu_s: float  # /proc/PID/stat of the server processes and their live children
    client_cpu_s: float
    steps_ms: dict[str, dict[str, float | None]]
    resends: dict[str, int]
    udp_drops_server: int  # datagrams the servers' namespace dropped on full socket buffers during the burst
    udp_drops_client: int
    udp_drops_by_port: dict[str, int]
    blksizes: list[int]
    errors: list[str] = field(default_factory=list)
    server_log: list[str] = field(default_factory=list)


def _log_problems(lab: Any, started: Started) -> list[str]:
    lines: list[str] = []
    for log in started.logs:
        path = lab.log_path(log)
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if started.side == "provision":
                    if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                        lines.append(line)
                elif "LOUD WARNING" in line:  # dnsmasq on --bind-interfaces: about DNS, which is off (port 0)
                    continue
                elif re.search(r"\b(warning|error|fail|crit|alert|emerg)", line, re.IGNORECASE):
                    lines.append(f"{log}: {line}")
    return lines


def run_once(
    lab: Any,
    servers: Servers,
    cns: ClientNetns,
    files: Files,
    side: str,
    rnd: int,
    workdir: Path,
) -> RunResult:
    run_dir = workdir / f"r{rnd}-{side}"
    group = CpuCgroup.create(f"boot-burst-{os.getpid()}-r{rnd}-{side}")
    started: Started | None = None
    try:
        started = servers.start(side, run_dir, group)
        servers.wait_ready(started)
        time.sleep(0.5)  # start-up work (imports, first select turns) is not the burst's
        rng = random.SystemRandom()
        xids = rng.sample(range(1, 1 << 32), len(files.macs))
        use_http = side == "provision" or servers.nginx
        clients = []
        for mac, xid in zip(files.macs, xids, strict=True):
            discover = client_request(
                MessageType.DISCOVER, mac, xid=xid, flags=BROADCAST_FLAG, options=pxe_options(mac)
            )
            script = str(files.script(mac)) if side == "baseline" else None
            clients.append({"mac": mac, "xid": xid, "discover": discover.encode().hex(), "script": script})
        spec = {
            "side": side,
            "interface": CLIENT_IF,
            "client_ip": CLIENT_IP,
            "http": use_http,
            "http_port": HTTP_PORT,
            "file": str(files.boot_file),
            "clients": clients,
        }
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        roots = [p.pid for p in started.procs]
        snmp0 = (lab.run(["cat", "/proc/net/snmp"]).stdout, cns.exec(["cat", "/proc/net/snmp"]).stdout)
        proc0 = proc_cpu_seconds(roots)
        cg0 = group.usage_seconds() if group else 0.0
        done = subprocess.run(
            ["ip", "netns", "exec", cns.name, sys.executable, "-m", "bench.boot_burst", "--worker", str(spec_path)],
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        time.sleep(0.5)  # the servers' trailing work (last ACKs, lease file) is the burst's
        proc1 = proc_cpu_seconds(roots)
        cg1 = group.usage_seconds() if group else 0.0
        snmp1 = (lab.run(["cat", "/proc/net/snmp"]).stdout, cns.exec(["cat", "/proc/net/snmp"]).stdout)
        by_port = udp_drops_by_port(lab.run(["cat", "/proc/net/udp"]).stdout, started.udp)
        if done.returncode != 0:
            raise BenchError(f"the client worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
        out = json.loads(done.stdout)
        server_log = _log_problems(lab, started)
    finally:
        if started is not None:
            servers.stop(started, group)
        if group is not None:
            group.remove()

    results = [ClientResult(**r) for r in out["results"]]
    errors = [f"{r.mac}: {r.error}" for r in results if not r.ok]
    holders: dict[str, list[str]] = {}
    for r in results:
        if r.ip:
            holders.setdefault(r.ip, []).append(r.mac)
    failed = {r.mac for r in results if not r.ok}
    for ip, macs in holders.items():
        if len(macs) > 1:
            errors.append(f"{ip} leased to {len(macs)} clients: {', '.join(macs)}")
            failed |= set(macs)
    steps: dict[str, dict[str, float | None]] = {}
    for step in STEPS:
        values = [v * 1000 for r in results if r.ok and (v := getattr(r, step)) is not None]
        steps[step] = {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values, default=None)}
    return RunResult(
        side=side,
        round=rnd,
        clients=len(results),
        failures=len(failed),
        wall_s=float(out["wall_s"]),
        cpu_s=(cg1 - cg0) if group else None,
        proc_cpu_s=proc1 - proc0,
        client_cpu_s=float(out["client_cpu_s"]),
        steps_ms=steps,
        resends={
            "dhcp": sum(r.dhcp_resends for r in results),
            "tftp": sum(r.tftp_resends for r in results),
            "http": sum(r.http_retries for r in results),
        },
        udp_drops_server=udp_rcvbuf_errors(snmp1[0]) - udp_rcvbuf_errors(snmp0[0]),
        udp_drops_client=udp_rcvbuf_errors(snmp1[1]) - udp_rcvbuf_errors(snmp0[1]),
        udp_drops_by_port=by_port,
        blksizes=sorted({r.blksize for r in results if r.blksize}),
        errors=errors,
        server_log=server_log,
    )


# ======================================================================================== report
def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(runs: Sequence[RunResult], http_baseline: bool) -> str:
    head = (
        "| side | round | failures | wall s | DHCP p50/p95 ms | TFTP p50/p95 ms | HTTP p50/p95 ms "
        "| client p50/p95 ms | resends d/t/h | UDP drops srv/cli | server CPU s | CPU s (/proc) |"
    )
    lines = [head, "|---|---:|---:|---:|---|---|---|---|---|---|---:|---:|"]
    for r in runs:
        cells = [
            r.side,
            str(r.round),
            str(r.failures),
            _s(r.wall_s),
        ]
        for step in STEPS:
            st = r.steps_ms[step]
            if step == "http" and r.side == "baseline" and not http_baseline:
                cells.append("n/a")
            else:
                cells.append(f"{_ms(st['p50'])} / {_ms(st['p95'])}")
        cells += [
            f"{r.resends['dhcp']}/{r.resends['tftp']}/{r.resends['http']}",
            f"{r.udp_drops_server}/{r.udp_drops_client}",
            _s(r.cpu_s),
            _s(r.proc_cpu_s),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(runs: Sequence[RunResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in SIDES:
        mine = [r for r in runs if r.side == side]
        if not mine:
            continue
        cpu = [r.cpu_s for r in mine if r.cpu_s is not None]
        out[side] = {
            "runs": len(mine),
            "failures": sum(r.failures for r in mine),
            "wall_s_median": statistics.median(r.wall_s for r in mine),
            "cpu_s_median": statistics.median(cpu) if cpu else None,
            "proc_cpu_s_median": statistics.median(r.proc_cpu_s for r in mine),
            "client_cpu_s_median": statistics.median(r.client_cpu_s for r in mine),
            "resends": {k: sum(r.resends[k] for r in mine) for k in ("dhcp", "tftp", "http")},
            "udp_drops_server": sum(r.udp_drops_server for r in mine),
        }
        for step in STEPS:
            p50 = [v for r in mine if (v := r.steps_ms[step]["p50"]) is not None]
            p95 = [v for r in mine if (v := r.steps_ms[step]["p95"]) is not None]
            out[side][f"{step}_p50_ms_median"] = statistics.median(p50) if p50 else None
            out[side][f"{step}_p95_ms_median"] = statistics.median(p95) if p95 else None
    if "provision" in out and "baseline" in out:
        p, b = out["provision"], out["baseline"]

        def ratio(key: str) -> float | None:
            return p[key] / b[key] if p.get(key) and b.get(key) else None

        out["ratio_provision_over_baseline"] = {
            "wall": ratio("wall_s_median"),
            "cpu": ratio("cpu_s_median"),
            "proc_cpu": ratio("proc_cpu_s_median"),
        }
    return out


def tool_versions() -> dict[str, str]:
    versions: dict[str, str] = {"python": sys.version.split()[0]}
    for name, argv in (
        ("dnsmasq", ["dnsmasq", "--version"]),
        ("tftpd-hpa", ["in.tftpd", "-V"]),
        ("nginx", ["nginx", "-v"]),
    ):
        if shutil.which(argv[0]):
            done = _run(argv, check=False)
            versions[name] = (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr) else ""
    return versions


# ========================================================================================== main
def preflight() -> bool:
    """BenchError when a required tool is missing; True when nginx is there (else no HTTP step in the baseline)."""
    if os.geteuid() != 0:
        raise BenchError("run as root (network namespaces, port 67/69, packet sockets): sudo scripts/bench")
    missing = [tool for tool in ("ip", "ss", "bridge", "sysctl", "dnsmasq", "in.tftpd") if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"missing: {', '.join(missing)} (scripts/bench installs dnsmasq-base, tftpd-hpa and nginx)")
    return shutil.which("nginx") is not None


def orchestrate(args: argparse.Namespace) -> int:
    from provision.lab.netns import Lab

    has_nginx = preflight()
    cleanup_stale_client_namespaces()
    workdir = Path(tempfile.mkdtemp(prefix="boot-burst-"))
    workdir.chmod(0o755)  # nginx's worker (nobody) reads www/ under it
    keep = args.keep
    runs: list[RunResult] = []
    try:
        files = make_files(workdir, args.clients, args.file_size)
        with Lab(workdir=workdir / "lab") as lab:
            cns = ClientNetns(lab.name, lab.bridge)
            try:
                cns.start()
                servers = Servers(lab, files, nginx=has_nginx)
                for rnd in range(1, args.rounds + 1):
                    for side in SIDES:
                        result = run_once(lab, servers, cns, files, side, rnd, workdir)
                        runs.append(result)
                        print(
                            f"round {rnd} {side:<9}: {result.failures} failures, wall {result.wall_s:.2f} s, "
                            f"server CPU {_s(result.cpu_s)} s",
                            file=sys.stderr,
                            flush=True,
                        )
            finally:
                cns.close()
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"boot_burst: files and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(runs)
    print(
        f"\nboot burst: {args.clients} PXE clients at once (DHCP full -> TFTP {BOOT_FILE} {args.file_size} B "
        f"blksize {BLKSIZE} -> HTTP /boot/<mac>.ipxe), {args.rounds} rounds per side, alternating; "
        f"{os.cpu_count()} CPUs"
    )
    print("baseline: dnsmasq (DHCP) + tftpd-hpa + " + ("nginx" if has_nginx else "no HTTP server (nginx missing)"))
    print()
    print(table(runs, has_nginx))
    print()
    for side in SIDES:
        s = summary.get(side)
        if s:
            print(
                f"{side:<9}: median wall {s['wall_s_median']:.2f} s, median server CPU {_s(s['cpu_s_median'])} s "
                f"(/proc {s['proc_cpu_s_median']:.2f} s), failures {s['failures']}, "
                f"resends DHCP/TFTP/HTTP {s['resends']['dhcp']}/{s['resends']['tftp']}/{s['resends']['http']}, "
                f"server UDP drops {s['udp_drops_server']}"
            )
    ratio = summary.get("ratio_provision_over_baseline", {})
    print(
        f"provision / baseline: wall {_s(ratio.get('wall'))}x, server CPU {_s(ratio.get('cpu'))}x "
        f"(/proc {_s(ratio.get('proc_cpu'))}x)"
    )
    for r in runs:
        for line in r.errors[:10]:
            print(f"  failure r{r.round} {r.side}: {line}")
        for line in r.server_log[:10]:
            print(f"  server log r{r.round} {r.side}: {line}")
    print()
    print(
        json.dumps(
            {
                "benchmark": "boot_burst",
                "clients": args.clients,
                "rounds": args.rounds,
                "file_size": args.file_size,
                "blksize": BLKSIZE,
                "cpus": os.cpu_count(),
                "baseline_http": has_nginx,
                "versions": tool_versions(),
                "summary": summary,
                "runs": [{k: v for k, v in asdict(r).items() if k != "server_log"} for r in runs],
            },
            separators=(",", ":"),
        )
    )
    return 1 if any(r.failures for r in runs) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50, help="simulated PXE clients per burst (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per side, alternating (default 3)")
    parser.add_argument("--file-size", type=int, default=FILE_SIZE, help=f"size of {BOOT_FILE} (default {FILE_SIZE})")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs, leases)")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(Path(args.worker))
    if not 1 <= args.clients <= 150:
        parser.error("--clients must be 1..150 (the DHCP range holds 151 addresses)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        return orchestrate(args)
    except BenchError as exc:
        print(f"boot_burst: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
