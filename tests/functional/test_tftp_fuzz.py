"""Fuzz the TFTP service (``tftp`` target): random and mutated RRQ/WRQ/DATA/ACK/ERROR/OACK datagrams to a real
`TftpService` on 127.0.0.1 port 0, serving a boot root (files, a folder, a FIFO, a symlink out) and GRUB's
per-MAC configs rendered by the server's own `Booter.tftp_file`, as `provision serve` wires it.

A case is a request (RFC 1350 fields, RFC 2347/2348/2349 options with odd names and values, modes, paths with
``..``, NULs, backslashes, non-UTF-8 bytes, long names; sometimes cut, bit-flipped or padded), then up to four
more datagrams (ACKs of any block, ERRORs, OACKs, DATA, garbage, the request again) to the transfer's port or the
server's, from the client's port or another (an unknown transfer id). After each case the service must answer a
plain request within CASE_BOUND seconds (no hang); after the target: its thread runs, nothing was logged with a
traceback, real downloads (a file, a rendered GRUB config) are byte-identical, and stopping it closes every
descriptor it opened.
"""

from __future__ import annotations

import io
import logging
import os
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tftpy
from hypothesis import strategies as st

from provision.boot import Booter
from provision.config import ServerConfig
from provision.store import Store
from provision.tftp import TftpService
from tests.support import fuzz

CASE_BOUND = 2.0  # seconds for the service to answer the probe after a case
FIRST_ANSWER = 0.2  # seconds to wait for the answer to a request whose transfer the case goes on talking to
RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
CLIENTS = 6  # client sockets: each holds at most one transfer, so abandoned ones stay bounded
FILES = {"undionly.kpxe": 70_000, "small": 10, "empty": 0, "block": 512, "grub/fonts/unicode.pf2": 1500}


