"""The dashboard's forms: login, logout and the operators' actions, each a POST with the session's CSRF token.

- ``GET /login`` the form; ``POST /login`` (user, password, csrf, next) -> 303 to ``next`` with the session
  cookie, or back to the form (``?failed=1``); 429 while the address must wait.
- ``POST /logout`` -> 303 to the rack.
- ``POST /machines/{mac}/actions/{action}`` with ``reimage`` (imaged again at its next network boot),
  ``ready`` (a machine set aside or failed is repaired), ``forget`` (off the dashboard, its records kept)
  -> 303 to the machine's page (the rack for ``forget``) with ``?done=ACTION``; and ``lot`` with the form's
  ``lot`` field (the donor's delivery; empty: none) -> 303 to the machine's page with ``?done=lot``; and
  ``destination`` with the form's ``destination`` (school, family, association, recycling; empty: none, its
  recipe's counts; anything else: 400) -> ``?done=destination``. The user who acts is recorded as the
  operator of the machine's next erasure (provision.store.erasures).
- ``POST /machines/{mac}/hooks/{hook}/rerun`` runs one hook again in the PC's live environment
  (provision.postinstall) -> 303 to the machine's page with ``?done=rerun&ok=0|1``.

Every action is logged and kept as an event with the user's name (``action``). Without a session the answer
is 401, with a missing or wrong CSRF token 403, an action the machine's state refuses 409: pages in plain
words (provision.web.errors renders them for these routes).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote, urlencode

from aiohttp import web

from provision.config import AuthConfig
from provision.dashboard import render
from provision.errors import NotFound, ProvisionError, RequestError
from provision.macaddr import normalize_mac
from provision.postinstall import PostInstall
from provision.states import Destination
from provision.store.db import ACTIONS
from provision.web import auth
from provision.web.api import STORE
from provision.web.errors import HTML_ERRORS, Handler, wants_html

log = logging.getLogger(__name__)

POSTINSTALL: web.AppKey[PostInstall] = web.AppKey("postinstall", PostInstall)
ROUTE_PREFIX = "dashboard"  # route names of pages and forms: their errors are HTML pages
HOOK_NAME_MAX = 64
LOT = "lot"  # the machine's lot: POST /machines/{mac}/actions/lot with the form's ``lot``
DESTINATION = "destination"  # where it goes: POST /machines/{mac}/actions/destination, the form's ``destination``


def machine_path(mac: str) -> str:
    return f"/machines/{quote(mac, safe=':')}"


async def login_page(request: web.Request) -> web.StreamResponse:
    token, new = auth.login_token(request)
    context = {
        "csrf": token,
        "next": auth.safe_next(request.query.get("next")),
        "failed": request.query.get("failed") == "1",
        "session": await auth.current_session(request),
    }
    page = render.page(request, "login.html", context)
    if new:
        auth.set_login_cookie(page, request, token)
    return page


async def login(request: web.Request) -> web.StreamResponse:
    form = await auth.form_of(request)
    target = auth.safe_next(form.get("next"))
    done = await auth.log_in(request, form)
    if done is None:
        raise web.HTTPSeeOther(f"/login?{urlencode({'failed': '1', 'next': target})}")
    token, _session = done
    response = web.HTTPSeeOther(target)
    auth.set_session_cookie(response, request, token)
    response.del_cookie(auth.LOGIN_COOKIE, path="/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    form = await auth.form_of(request)
    session = await auth.require_session(request, form)
    response = web.HTTPSeeOther("/")
    await auth.log_out(request, response)
    log.info("%s: %s logged out", request.remote, session.user)
    return response


def _mac(request: web.Request) -> str:
    return normalize_mac(request.match_info["mac"])


async def machine_action(request: web.Request) -> web.StreamResponse:
    form = await auth.form_of(request)
    session = await auth.require_session(request, form)
    mac, action = _mac(request), request.match_info["action"]
    if action == LOT:
        lot = form.get("lot", "").strip() or None
        await asyncio.to_thread(request.app[STORE].set_lot, mac, lot, session.user)
        log.info("%s: lot %r set by %s (from %s)", mac, lot, session.user, request.remote)
        raise web.HTTPSeeOther(f"{machine_path(mac)}?{urlencode({'done': LOT})}")
    if action == DESTINATION:
        await _set_destination(request, mac, form.get("destination", ""), session.user)
    if action not in ACTIONS:
        raise NotFound(f"no action {action[:40]!r} (the actions: {', '.join((*ACTIONS, LOT, DESTINATION))})")
    await asyncio.to_thread(request.app[STORE].operator_action, mac, action, session.user)
    log.info("%s: %s by %s (from %s)", mac, action, session.user, request.remote)
    target = "/" if action == "forget" else machine_path(mac)
    raise web.HTTPSeeOther(f"{target}?{urlencode({'done': action})}")


async def _set_destination(request: web.Request, mac: str, value: str, user: str) -> None:
    """The machine's destination as the operator chose it ('': none, its recipe's then counts); RequestError
    (400) for a value that is none of them. Answers with the machine page."""
    try:
        destination = Destination(value) if value else None
    except ValueError:
        raise RequestError(f"destination {value[:40]!r} is none of {', '.join(d.value for d in Destination)}",
                           mac=mac) from None  # fmt: skip
    await asyncio.to_thread(request.app[STORE].set_destination, mac, destination, user)
    log.info("%s: destination %s set by %s (from %s)", mac, destination, user, request.remote)
    raise web.HTTPSeeOther(f"{machine_path(mac)}?{urlencode({'done': DESTINATION})}")


async def rerun_hook(request: web.Request) -> web.StreamResponse:
    form = await auth.form_of(request)
    session = await auth.require_session(request, form)
    mac, hook = _mac(request), request.match_info["hook"][:HOOK_NAME_MAX]
    postinstall = request.app[POSTINSTALL]
    store = request.app[STORE]
    await asyncio.to_thread(store.event, mac, "action", {"action": "rerun", "hook": hook, "user": session.user})
    log.info("%s: hook %s run again by %s (from %s)", mac, hook, session.user, request.remote)
    _run, record = await asyncio.to_thread(postinstall.rerun, mac, hook)
    raise web.HTTPSeeOther(f"{machine_path(mac)}?{urlencode({'done': 'rerun', 'ok': '1' if record.ok else '0'})}")


def add_action_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page, name=f"{ROUTE_PREFIX}-login")
    app.router.add_post("/login", login, name=f"{ROUTE_PREFIX}-login-post")
    app.router.add_post("/logout", logout, name=f"{ROUTE_PREFIX}-logout")
    app.router.add_post("/machines/{mac}/actions/{action}", machine_action, name=f"{ROUTE_PREFIX}-action")
    app.router.add_post("/machines/{mac}/hooks/{hook}/rerun", rerun_hook, name=f"{ROUTE_PREFIX}-rerun")


def error_page(request: web.Request, exc: ProvisionError) -> web.StreamResponse:
    """The page of a refused page or form: what happened and what to do, in the browser's language."""
    status = exc.status_code if exc.status_code in render.ERROR_TITLES else 500
    values = {
        "status": status,
        "title": render.ERROR_TITLES.get(status, render.ERROR_TITLES[500]),
        "advice": render.ERROR_ADVICE.get(status, render.ERROR_ADVICE[500]),
        "detail": exc.http_reason,
        "login_next": auth.safe_next(request.headers.get("Referer", "").partition(request.host)[2] or None),
    }
    return render.page(request, "error.html", values, status=status)


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Dashboard pages learn who is logged in (request[auth.SESSION], read by the templates) before they
    render; nothing is refused here."""
    if wants_html(request):
        await auth.current_session(request)
    return await handler(request)


def setup_actions(app: web.Application, config: AuthConfig, postinstall: PostInstall) -> None:
    """Logins and actions on ``app``: their settings, the login throttle, the routes, the HTML error pages."""
    app[auth.AUTH] = auth.AuthSettings(config.idle_minutes * 60, config.session_hours * 3600, config.secure_cookies)
    app[auth.THROTTLE] = auth.LoginThrottle()
    app[POSTINSTALL] = postinstall
    app[HTML_ERRORS] = error_page
    app.middlewares.append(sessions)
    add_action_routes(app)
