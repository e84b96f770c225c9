"""The dashboard's pages on the aiohttp app of ``provision serve``, read-only for anyone on the imaging LAN:

- ``GET /``: the rack view, one tile per machine of the current session (``provision.dashboard.views``);
- ``GET /machines/{mac}``: one machine: facts, recipe explanation, runs, verification, hooks, events;
- ``GET /images/{name}``: one image: its versions and the machines that hold each;
- ``GET /dashboard/events``: the live updates (Server-Sent Events, ``provision.dashboard.live``);
- ``/dashboard/static/``: the style sheet and the one small script;
- certificates, labels and lots (``provision.dashboard.downloads``, behind a login);
- ``GET /report``: the city's report, its charts and its CSV and JSON (``provision.dashboard.reportpage``, behind a
  login).

Each handler builds its view model in a worker thread (the store is SQLite) and renders it in the request's
language (``provision.dashboard.render``). Actions (re-image, mark ready, forget, rerun a hook) need a login and
are not served here: the templates keep their place (``account`` and ``actions`` blocks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

from aiohttp import web

from provision.dashboard.downloads import Issuer, add_downloads
from provision.dashboard.live import KEEPALIVE, Feed, comment, sse
from provision.dashboard.pages import image_page, machine_page
from provision.dashboard.render import DASHBOARD, Dashboard, fragment, language, page, setup_templates
from provision.dashboard.reportpage import add_report
from provision.dashboard.views import Session, Tile, Views
from provision.images import ImageStore
from provision.macaddr import BadMac, normalize_mac
from provision.recipes import RecipeSet
from provision.store import Store

log = logging.getLogger(__name__)

RACK = "/"
MACHINE = "/machines/{mac}"
IMAGE = "/images/{name}"
EVENTS = "/dashboard/events"
STATIC = "/dashboard/static/"
FEED: web.AppKey[Feed] = web.AppKey("dashboard_feed", Feed)


def static_dir() -> Path:
    """The package's static files (a checkout's, or the installed wheel's)."""
    return Path(str(resources.files(__package__ or "provision.dashboard") / "static"))


async def rack(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    tiles = await asyncio.to_thread(dash.views.rack)
    hours = dash.views.session.hours
    return page(request, "rack.html", {"tiles": tiles, "session_hours": f"{hours:g}", "events_url": EVENTS})


async def machine(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    try:
        mac = normalize_mac(request.match_info["mac"])
    except BadMac:
        return _missing(request)
    found = await asyncio.to_thread(machine_page, dash.views, mac, dash.recipes)
    if found is None:
        return _missing(request)
    return page(request, "machine.html", {"m": found, "tile": found.tile})


async def image(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    found = await asyncio.to_thread(image_page, dash.views, dash.images, request.match_info["name"])
    if found is None:
        return _missing(request)
    return page(request, "image.html", {"image": found})


def _missing(request: web.Request) -> web.Response:
    return page(request, "missing.html", {}, status=404)


def _tiles(views: Views, macs: Iterable[str]) -> list[Tile]:
    found = (views.tile_of(mac) for mac in sorted(macs))
    return [t for t in found if t is not None and t.number > 0]


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: each changed machine's tile, rendered in the request's language."""
    dash, feed, lang = request.app[DASHBOARD], request.app[FEED], language(request)
    if feed.full:
        log.warning("%s: live stream refused: %d streams open already", request.remote, len(feed.listeners))
        raise web.HTTPServiceUnavailable(text="too many live streams: the page still reloads by itself\n",
                                         headers={"Retry-After": "30"})  # fmt: skip
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store"}
    response = web.StreamResponse(headers={**headers, "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        async with feed.listen() as listener:
            await response.write(b"retry: 3000\n\n")  # after listen(): a change from now on is sent
            while True:
                macs = await listener.changes(KEEPALIVE)
                if macs is None:
                    break
                if not macs:
                    await response.write(comment("keepalive"))
                    continue
                for tile in await asyncio.to_thread(_tiles, dash.views, macs):
                    html = fragment(request, "tile.html", lang, {"tile": tile})
                    data = {"mac": tile.mac, "number": tile.number, "stage": tile.stage.value, "html": html}
                    await response.write(sse("tile", data))
    except ConnectionError:
        pass  # the browser went away
    return response


def add_dashboard(
    app: web.Application,
    store: Store,
    images: ImageStore | None,
    *,
    recipes: Callable[[], RecipeSet] | None = None,
    probes_dir: Path | None = None,
    session_hours: float = 12.0,
    poll_seconds: float = 1.0,
    issuer: Issuer | None = None,
) -> None:
    """The dashboard's routes, templates and live feed on ``app``; with ``issuer``, the certificates' and labels'
    downloads (``provision.dashboard.downloads``)."""
    setup_templates(app)
    app[DASHBOARD] = Dashboard(Views(store, probes_dir, Session(session_hours)), images, recipes)
    feed = app[FEED] = Feed(store, poll_seconds)

    async def close(_app: web.Application) -> None:
        await feed.close()

    app.on_shutdown.append(close)
    # route names start with "dashboard": provision.web.errors answers their errors with a page, not JSON
    app.router.add_get(RACK, rack, name="dashboard-rack")
    app.router.add_get(MACHINE, machine, name="dashboard-machine")
    app.router.add_get(IMAGE, image, name="dashboard-image")
    app.router.add_get(EVENTS, events, name="dashboard-events")
    add_report(app)
    if issuer is not None:
        add_downloads(app, issuer)
    app.router.add_static(STATIC, static_dir(), name="dashboard-static", follow_symlinks=False, show_index=False)