class Problems(logging.Handler):
    """Records of the service that carry a traceback or say it stopped."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "unexpected error" in record.getMessage():
            self.found.append(self.format(record) if record.exc_info else record.getMessage())


@dataclass
class Served:
    service: TftpService
    root: Path
    clients: list[socket.socket]
    prober: socket.socket
    problems: Problems

    @property
    def server(self) -> tuple[str, int]:
        return ("127.0.0.1", self.service.port)

    def probe(self) -> None:
        """A plain request for a missing file: ERROR 1 within CASE_BOUND seconds, or the service hangs."""
        self.prober.sendto(b"\0\1fuzz-probe-missing\0octet\0", self.server)
        while True:
            data = self.prober.recv(70_000)  # socket.timeout: the service did not answer in time
            if data[:4] == b"\0\5\0\1":
                return

    def drain(self) -> None:
        for sock in self.clients:
            sock.setblocking(False)
            try:
                while True:
                    sock.recv(70_000)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            finally:
                sock.settimeout(CASE_BOUND)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("tftp-fuzz")
    root = tmp / "boot"
    for name, size in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(size))
    (root / "folder").mkdir()
    os.mkfifo(root / "fifo")
    (tmp / "secret").write_text("secret\n")
    (root / "link-out").symlink_to(tmp / "secret")
    (root / "link-in").symlink_to(root / "small")
    config = ServerConfig.model_validate({"address": "127.0.0.1", "boot_root": str(root)})
    problems = Problems()
    logger = logging.getLogger("provision")
    logger.addHandler(problems)
    with Store(tmp / "db.sqlite") as store:
        booter = Booter(config, store)
        before = fd_count()
        service = TftpService(root, "127.0.0.1", 0, dynamic=booter.tftp_file)
        service.start()
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENTS)]
        prober = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in [*clients, prober]:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(CASE_BOUND)
        try:
            yield Served(service, root, clients, prober, problems)
        finally:
            for sock in [*clients, prober]:
                sock.close()
            service.stop()
            logger.removeHandler(problems)
            assert fd_count() == before, "the TFTP service left descriptors open after stop()"


# --- datagrams -----------------------------------------------------------------------------------------------

NAMES: list[bytes] = [
    b"undionly.kpxe", b"/undionly.kpxe", b"//undionly.kpxe", b"./small", b"small", b"empty", b"block", b"folder",
    b"fifo", b"link-out", b"link-in", b"grub/grub.cfg", b"/grub/grub.cfg", b"grub//hosts/./52:54:00:12:34:56.cfg",
    b"grub/hosts/52:54:00:12:34:56.cfg", b"grub/hosts/52%3A54%3A00%3A12%3A34%3A56.cfg", b"grub/hosts/nope.cfg",
    b"grub/hosts/.cfg", b"grub/hosts/../../etc/passwd.cfg", b"grub/fonts/unicode.pf2", b"../etc/passwd",
    b"/etc/passwd", b"a/../../b", b"..", b"/..", b"\\..\\win.ini", b"small\0tail", b"caf\xc3\xa9", b"\xff\xfe",
    b"x" * 255, b"x" * 256, b"a/" * 2000, b"%2e%2e/small", b"", b" ", b"small ", b"SMALL",
]  # fmt: skip
MODES = [b"octet", b"octet", b"octet", b"OCTET", b"netascii", b"mail", b"binary", b"", b"octet\xff", b"\xc3\xa9"]
OPTION_NAMES = [b"blksize", b"tsize", b"timeout", b"windowsize", b"multicast", b"BLKSIZE", b"TSize", b"", b"x" * 300]
OPTION_VALUES = [
    b"0", b"7", b"8", b"512", b"1428", b"1468", b"1469", b"65464", b"65465", b"65536", b"99999999999999999999",
    b"-1", b"abc", b"", b" 512", b"1e3", b"0x200", "٥١٢".encode(), b"1\xff", b"256", b"255", b"1", b"0",
]  # fmt: skip


SERVED = [b"undionly.kpxe", b"small", b"empty", b"block", b"grub/grub.cfg", b"grub/hosts/52:54:00:12:34:56.cfg",
          b"grub/fonts/unicode.pf2", b"link-in"]  # fmt: skip


def pick(rng: random.Random, values: list[bytes], usual: list[bytes] | None = None) -> bytes:
    """Six times in ten one of ``usual`` (what a real client sends) when given, else one of ``values``, one time
    in ten any bytes."""
    roll = rng.random()
    if usual and roll < 0.6:
        return rng.choice(usual)
    if roll < 0.9:
        return rng.choice(values)
    return rng.randbytes(rng.randint(0, 24))


def request(rng: random.Random) -> bytes:
    """An RRQ (mostly) or WRQ, its options, then one time in three a breakage."""
    opcode = rng.choice([RRQ] * 24 + [WRQ, DATA, ACK, ERROR, OACK, 0, 7, 0xFFFF])
    fields = [pick(rng, NAMES, SERVED), pick(rng, MODES, [b"octet"])]
    for _ in range(rng.choice([0, 0, 1, 2, 2, 3, 4])):
        fields += [pick(rng, OPTION_NAMES, [b"blksize", b"tsize"]), pick(rng, OPTION_VALUES, [b"1468", b"0"])]
    if rng.random() < 0.1:
        fields.pop()  # an option without its value
    data = struct.pack("!H", opcode) + b"".join(f + b"\0" for f in fields)
    breakage = rng.randrange(18)
    if breakage == 0:
        data = data[: rng.randint(0, len(data))]
    elif breakage == 1:
        data = data[:-1]  # no final NUL
    elif breakage == 2:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    elif breakage == 3:
        data += rng.randbytes(rng.randint(1, 40))
    elif breakage == 4:
        data += b"\0" * rng.choice([1, 10, 1000])
    elif breakage == 5:
        data = data[:65000] + b"y" * max(0, 65000 - len(data))  # near the largest UDP datagram
    return data


BLOCKS = [0, 1, 1, 1, 2, 3, 137, 138, 65535]


def follow_up(rng: random.Random) -> tuple[str, str, bytes]:
    """(to whom: transfer | server, from: same | other port, datagram): mostly ACKs, as a client sends."""
    kind = rng.choice([0, 0, 0, 1, 2, 3, 4, 5, 6])
    if kind == 0:
        data = struct.pack("!HH", ACK, rng.choice(BLOCKS) if rng.random() < 0.8 else rng.randrange(65536))
    elif kind == 1:
        code = rng.choice([0, 1, 2, 5, 8, 255, 65535])
        data = struct.pack("!HH", ERROR, code) + rng.randbytes(rng.randint(0, 30)) + rng.choice([b"\0", b""])
    elif kind == 2:
        data = struct.pack("!H", OACK) + b"".join(pick(rng, OPTION_NAMES) + b"\0" for _ in range(rng.randint(0, 4)))
    elif kind == 3:
        data = struct.pack("!HH", DATA, rng.choice(BLOCKS)) + rng.randbytes(rng.randint(0, 600))
    elif kind == 4:
        data = rng.randbytes(rng.randint(0, 8))
    elif kind == 5:
        data = struct.pack("!H", ACK)  # an ACK without a block number
    else:
        data = request(rng)
    to = "server" if rng.random() < 0.2 else "transfer"
    source = "other" if rng.random() < 0.15 else "same"
    return to, source, data


def test_fuzz_tftp(served: Served) -> None:
    target = fuzz.target("tftp", examples=2000, budget=60, deadline=10, hang=30)

    @target.given(st.randoms(use_true_random=True))
    def case(rng: random.Random) -> None:
        client = rng.randrange(CLIENTS)
        first = request(rng)
        more = [follow_up(rng) for _ in range(rng.choice([0, 1, 1, 2, 3, 4]))]
        pause = 0.03 if rng.random() < 0.05 else 0.0  # sometimes let the server go on (resends, next blocks)
        sock = served.clients[client]
        sock.sendto(first, served.server)
        transfer: tuple[str, int] | None = None
        if any(to == "transfer" for to, _, _ in more) and first[:2] != b"\0\5":  # an ERROR gets no answer
            sock.settimeout(FIRST_ANSWER)
            try:
                answer, transfer = sock.recvfrom(70_000)
                target.tally[f"answer op {int.from_bytes(answer[:2], 'big')}"] += 1
            except TimeoutError:
                target.tally["no answer"] += 1  # e.g. the same request again while its transfer starts
            finally:
                sock.settimeout(CASE_BOUND)
        for to, source, data in more:
            sender = sock if source == "same" else served.clients[(client + 1) % CLIENTS]
            sender.sendto(data, transfer if to == "transfer" and transfer is not None else served.server)
        if pause:
            sock.settimeout(pause)
            try:
                sock.recv(70_000)
            except TimeoutError:
                pass
            finally:
                sock.settimeout(CASE_BOUND)
        try:
            served.probe()
        except TimeoutError:
            raise AssertionError(f"no answer within {CASE_BOUND} s after: {first[:200]!r} then {more!r:.600}") from None
        served.drain()

    case()
    target.done()
    assert served.service.running, "the TFTP server thread died"
    assert not served.problems.found, "\n\n".join(served.problems.found[:3])
    out = io.BytesIO()
    tftpy.TftpClient("127.0.0.1", served.service.port, options={"blksize": 1468, "tsize": 0}, flock=False).download(
        "undionly.kpxe", out, timeout=5
    )
    assert out.getvalue() == (served.root / "undionly.kpxe").read_bytes()
    out = io.BytesIO()
    tftpy.TftpClient("127.0.0.1", served.service.port, flock=False).download(
        "grub/hosts/52:54:00:0f:0f:0f.cfg", out, timeout=5
    )
    assert b"52:54:00:0f:0f:0f" in out.getvalue() or out.getvalue().startswith(b"#"), out.getvalue()[:200]
