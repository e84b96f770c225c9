"""The one place where errors become HTTP answers: every ``ProvisionError`` carries its status
(``status_code``) and what a client may see (``http_body``); this middleware answers with them.

Boot scripts (``/boot/...``) are read by iPXE, GRUB and people at a console: their errors are one line of
plain text. The dashboard's pages and forms (routes named ``dashboard...``) answer a page in plain words
(``HTML_ERRORS``, set by the dashboard). Everything else (the agent API, images, chunks) answers JSON
``{"error": reason, ...}``. A 4xx is logged as a warning with the path and the client, a 5xx as an error with
the full message.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from provision.errors import NotFound, PayloadTooLarge, ProvisionError, RequestError
from provision.wire import paths

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HtmlErrors = Callable[[web.Request, ProvisionError], web.StreamResponse]
TEXT_PREFIX = paths.BOOT_SCRIPTS
HTML_ROUTES = "dashboard"  # routes whose name starts so are pages and forms: their errors are pages
HTML_ERRORS: web.AppKey[HtmlErrors] = web.AppKey("html_errors")


def wants_html(request: web.Request) -> bool:
    """A dashboard page or form (its route's name says so), answered with an HTML page when it fails."""
    name = request.match_info.route.name or ""
    return name.startswith(HTML_ROUTES) and HTML_ERRORS in request.app


def error_response(request: web.Request, exc: ProvisionError) -> web.StreamResponse:
    """The answer to ``exc`` for this request (text under /boot/, JSON elsewhere), logged once."""
    status = exc.status_code
    where = f"HTTP {request.method} {request.path[:200]} from {request.remote}"
    if status >= 500:
        log.error("%s: %s", where, exc)
    else:
        log.warning("%s: %s", where, exc)
    if wants_html(request):
        return request.app[HTML_ERRORS](request, exc)
    if request.path.startswith(TEXT_PREFIX):
        return web.Response(status=status, text=f"{exc.http_reason}\n", content_type="text/plain")
    return web.Response(status=status, text=json.dumps(exc.http_body()), content_type="application/json")


@web.middleware
async def provision_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProvisionError as exc:
        return error_response(request, exc)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:  # a name over 255 bytes in a /files/ path: no such file
            raise
        return error_response(request, NotFound("no such file (name too long)"))


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> object:
    """json.loads without Python's extensions: NaN, Infinity and -Infinity are refused."""
    return json.loads(text, parse_constant=_no_constant)


class MalformedHttp(logging.Filter):
    """aiohttp answers a malformed HTTP request (a bad request line, header or chunk size, a line too long)
    with 400 itself and logs it as an ERROR with a traceback: one WARNING line naming the client instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code is not None and 400 <= exc.code < 500:
            reason = " ".join(str(exc.message).split())[:200]
            record.msg, record.args = (
                "%s: malformed HTTP request answered %d: %s",
                (record.getMessage(), exc.code, reason),
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


class ClientWentAway(logging.Filter):
    """A client that goes away while it is answered (a PC's read timeout on a stalled link, a cut cable, a
    power cut) makes aiohttp log an ERROR with a traceback per request: one WARNING line naming the client."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ConnectionError):
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            record.msg, record.args = "%s: the client went away: %s", (record.getMessage(), reason)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_malformed_http() -> None:
    """Install MalformedHttp and ClientWentAway on aiohttp's server logger (once each)."""
    logger = logging.getLogger("aiohttp.server")
    for kind in (MalformedHttp, ClientWentAway):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


async def json_body(request: web.Request, limit: int) -> object:
    """The request's body as decoded JSON (an object), or RequestError (400) / PayloadTooLarge (413)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"payload over {limit} bytes")
    try:
        data = await request.json(loads=strict_json)
    except (ValueError, RecursionError, LookupError) as exc:  # LookupError: an unknown charset in Content-Type
        raise RequestError(f"body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise RequestError("body must be a JSON object")
    return data
