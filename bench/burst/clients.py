"""The simulated PXE clients: TFTP and HTTP as iPXE does them, one client's boot, the worker process."""

from __future__ import annotations

import http.client
import json
import resource
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .common import (
    BLKSIZE,
    BOOT_FILE,
    HTTP_ATTEMPTS,
    HTTP_TIMEOUT,
    SERVER_IP,
    TFTP_PORT,
    TFTP_RESENDS,
    TFTP_TIMEOUT,
    USER_AGENT,
    StepFailed,
)
from .dhcp import DhcpLink, check_ack, dhcp_lease


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
