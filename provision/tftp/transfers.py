"""Answering requests and driving downloads: what TftpService's event loop calls, in the server thread.

A request on the server port is parsed, checked and answered (ERROR from a new port, or the first DATA/OACK of a
transfer); each running transfer has its own socket, moved on by tftpy's `TftpStateExpectACK` and resent here.
How many transfers run, per client and waiting for a first ACK, and how long that wait is: `limits.py`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import selectors
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tftpy.TftpContexts import TftpContextServer
from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpShared import TftpException, TftpTimeoutExpectACK
from tftpy.TftpStates import TftpStateExpectACK

from provision.logcontext import bound, context
from provision.tftp.limits import FIRST_ACK_RETRIES, MAX_TRANSFERS, Throttle, Waiting, admit, first_ack_wait
from provision.tftp.paths import normalize_path, open_regular, resolve_path
from provision.tftp.protocol import (
    _WRQ,
    Request,
    RequestRefused,
    TftpErrorCode,
    error_packet,
    negotiate,
    parse_request,
)

log = logging.getLogger("provision.tftp")  # the package name, as before the split: one logger for the service

DynamicFiles = Callable[[str, str], bytes | None]
"""`dynamic(path, client_ip)`: the bytes to serve for `path` (relative, '/'-separated), or None."""
ClientMac = Callable[[str], str | None]
"""`client_mac(client_ip)`: the client's MAC (the kernel's neighbour table), or None: bound to its log lines."""

# What a refused client is told: the reason (symlink, '..') is for the log, not for whoever probes the server.
_PUBLIC_TEXT = {1: "File not found", 2: "Access violation"}
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8 if sys.platform == "linux" else None)  # not in Python 3.11
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


@dataclass(eq=False)
class _Transfer:
    ctx: Any  # tftpy TftpContextServer
    client: tuple[str, int]
    requested: str  # the name as sent
    path: str  # normalized
    size: int
    blksize: int
    timeout: float
    started: float
    deadline: float
    retries: int = 0
    acked: bool = False  # the client ACKed something: it is there (a flood of RRQs never does)
    mac: str | None = None  # the client's MAC in the neighbour table when it asked: its log lines carry it

    @property
    def who(self) -> str:
        return f"{self.client[0]}:{self.client[1]}"

    @property
    def sent(self) -> int:
        return int(self.ctx.metrics.bytes)


class _Handlers:
    """TftpService's requests, transfers and reply sockets (its base class; the service sets these attributes)."""

    host: str
    interface: str | None
    dynamic: DynamicFiles | None
    client_mac: ClientMac | None
    max_blksize: int
    timeout: float
    retries: int
    _port: int
    _real_root: str
    _sock: socket.socket | None
    _selector: selectors.BaseSelector | None
    _transfers: dict[tuple[str, int], _Transfer]  # oldest first
    _factory: TftpPacketFactory
    _flood_log: Throttle  # WARNINGs about requests dropped or transfers never acknowledged
    _waiting: Waiting[tuple[Request, str | None]]  # requests over their address's share: (request, local)
    _to_resume: set[str]  # addresses whose waiting requests may start
    _resuming: bool

    def _next_wait(self) -> float | None:
        if not self._transfers:
            return None
        return max(0.0, min(t.deadline for t in self._transfers.values()) - time.monotonic())

    def _on_request(self) -> None:
        assert self._sock is not None
        try:
            data, ancdata, _, address = self._sock.recvmsg(65536, socket.CMSG_SPACE(12))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("TFTP receive on port %d failed: %s", self._port, exc)
            return
        client = (str(address[0]), int(address[1]))
        with bound(mac=self._mac_of(client[0])):
            try:
                self._handle_request(data, client, _local_address(ancdata))
            except Exception:
                log.exception("client %s:%d: unexpected error handling a request", *client)

    def _mac_of(self, ip: str) -> str | None:
        """The MAC of ``ip`` for the log lines of its request (None: unknown, or no lookup)."""
        return None if self.client_mac is None else self.client_mac(ip)

    def _handle_request(self, data: bytes, client: tuple[str, int], local: str | None) -> None:
        who = f"{client[0]}:{client[1]}"
        if data[:2] == b"\0\5":  # an ERROR on the request port: never answer one
            log.debug("client %s: ERROR packet on the request port ignored", who)
            return
        try:
            request = parse_request(data)
        except RequestRefused as exc:
            log.warning("client %s: malformed request refused: %s", who, exc.reason)
            self._reply(client, local, exc.code, exc.reason)
            return
        running = self._transfers.get(client)
        if running is not None:
            if running.requested == request.filename and running.sent <= running.blksize:
                log.debug("client %s: repeated request ignored, its transfer is starting", who)
                return  # the client did not see our first answer yet; the resend timer handles it
            self._finish(running, "the client sent a new request from the same port", logging.INFO)
        if request.opcode == _WRQ:
            log.warning("client %s: write request for %r refused: this TFTP server is read-only", who, request.filename)
            self._reply(client, local, TftpErrorCode.ACCESS_VIOLATION, "read-only server")
            return
        if request.mode != "octet":
            log.warning("client %s: %r refused: mode %r, only octet (binary) is served", who, request.filename,
                        request.mode)  # fmt: skip
            self._reply(client, local, TftpErrorCode.ILLEGAL_OPERATION, "only octet (binary) mode is supported")
            return
        self._serve(request, client, local)

    def _serve(self, request: Request, client: tuple[str, int], local: str | None) -> None:
        """Start the transfer of a checked read request, when its address has room; else it waits, or goes."""
        who = f"{client[0]}:{client[1]}"
        room = admit(self._transfers.values(), client[0])
        if room.drop is not None:
            if self._waiting.add(client, (request, local), time.monotonic()):
                log.debug("client %s: %r waits: %s", who, request.filename, room.drop)
            else:
                log.log(self._flood_level(), "client %s: %r dropped unanswered: %s", who, request.filename, room.drop)
            return
        if room.busy:
            log.warning("client %s: %r refused: %d transfers running", who, request.filename, MAX_TRANSFERS)
            self._reply(client, local, TftpErrorCode.NOT_DEFINED, "server busy, try again")
            return
        try:
            path, fileobj, size = self._open(request.filename, client[0])
        except RequestRefused as exc:
            level = logging.INFO if exc.code == TftpErrorCode.FILE_NOT_FOUND else logging.WARNING
            log.log(level, "client %s: %r refused: %s", who, request.filename, exc.reason)
            self._reply(client, local, exc.code, _PUBLIC_TEXT.get(exc.code, exc.reason))
            return
        if room.evict is not None:
            self._finish(room.evict, f"no first ACK, ended to make room for {who}", self._flood_level())
        self._begin(client, local, request.filename, path, fileobj, size, request.options)

    def _flood_level(self) -> int:
        return logging.WARNING if self._flood_log.allow() else logging.DEBUG

    def _resume(self, ip: str) -> None:
        """Start the waiting requests of `ip` it now has room for (one of its transfers was ACKed or ended)."""
        self._to_resume.add(ip)
        if self._resuming:  # called from inside the loop below (a transfer ended while starting another)
            return
        self._resuming = True
        try:
            while self._to_resume:
                address = self._to_resume.pop()
                while admit(self._transfers.values(), address).free:
                    waiting = self._waiting.pop(address, time.monotonic())
                    if waiting is None:
                        break
                    client, (request, local) = waiting
                    if client not in self._transfers:
                        with bound(mac=self._mac_of(client[0])):
                            self._serve(request, client, local)
        finally:
            self._resuming = False

    def _open(self, requested: str, client_ip: str) -> tuple[str, IO[bytes], int]:
        path = normalize_path(requested)
        if self.dynamic is not None:
            try:
                content: object = self.dynamic(path, client_ip)
            except Exception:
                log.exception("client %s: rendering %s failed", client_ip, path)
                raise RequestRefused(requested, "could not be rendered", TftpErrorCode.NOT_DEFINED) from None
            if content is not None:
                if not isinstance(content, bytes | bytearray):
                    log.error("client %s: dynamic content for %s is %s, not bytes", client_ip, path, type(content))
                    raise RequestRefused(requested, "could not be rendered", TftpErrorCode.NOT_DEFINED)
                return path, io.BytesIO(content), len(content)
        fileobj, size = open_regular(resolve_path(Path(self._real_root), path))
        return path, fileobj, size

    def _begin(
        self,
        client: tuple[str, int],
        local: str | None,
        requested: str,
        path: str,
        fileobj: IO[bytes],
        size: int,
        options: dict[str, str],
    ) -> None:
        assert self._selector is not None
        agreed = negotiate(options, size, max_blksize=self.max_blksize, timeout=self.timeout)
        try:
            ctx = TftpContextServer(client[0], client[1], agreed.timeout, self._real_root, flock=False)
        except OSError as exc:
            fileobj.close()
            log.warning("client %s:%d: cannot open a socket for %s: %s", *client, path, exc)
            self._reply(client, local, TftpErrorCode.NOT_DEFINED, "server busy, try again")
            return
        now = time.monotonic()
        deadline = now + first_ack_wait(agreed.timeout)
        mac = context().get("mac")  # bound by the request
        transfer = _Transfer(ctx, client, requested, path, size, agreed.blksize, agreed.timeout, now, deadline, mac=mac)
        ctx.fileobj = fileobj
        ctx.file_to_transfer = path
        ctx.tidport = client[1]
        ctx.options = dict(agreed.oack)  # what tftpy sends in the OACK and reads the blksize from
        ctx.metrics.start_time = ctx.last_update = time.time()
        try:
            self._prepare(ctx.sock, local)
            state = TftpStateExpectACK(ctx)
            if agreed.oack:
                state.sendOACK()  # the client ACKs block 0
            else:
                ctx.next_block = 1
                ctx.pending_complete = state.sendDAT()
            ctx.state = state
        except (OSError, TftpException) as exc:
            self._finish(transfer, f"cannot send: {exc}", logging.WARNING)
            return
        self._transfers[client] = transfer
        self._selector.register(ctx.sock, selectors.EVENT_READ, transfer)
        log.debug("client %s: sending %s (%d bytes, options %s)", transfer.who, path, size, agreed.oack or "none")

    def _on_packet(self, transfer: _Transfer) -> None:
        if self._transfers.get(transfer.client) is not transfer:
            return  # finished earlier in this turn
        ctx = transfer.ctx
        try:
            data, address = ctx.sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError as exc:
            self._finish(transfer, f"receive failed: {exc}", logging.WARNING)
            return
        if (address[0], address[1]) != transfer.client:
            log.warning("client %s: packet from %s:%d (unknown transfer id) discarded", transfer.who, *address[:2])
            self._send(ctx.sock, address, TftpErrorCode.UNKNOWN_TRANSFER_ID, "unknown transfer id")
            return
        if data[:2] == b"\0\5":
            self._client_error(transfer, data)
            return
        last = ctx.last_pkt
        try:
            packet = self._factory.parse(data)
            ctx.last_update = time.time()
            ctx.state = ctx.state.handle(packet, address[0], address[1])
            self._acked(transfer)
        except TftpTimeoutExpectACK:  # a duplicate ACK after the resend time: resend now
            self._acked(transfer)
            self._resend(transfer, time.monotonic())
            return
        except TftpException as exc:
            self._send(ctx.sock, transfer.client, TftpErrorCode.NOT_DEFINED, str(exc))
            self._finish(transfer, f"protocol error: {exc}", logging.WARNING)
            return
        except Exception as exc:  # tftpy's decoders raise struct.error, ValueError ... on garbage
            self._send(ctx.sock, transfer.client, TftpErrorCode.ILLEGAL_OPERATION, "malformed packet")
            self._finish(transfer, f"malformed packet: {exc!r}", logging.WARNING)
            return
        if ctx.state is None:  # the last DATA was acknowledged
            self._finish(transfer, None)
        elif ctx.last_pkt is not last:  # a new DATA went out
            transfer.retries = 0
            transfer.deadline = time.monotonic() + transfer.timeout

    def _acked(self, transfer: _Transfer) -> None:
        if not transfer.acked:
            transfer.acked = True
            self._resume(transfer.client[0])

    def _client_error(self, transfer: _Transfer, data: bytes) -> None:
        code = int.from_bytes(data[2:4], "big") if len(data) >= 4 else -1
        message = data[4:].split(b"\0", 1)[0].decode("ascii", "replace")
        if transfer.sent == 0:
            # OVMF asks for tsize, reads the OACK and aborts (its size probe), then asks again: normal.
            why, level = (
                f"client ended it after the option answer (size probe?): error {code} {message!r}",
                logging.INFO,
            )
        else:
            why, level = f"client aborted: error {code} {message!r}", logging.WARNING
        self._finish(transfer, why, level)

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for transfer in list(self._transfers.values()):
            if now >= transfer.deadline:
                with bound(mac=transfer.mac):
                    self._resend(transfer, now)

    def _resend(self, transfer: _Transfer, now: float) -> None:
        transfer.retries += 1
        retries, wait = self.retries, transfer.timeout
        if not transfer.acked:  # a real client ACKs at once; a flood never does: give up quickly
            retries, wait = min(retries, FIRST_ACK_RETRIES), first_ack_wait(wait)
        if transfer.retries > retries:
            level = logging.WARNING if transfer.acked else self._flood_level()
            self._finish(transfer, f"no answer after {retries} resends", level)
            return
        try:
            transfer.ctx.state.resendLast()
        except (OSError, TftpException) as exc:
            self._finish(transfer, f"resend failed: {exc}", logging.WARNING)
            return
        transfer.deadline = now + wait
        log.debug("client %s: no answer within %.1f s, resent (%d/%d)", transfer.who, wait, transfer.retries,
                  retries)  # fmt: skip

    def _finish(self, transfer: _Transfer, problem: str | None, level: int = logging.INFO) -> None:
        ended = self._transfers.get(transfer.client) is transfer
        if ended:
            del self._transfers[transfer.client]
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(transfer.ctx.sock)
        sent = transfer.sent
        try:
            transfer.ctx.end()  # closes its socket and the file
        except Exception as exc:
            log.debug("client %s: closing the transfer: %r", transfer.who, exc)
        seconds = time.monotonic() - transfer.started
        if problem is None:
            log.info("client %s: sent %s, %d bytes in %.3f s (blksize %d)", transfer.who, transfer.path, sent,
                     seconds, transfer.blksize)  # fmt: skip
        else:
            log.log(level, "client %s: %s stopped after %d of %d bytes in %.3f s: %s", transfer.who, transfer.path,
                    sent, transfer.size, seconds, problem)  # fmt: skip
        if ended:
            self._resume(transfer.client[0])  # its address may have requests waiting

    # -- sockets

    @property
    def _wildcard(self) -> bool:
        return self.host in ("", "0.0.0.0")  # nosec B104  # noqa: S104 - a test of an address, not a bind

    def _prepare(self, sock: socket.socket, local: str | None) -> None:
        """Give a reply socket the server's interface and address (the one the request came to)."""
        if self.interface:
            sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, self.interface.encode() + b"\0")
        if not self._wildcard:
            sock.bind((self.host, 0))
        elif local is not None:
            with contextlib.suppress(OSError):  # e.g. a broadcast address: let the kernel choose
                sock.bind((local, 0))
        sock.setblocking(False)

    def _reply(self, client: tuple[str, int], local: str | None, code: TftpErrorCode, message: str) -> None:
        """Answer a refused request with an ERROR from a new port (a new transfer id, RFC 1350)."""
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                self._prepare(sock, local)
                self._send(sock, client, code, message)
        except OSError as exc:
            log.debug("client %s:%d: cannot send error: %s", *client, exc)

    @staticmethod
    def _send(sock: socket.socket, address: tuple[str, int], code: TftpErrorCode, message: str) -> None:
        try:
            sock.sendto(error_packet(code, message), address)
        except OSError as exc:
            log.debug("client %s:%d: cannot send error: %s", address[0], address[1], exc)


def _local_address(ancdata: list[tuple[int, int, bytes]]) -> str | None:
    """The local address a request arrived on, from IP_PKTINFO (struct in_pktinfo: ifindex, spec_dst, addr)."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            address = socket.inet_ntoa(data[4:8])
            return None if address == "0.0.0.0" else address  # nosec B104  # noqa: S104
    return None
