"""Logins of the dashboard: sessions in a cookie, a CSRF token on every form, and the checks actions call.

- Reading needs no login (anyone on the imaging LAN sees the rack); every action does (provision.web.actions).
- ``POST /login`` checks the name and password (provision.passwords through the store), opens a session and
  sets the cookie ``provision_session``: HttpOnly, SameSite=Strict, Path=/, Secure when the configuration says
  the dashboard is reached over HTTPS (``auth.secure_cookies``). The login form itself carries a CSRF token
  (double submit: the same random value in a short-lived cookie and in the form).
- A session ends at logout, after ``auth.idle_minutes`` without a request or ``auth.session_hours`` after
  login; a new password or a removed user ends all of the user's sessions.
- ``require_session``: the session of a form's request, with its CSRF token checked (``csrf`` field) and, when
  the browser sends one, an ``Origin`` of this server: Unauthorized (401) without a session, Forbidden (403)
  with a missing or wrong token.
- Five failed logins from one address within five minutes: that address waits (429) until five minutes have
  passed since the first; every failure is logged with the address and the name tried (never the password).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from provision.dashboard.render import SESSION_KEY
from provision.errors import FatalError, Forbidden, Unauthorized
from provision.store import Store
from provision.store.users import Session

log = logging.getLogger(__name__)

SESSION_COOKIE = "provision_session"
LOGIN_COOKIE = "provision_login"  # the login form's CSRF token (double submit)
CSRF_FIELD = "csrf"
MAX_FORM = 16 << 10  # bytes of a dashboard form
FAILURES, FAILURE_WINDOW = 5, 300.0


class LoginThrottled(FatalError):
    """Too many failed logins from one address: it waits (``wait`` seconds)."""

    status_code = 429
    public_facts = ("wait",)


@dataclass(frozen=True)
class AuthSettings:
    idle: float = 2 * 3600.0  # seconds without a request before a session ends
    lifetime: float = 12 * 3600.0  # seconds after login
    secure_cookies: bool = False  # the dashboard is reached over HTTPS (a proxy in front): Secure cookies


@dataclass
class LoginThrottle:
    """Failed logins per address in the last FAILURE_WINDOW seconds."""

    failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, remote: str, now: float | None = None) -> float:
        """Seconds ``remote`` must still wait (0: it may try)."""
        now = time.monotonic() if now is None else now
        times = self.failures.get(remote)
        while times and times[0] < now - FAILURE_WINDOW:
            times.popleft()
        if not times:
            self.failures.pop(remote, None)
            return 0.0
        return max(0.0, times[0] + FAILURE_WINDOW - now) if len(times) >= FAILURES else 0.0

    def failed(self, remote: str, now: float | None = None) -> None:
        self.failures.setdefault(remote, deque(maxlen=FAILURES)).append(time.monotonic() if now is None else now)
        if len(self.failures) > 10_000:  # a flood of addresses: forget the oldest
            self.failures.pop(next(iter(self.failures)))

    def succeeded(self, remote: str) -> None:
        self.failures.pop(remote, None)


AUTH: web.AppKey[AuthSettings] = web.AppKey("auth", AuthSettings)
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("login_throttle", LoginThrottle)
SESSION = SESSION_KEY  # the request's session, once looked up (request[SESSION]): the templates show it


def _store(request: web.Request) -> Store:
    from provision.web.api import STORE

    return request.app[STORE]


async def current_session(request: web.Request) -> Session | None:
    """The logged-in session of this request (its cookie), or None. Reading pages call it to show the
    logged-in name and the action forms; it never refuses anything."""
    if SESSION in request:
        found: Session | None = request[SESSION]
        return found
    token = request.cookies.get(SESSION_COOKIE, "")
    session = None
    if 16 <= len(token) <= 128:
        settings = request.app[AUTH]
        session = await asyncio.to_thread(_store(request).session, token, idle=settings.idle)
    request[SESSION] = session
    return session


def same_origin(request: web.Request) -> bool:
    """An ``Origin`` (or, without it, a ``Referer``) naming this server, or neither header (old clients)."""
    origin = request.headers.get("Origin")
    if origin is not None:  # "null" (a sandboxed or cross-site redirected form) names no server: refused
        return urlsplit(origin).netloc == request.host
    referer = request.headers.get("Referer")
    return not referer or urlsplit(referer).netloc == request.host


async def form_of(request: web.Request) -> dict[str, str]:
    """The request's urlencoded form (at most MAX_FORM bytes), text fields only."""
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise Forbidden("form too large")
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def require_session(request: web.Request, form: dict[str, str]) -> Session:
    """The session of an action's request, its CSRF token and origin checked (Unauthorized, Forbidden)."""
    session = await current_session(request)
    if session is None:
        raise Unauthorized("log in to do this (your session may have ended)")
    sent = form.get(CSRF_FIELD, "")
    if not sent or not secrets.compare_digest(sent.encode(), session.csrf.encode()):
        log.warning("%s: action %s by %s refused: CSRF token %s", request.remote, request.path[:200], session.user,
                    "wrong" if sent else "missing")  # fmt: skip
        raise Forbidden("this form is out of date or came from another page: reload the page and try again")
    if not same_origin(request):
        log.warning("%s: action %s by %s refused: Origin %r", request.remote, request.path[:200], session.user,
                    request.headers.get("Origin", request.headers.get("Referer", ""))[:200])  # fmt: skip
        raise Forbidden("this form came from another site")
    return session


