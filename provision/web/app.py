"""The aiohttp application: routes and the small middlewares that every request goes through."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable

from aiohttp import web

from provision import __version__
from provision.boot import Booter, TemplateError
from provision.images import ImageStore
from provision.images.web import add_image_routes
from provision.macaddr import BadMac, normalize_mac
from provision.runs import Runs
from provision.web import api

log = logging.getLogger(__name__)

BOOTER: web.AppKey[Booter] = web.AppKey("booter", Booter)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def grub_abortive_close(request: web.Request, handler: Handler) -> web.StreamResponse:
    """GRUB jumps to the kernel without closing TCP and reuses source ports with near-fixed sequence
    numbers: the next boot of the same PC then times out against our socket in LAST-ACK (LAB.md). An
    abortive close (SO_LINGER 1, 0) on GRUB's connections frees the port at once."""
    if request.headers.get("User-Agent", "").startswith("GRUB"):
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return await handler(request)


def _mac(request: web.Request) -> str:
    try:
        return normalize_mac(request.match_info["mac"])
    except BadMac as exc:
        log.warning("HTTP %s from %s: %s", request.path[:100], request.remote, exc)
        raise web.HTTPBadRequest(text=f"{exc}\n") from None


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "version": __version__})


async def ipxe_script(request: web.Request) -> web.Response:
    mac = _mac(request)
    try:
        text = request.app[BOOTER].ipxe_script(mac)
    except TemplateError as exc:
        log.error("%s: %s", mac, exc)
        raise web.HTTPInternalServerError(text="boot template error, see the server log\n") from None
    return web.Response(text=text, content_type="text/plain")


async def grub_main(request: web.Request) -> web.Response:
    return web.Response(text=request.app[BOOTER].grub_main(), content_type="text/plain")


async def grub_host(request: web.Request) -> web.Response:
    mac = _mac(request)
    return web.Response(text=request.app[BOOTER].grub_host(mac), content_type="text/plain")


def make_app(booter: Booter, images: ImageStore | None = None) -> web.Application:
    app = web.Application(middlewares=[grub_abortive_close], client_max_size=api.MAX_BODY)
    app[BOOTER] = booter
    app[api.STORE] = booter.store
    app[api.RUNS] = Runs(booter.store, images, booter.config.recipes_dir, booter.config.state_dir / "probes")
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/boot/{mac}.ipxe", ipxe_script)
    app.router.add_get("/boot/grub/grub.cfg", grub_main)
    app.router.add_get("/boot/grub/hosts/{mac}.cfg", grub_host)
    app.router.add_post("/api/v1/hello", api.hello)
    app.router.add_post("/api/v1/firstboot", api.firstboot)
    app.router.add_get("/api/v1/machines", api.machines)
    app.router.add_get("/api/v1/machines/{mac}/events", api.machine_events)
    app.router.add_post("/api/v1/runs/{run}/progress", api.run_progress)
    app.router.add_post("/api/v1/runs/{run}/report", api.run_report)
    app.router.add_get("/api/v1/runs", api.list_runs)
    app.router.add_get("/api/v1/runs/{run}", api.get_run)
    if images is not None:
        add_image_routes(app, images)
    root = booter.config.boot_root
    if root.is_dir():
        # aiohttp resolves the path and refuses anything outside root; symlinks are not followed.
        app.router.add_static("/files/", root, follow_symlinks=False, show_index=False)
    else:
        log.warning("boot root %s does not exist: /files/ is not served", root)
    return app
