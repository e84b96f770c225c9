"""The TFTP service: TftpService (start, stop, the event loop in its thread), ServiceError, tftpy's log levels.

Built on tftpy 0.8.7's protocol pieces: its packet codec, its per-transfer context (`TftpContextServer`:
socket, block counter with rollover, metrics) and its download state machine (`TftpStateExpectACK`: DATA/ACK
lock-step, duplicate ACKs, resend). Those are driven by the event loop below instead of
`tftpy.TftpServer.listen`, because that loop (0.8.7; the first two points measured, see docs/tftp.md):

- dies on the first exception that is not a TftpException, and one datagram is enough: a non-ASCII file name
  (UnicodeDecodeError), `blksize abc` (ValueError), a 3-byte packet (struct.error), an RRQ naming a folder
  (IsADirectoryError). A `dyn_file_func` returning io.BytesIO kills it too, after the first transfer: closing
  a context flock()s the file object, which needs `.name` and `fileno()`;
- notices `stop(now=True)` only when select() times out (the session timeout, 5 s by default);
- follows symlinks out of the root, serves a file name that starts with the root path as an absolute path,
  and honours write requests (there is no read-only mode);
- puts blksize in every OACK even when the client did not ask for it (RFC 2347 forbids that), clamps blksize
  to 65536 instead of RFC 2348's 65464, and drops the timeout option.

Here every request is parsed, checked and answered by this package (transfers.py, paths.py, protocol.py);
tftpy only moves the blocks.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tftpy.TftpPacketFactory import TftpPacketFactory

from provision.errors import FatalError
from provision.logcontext import bound
from provision.tftp.limits import Throttle, Waiting
from provision.tftp.protocol import DEFAULT_MAX_BLKSIZE, MIN_BLKSIZE, RFC_MAX_BLKSIZE, TftpErrorCode
from provision.tftp.transfers import _IP_PKTINFO, _SO_BINDTODEVICE, ClientMac, DynamicFiles, _Handlers, _Transfer

log = logging.getLogger("provision.tftp")  # the package name, as before the split: one logger for the service

DEFAULT_TIMEOUT = 2.0  # seconds before a DATA (or OACK) is sent again
DEFAULT_RETRIES = 5  # resends of one packet before the transfer is given up


class ServiceError(FatalError):
    """The TFTP service cannot start: port in use, permission, unknown interface or address, bad root."""

    def __init__(
        self, message: str, *, address: str, port: int, interface: str | None = None, errno: int | None = None
    ) -> None:
        super().__init__(message, address=address, port=port, interface=interface, errno=errno)
        self.address = address
        self.port = port
        self.interface = interface
        self.errno = errno


# --- tftpy's own logging --------------------------------------------------------------------------------


class _TftpyLogFilter(logging.Filter):
    """Lowers the level of tftpy's own log records (attached to each `tftpy.*` logger).

    tftpy logs every packet at INFO ("Sending ack to block 3", "Reached EOF ...") and routine events at
    WARNING ("Resending packet", "Received duplicate ACK"), without naming the client; TftpService logs one
    line per transfer naming client, file, bytes and duration, so those become DEBUG. tftpy logs a client's
    ERROR packet as ERROR ("ERR packet - errorcode ...", "Received ERR packet from peer"), but OVMF sends one
    on purpose after reading tsize in its first request (its size probe, see LAB.md): normal, so INFO. The
    event loop handles ERROR packets before tftpy sees them (`_on_packet` in transfers.py), so this is the
    safety net for that case.

    A logger's filters run after its level check, so lowering `levelno` alone would still reach handlers
    whose own level is NOTSET: the record is dropped unless the logger is enabled for the new level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        level = record.levelno
        if level < logging.ERROR:
            level = min(level, logging.DEBUG)
        elif "ERR packet" in record.getMessage():
            level = logging.INFO
        if level == record.levelno:
            return True
        record.levelno, record.levelname = level, logging.getLevelName(level)
        return logging.getLogger(record.name).isEnabledFor(level)


_TFTPY_FILTER = _TftpyLogFilter()


def quiet_tftpy_logging() -> None:
    """Attach the filter to every tftpy logger (idempotent). Called by TftpService.start()."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        ours = name == "tftpy" or name.startswith("tftpy.")
        if ours and isinstance(logger, logging.Logger) and _TFTPY_FILTER not in logger.filters:
            logger.addFilter(_TFTPY_FILTER)


# --- the service ----------------------------------------------------------------------------------------

RECEIVE_BUFFER = 4 << 20  # bytes: a burst of RRQs (a rack powering on, or a flood) waits here, not dropped


def _grow_receive_buffer(sock: socket.socket) -> None:
    """The default ~208 KiB holds ~250 requests: a burst of 600 unanswerable RRQs overflowed it, and a real
    client's RRQ in the middle was lost (it repeats it only after its own timeout). SO_RCVBUFFORCE passes
    net.core.rmem_max as root; else ask for what we may."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
            return
        except OSError:
            continue


