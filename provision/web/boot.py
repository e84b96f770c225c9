"""Boot script routes: what iPXE and GRUB fetch per MAC (``Booter`` decides and renders), and the health check.

GRUB's connections are closed abortively (see ``grub_abortive_close``). Decisions and rendering run in a worker
thread (they read and write the store).
"""

from __future__ import annotations

import asyncio
import socket
import struct

from aiohttp import web

from provision import __version__
from provision.boot import Booter
from provision.macaddr import normalize_mac
from provision.web.errors import Handler

BOOTER: web.AppKey[Booter] = web.AppKey("booter", Booter)


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


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "version": __version__})


async def ipxe_script(request: web.Request) -> web.Response:
    mac = normalize_mac(request.match_info["mac"])
    text = await asyncio.to_thread(request.app[BOOTER].ipxe_script, mac, request.remote)
    return web.Response(text=text, content_type="text/plain")


async def grub_main(request: web.Request) -> web.Response:
    return web.Response(text=request.app[BOOTER].grub_main(), content_type="text/plain")


async def grub_host(request: web.Request) -> web.Response:
    mac = normalize_mac(request.match_info["mac"])
    text = await asyncio.to_thread(request.app[BOOTER].grub_host, mac, request.remote)
    return web.Response(text=text, content_type="text/plain")
