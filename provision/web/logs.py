"""Every request's log lines carry the machine it is about (``provision.logcontext``): the MAC or run id of its
path (``/boot/{mac}.ipxe``, ``/api/v1/machines/{mac}/events``, ``/api/v1/runs/{run}/...``), bound for the
request's whole handling, worker threads included; the handlers that learn the MAC from the body (hello,
first boot) or from the run add it (``bound(..., keep=True)``). Reset after each request: a keep-alive
connection's next request starts clean.
"""

from __future__ import annotations

from aiohttp import web

from provision.logcontext import bound
from provision.macaddr import BadMac, normalize_mac
from provision.web.errors import Handler


def _mac(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return normalize_mac(text)
    except BadMac:
        return None  # the handler refuses it (and says so); a made-up MAC is no context


@web.middleware
async def log_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    info = request.match_info
    run = info.get("run")
    with bound(mac=_mac(info.get("mac")), run=run[:64] if run else None):
        return await handler(request)