class TftpService(_Handlers):
    """A read-only TFTP server on `host:port` serving `root`, in a background thread.

    `dynamic(path, client_ip)` is asked first for every valid path (relative, '/'-separated, e.g.
    `grub/grub.cfg`); bytes are served as the file (with their tsize), None falls back to the file tree.
    It runs in the server thread: keep it fast. `interface` binds the sockets to one network device.
    Per-request problems are answered and logged; should the server thread itself fail later,
    `on_failure` is called with a ServiceError (from that thread). `client_mac(client_ip)`: the client's MAC,
    asked once per request; the request's and its transfer's log lines carry it (provision.logcontext).
    """

    def __init__(
        self,
        root: Path,
        host: str = "0.0.0.0",  # nosec B104  # noqa: S104 - a PXE server answers on the boot network
        port: int = 69,
        dynamic: DynamicFiles | None = None,
        interface: str | None = None,
        *,
        max_blksize: int = DEFAULT_MAX_BLKSIZE,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        on_failure: Callable[[ServiceError], None] | None = None,
        client_mac: ClientMac | None = None,
    ) -> None:
        if not MIN_BLKSIZE <= max_blksize <= RFC_MAX_BLKSIZE:
            raise ValueError(f"max_blksize must be {MIN_BLKSIZE}..{RFC_MAX_BLKSIZE}, not {max_blksize}")
        self.root = Path(root)
        self.host = host
        self.interface = interface
        self.dynamic = dynamic
        self.client_mac = client_mac
        self.max_blksize = max_blksize
        self.timeout = timeout
        self.retries = retries
        self.on_failure = on_failure
        self._port = port
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_writer: socket.socket | None = None
        self._real_root = ""
        self._sock: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_reader: socket.socket | None = None
        self._transfers: dict[tuple[str, int], _Transfer] = {}
        self._factory = TftpPacketFactory()
        self._flood_log = Throttle()
        self._waiting = Waiting()
        self._to_resume = set()
        self._resuming = False

    @property
    def port(self) -> int:
        """The UDP port: the bound one once started (so port 0 works), else the one asked for."""
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- start / stop

    def start(self) -> None:
        """Bind the socket (raising ServiceError), then serve in a thread. Returns once bound."""
        if self.running:
            raise ServiceError("TFTP service already started", address=self.host, port=self._port)
        if not self.root.is_dir():
            raise ServiceError(
                f"TFTP root {self.root} is not a folder", address=self.host, port=self._port, interface=self.interface
            )
        self._real_root = os.path.realpath(self.root)
        sock = self._bind()
        if self._wake_writer is not None:  # left by a thread that failed
            self._wake_writer.close()
        self._port = sock.getsockname()[1]
        self._sock = sock
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, None)
        self._transfers = {}
        self._waiting = Waiting()
        self._stopping.clear()
        quiet_tftpy_logging()
        self._thread = threading.Thread(target=self._run, name=f"tftp-{self._port}", daemon=True)
        self._thread.start()
        where = f"{self.host}:{self._port}" + (f" on {self.interface}" if self.interface else "")
        log.info("TFTP serving %s read-only at %s", self.root, where)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop now: running transfers get an ERROR packet; returns when the thread has ended."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        if self._wake_writer is not None:
            with contextlib.suppress(OSError):
                self._wake_writer.send(b"x")
        thread.join(timeout)
        if thread.is_alive():
            log.warning("TFTP server thread on port %d did not stop within %.1f s", self._port, timeout)
            return
        self._thread = None
        if self._wake_writer is not None:
            self._wake_writer.close()
            self._wake_writer = None

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if self.interface:
                sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, self.interface.encode() + b"\0")
            sock.bind((self.host, self._port))
            _grow_receive_buffer(sock)
            if self._wildcard and _IP_PKTINFO is not None:
                sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise self._start_error(exc) from exc
        return sock

    def _start_error(self, exc: OSError) -> ServiceError:
        where = f"UDP port {self._port} on {self.host}"
        causes = {
            errno.EADDRINUSE: f"{where} is already in use: is another TFTP server running (dnsmasq with "
            "enable-tftp, tftpd-hpa, another provision serve)?",
            errno.EACCES: f"permission denied binding {where}: ports below 1024 need root or CAP_NET_BIND_SERVICE",
            errno.EPERM: f"operation not permitted on {where}"
            + (f" bound to interface {self.interface} (needs CAP_NET_RAW)" if self.interface else ""),
            errno.ENODEV: f"no network interface named {self.interface!r} for {where}",
            errno.EADDRNOTAVAIL: f"address {self.host} is not configured on this machine ({where})",
        }
        message = causes.get(exc.errno or 0, f"cannot open {where}: {exc.strerror or exc}")
        return ServiceError(message, address=self.host, port=self._port, interface=self.interface, errno=exc.errno)

    # -- the event loop (server thread)

    def _run(self) -> None:
        assert self._selector is not None and self._sock is not None and self._wake_reader is not None
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(self._next_wait()):
                    if key.fileobj is self._sock:
                        self._on_request()
                    elif isinstance(key.data, _Transfer):
                        with bound(mac=key.data.mac):
                            self._on_packet(key.data)
                    else:
                        with contextlib.suppress(OSError):
                            self._wake_reader.recv(64)
                self._check_timeouts()
        except Exception as exc:
            log.exception("TFTP server on port %d stopped by an unexpected error", self._port)
            if self.on_failure is not None:
                failure = ServiceError(f"TFTP server stopped: {exc!r}", address=self.host, port=self._port)
                self.on_failure(failure)
        finally:
            self._waiting = Waiting()  # nothing starts any more
            for transfer in list(self._transfers.values()):
                self._send(transfer.ctx.sock, transfer.client, TftpErrorCode.NOT_DEFINED, "server shutting down")
                with bound(mac=transfer.mac):
                    self._finish(transfer, "server stopping", logging.INFO)
            self._selector.close()
            self._sock.close()
            self._wake_reader.close()
            log.info("TFTP server on port %d stopped", self._port)
