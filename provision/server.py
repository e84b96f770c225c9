"""`provision serve`: DHCP, TFTP and HTTP together, one lifecycle.

Services start in order (store, HTTP, TFTP, DHCP) and stop in reverse. The first fatal error of any of them
(port in use, interface missing, a service thread dying) stops all of them and is raised to the caller with
the service's name; SIGTERM/SIGINT stop all cleanly. A bad packet or request is never fatal: each service
logs and drops it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from provision.boot import Booter
from provision.config import DhcpMode, ServerConfig
from provision.dhcp import DhcpServer, LeasePool, PxeSettings
from provision.errors import FatalError
from provision.images import ImageStore
from provision.store import Store
from provision.tftp import TftpService
from provision.web import make_app

log = logging.getLogger(__name__)

# Seconds the HTTP server gives requests in flight when it stops (aiohttp waits this long for handlers, then as
# long again after cancelling them; its default is 60 s). Once stopping, aiohttp reads nothing more from a
# connection, so a request whose body had not fully arrived would hold SIGTERM for the whole grace; the agent
# retries whatever was cut.
HTTP_STOP_GRACE = 3.0


class ServiceFailed(FatalError):
    """A service could not start or died; carries the service name and the cause."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}", service=service)
        self.service = service


class Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Bound:
    """Where each service listens, once started (port 0 in the config means: chosen by the kernel)."""

    http: int = 0
    tftp: int = 0
    dhcp: int = 0
    proxy: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def check_interface(name: str | None) -> None:
    if name is None:
        return
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise ServiceFailed("network", f"interface {name!r} does not exist") from None