def safe_next(target: str | None) -> str:
    """Where to go after login: a path of this server only (never ``//host`` or ``scheme:``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:512]


def set_session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    settings = request.app[AUTH]
    response.set_cookie(SESSION_COOKIE, token, max_age=int(settings.lifetime), path="/", httponly=True,
                        samesite="Strict", secure=settings.secure_cookies)  # fmt: skip


def login_token(request: web.Request) -> tuple[str, bool]:
    """The login form's CSRF token: the browser's (its cookie) when it has one, else a new one (True: set it
    with ``set_login_cookie`` on the page's response)."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    if 32 <= len(token) <= 64:
        return token, False
    return secrets.token_urlsafe(32), True


def set_login_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, path="/login", httponly=True, samesite="Strict",
                        secure=request.app[AUTH].secure_cookies)  # fmt: skip


async def log_in(request: web.Request, form: dict[str, str]) -> tuple[str, Session] | None:
    """Check a login form (its CSRF token, the throttle, the password); the new session's token and session,
    or None when the name or password is wrong. Forbidden on a bad token, LoginThrottled (429) when the
    address must wait."""
    sent, kept = form.get(CSRF_FIELD, ""), request.cookies.get(LOGIN_COOKIE, "")
    if not sent or not kept or not secrets.compare_digest(sent.encode(), kept.encode()) or not same_origin(request):
        raise Forbidden("the login form is out of date: reload the page and try again")
    remote = request.remote or "?"
    throttle = request.app[THROTTLE]
    wait = throttle.blocked(remote)
    if wait:
        log.warning("%s: login refused: too many failures, %d s to wait", remote, wait)
        raise LoginThrottled(f"too many failed logins from {remote}: wait {int(wait) + 1} s", wait=int(wait) + 1)
    name, password = form.get("user", "").strip()[:64], form.get("password", "")
    store = _store(request)
    if not name or not await asyncio.to_thread(store.authenticate, name, password):
        throttle.failed(remote)
        log.warning("%s: login failed for user %r", remote, name[:64])
        return None
    throttle.succeeded(remote)
    token, session = await asyncio.to_thread(store.open_session, name, lifetime=request.app[AUTH].lifetime,
                                             remote=remote)  # fmt: skip
    log.info("%s: %s logged in", remote, name)
    return token, session


async def log_out(request: web.Request, response: web.StreamResponse) -> None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        await asyncio.to_thread(_store(request).close_session, token)
    response.del_cookie(SESSION_COOKIE, path="/")