def _bind_message(exc: OSError, what: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{what} is already in use (another DHCP/TFTP/HTTP server running?)"
    if exc.errno == errno.EACCES:
        return f"{what}: permission denied (ports below 1024 need root)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{what}: the address is not on this machine"
    if exc.errno == errno.EPERM:
        return f"{what}: operation not permitted (binding to an interface needs root or CAP_NET_RAW)"
    return f"{what}: {exc.strerror or exc}"


def http_socket(host: str, port: int, interface: str | None) -> socket.socket:
    """The HTTP listening socket, bound to `interface` (SO_BINDTODEVICE) when given, as DHCP's and TFTP's are:
    a request reaching this machine through another interface, even for the serve address, is refused by the
    kernel (issue 12, defect 8). Connections from this machine itself still arrive (the lab's API calls)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def pxe_settings(cfg: ServerConfig, http_port: int, booter: Booter | None = None) -> PxeSettings:
    """What DHCP answers point at; `http_port` is the bound port (the config may say 0)."""
    extra: dict[str, Any] = {}
    if booter is not None:
        extra = {"boot_allowed": booter.should_answer, "chain_ipxe": booter.chain_ipxe}
    return PxeSettings(
        server_ip=cfg.address,
        http_port=http_port,
        uefi_loader=cfg.boot.uefi_loader.value,
        http_boot_url="http://{server}:{port}/files/{file}",
        **extra,
    )


def make_dhcp_server(cfg: ServerConfig, settings: PxeSettings, on_failure: Callable[[str], None]) -> DhcpServer:
    pool = None
    if cfg.dhcp.mode is DhcpMode.FULL:
        assert cfg.dhcp.range_start is not None and cfg.dhcp.range_end is not None  # checked by the config
        pool = LeasePool(
            start=cfg.dhcp.range_start,
            end=cfg.dhcp.range_end,
            netmask=cfg.dhcp.netmask,
            router=cfg.dhcp.router,
            dns=tuple(cfg.dhcp.dns),
            lease_time=cfg.dhcp.lease_seconds,
        )
    return DhcpServer(
        settings,
        cfg.dhcp.mode.value,
        bind="0.0.0.0" if cfg.interface else str(cfg.address),  # nosec B104  # noqa: S104 - confined by SO_BINDTODEVICE
        interface=cfg.interface,
        port=cfg.ports.dhcp,
        pxe_port=cfg.ports.proxy,
        pool=pool,
        lease_file=cfg.state_dir / "leases.json",
        on_failure=on_failure,
        offer_hold=cfg.dhcp.offer_seconds,
        decline_hold=cfg.dhcp.decline_seconds,
    )


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.bound = Bound()
        self.store: Store | None = None
        self._services: list[tuple[str, Service]] = []
        self._runner: web.AppRunner | None = None
        self._failure: ServiceFailed | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once every service listens (the CLI then reports the ports)

    # Services running in threads report a death through this, from any thread.
    def report_failure(self, service: str, message: str) -> None:
        if self._loop is None:
            return
        failure = ServiceFailed(service, message)

        def note() -> None:
            if self._failure is None:
                self._failure = failure
            self._wake.set()

        self._loop.call_soon_threadsafe(note)

    async def _start_http(self, booter: Booter) -> None:
        cfg = self.config
        images = ImageStore(cfg.images_dir)
        self._runner = web.AppRunner(
            make_app(booter, images), access_log=None, handle_signals=False, shutdown_timeout=HTTP_STOP_GRACE
        )
        await self._runner.setup()
        where = f"{cfg.http_host}:{cfg.ports.http}" + (f" on {cfg.interface}" if cfg.interface else "")
        try:
            sock = http_socket(cfg.http_host, cfg.ports.http, cfg.interface)
        except OSError as exc:
            raise ServiceFailed("http", _bind_message(exc, where)) from None
        self.bound.http = sock.getsockname()[1]
        try:
            await web.SockSite(self._runner, sock).start()  # the listening server owns the socket from here
        except OSError as exc:
            sock.close()
            raise ServiceFailed("http", _bind_message(exc, where)) from None
        booter.http_url = f"http://{cfg.address}:{self.bound.http}"
        only = f" (interface {cfg.interface} only)" if cfg.interface else ""
        log.info("http: listening on %s:%d%s", cfg.http_host, self.bound.http, only)

    def _start_thread_service(self, name: str, make: Callable[[], Service]) -> Service:
        try:
            service = make()
            service.start()
        except FatalError as exc:
            raise ServiceFailed(name, str(exc).removeprefix(f"{name}: ")) from None
        except OSError as exc:
            raise ServiceFailed(name, _bind_message(exc, name)) from None
        self._services.append((name, service))
        return service

    def _start_tftp(self, booter: Booter) -> None:
        cfg = self.config
        host = "0.0.0.0" if cfg.interface else str(cfg.address)  # nosec B104  # noqa: S104 - confined by SO_BINDTODEVICE
        service = self._start_thread_service(
            "tftp",
            lambda: TftpService(
                root=cfg.boot_root,
                host=host,
                port=cfg.ports.tftp,
                dynamic=booter.tftp_file,
                interface=cfg.interface,
                on_failure=lambda exc: self.report_failure("tftp", str(exc)),
                client_mac=booter.neighbours,
            ),
        )
        self.bound.tftp = int(getattr(service, "port", cfg.ports.tftp))
        log.info("tftp: serving %s on port %d", cfg.boot_root, self.bound.tftp)

    def _start_dhcp(self, booter: Booter) -> None:
        cfg = self.config
        if cfg.dhcp.mode is DhcpMode.OFF:
            log.info("dhcp: off")
            return
        settings = pxe_settings(cfg, self.bound.http, booter)
        service = self._start_thread_service(
            "dhcp", lambda: make_dhcp_server(cfg, settings, lambda why: self.report_failure("dhcp", why))
        )
        self.bound.dhcp = int(getattr(service, "port", cfg.ports.dhcp))
        self.bound.proxy = int(getattr(service, "proxy_port", cfg.ports.proxy))
        log.info(
            "dhcp: %s mode on %s, ports %d/%d",
            cfg.dhcp.mode.value,
            cfg.interface or f"{cfg.address} (no interface: unicast only, no broadcast heard)",
            self.bound.dhcp,
            self.bound.proxy,
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        check_interface(self.config.interface)
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.config.state_dir / "provision.db")
        booter = Booter(self.config, self.store)
        try:
            await self._start_http(booter)
            self._start_tftp(booter)
            self._start_dhcp(booter)
        except BaseException:
            await self.stop()
            raise
        self.ready.set()

    async def stop(self) -> None:
        for name, service in reversed(self._services):
            try:
                await asyncio.to_thread(service.stop)
            except Exception:
                log.exception("%s: error while stopping", name)
        self._services.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, run until `stop` is set or a service fails, then stop everything."""
        await self.start()
        try:
            stopper = asyncio.ensure_future(stop.wait())
            waker = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stopper, waker):
                task.cancel()
        finally:
            await self.stop()
        if self._failure is not None:
            raise self._failure
