"""The agent API, version 1 (docs/api.md): each handler reads the body into its wire message
(``provision.wire.api``), calls one method of ``Runs`` or the store, and answers the message it returns.
Errors carry their HTTP status (``provision.errors``) and are answered by ``provision.web.errors``.

``Runs`` works in a worker thread (``asyncio.to_thread``): recipe selection renders templates and reads
probes, the store writes to SQLite; none of it may hold the event loop that serves every other PC.

The answers to hello (when the hello asks for it), progress, erasure and report carry the machine's ``Screen``: its
dashboard tile's number, stage and reason (``provision.dashboard.screen``), for the PC's own console.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from provision.dashboard.render import DASHBOARD
from provision.dashboard.screen import screen_of
from provision.errors import NotFound, PayloadTooLarge, TokenRefused
from provision.logcontext import bound
from provision.macaddr import normalize_mac
from provision.runs import Runs
from provision.store import Run, Store
from provision.web.errors import json_body
from provision.web.openapi import openapi_bytes
from provision.wire.api import MAX_BODY, FirstBoot, Hello, ImageAnswer, Progress, Report
from provision.wire.capture import TOKEN_HEADER, CaptureDone, CaptureOffer
from provision.wire.carousel import MulticastCall
from provision.wire.erasure import ErasureProgress, ErasureReport
from provision.wire.index import is_sha256
from provision.wire.schema import Message

log = logging.getLogger(__name__)

STORE: web.AppKey[Store] = web.AppKey("store", Store)
RUNS: web.AppKey[Runs] = web.AppKey("runs", Runs)
M = TypeVar("M", bound=Message)
A = TypeVar("A", bound=Message)  # an answer with a ``screen`` field


async def _message(request: web.Request, kind: type[M]) -> M:
    return kind.from_dict(await json_body(request, MAX_BODY))


def _with_screen(request: web.Request, answer: A, mac: str | None) -> A:
    """``answer`` with the screen of machine ``mac`` (as it is: no dashboard, no machine, no tile)."""
    dash = request.app.get(DASHBOARD)
    screen = None if dash is None or mac is None else screen_of(dash.views, mac)
    return answer if screen is None else dataclasses.replace(answer, screen=screen)


def _run_mac(request: web.Request, run_id: str) -> str | None:
    run = request.app[STORE].run(run_id)
    return None if run is None else run.mac


async def hello(request: web.Request) -> web.Response:
    """The live environment's first call: who it is (MAC + per-boot token), how it booted, its probe."""
    msg = await _message(request, Hello)

    def answer_hello() -> Message:
        answer = request.app[RUNS].hello(msg, request.remote)
        if not msg.delta and isinstance(answer, ImageAnswer) and answer.plan.held is not None:
            # an agent older than delta re-imaging refuses a plan with ``held``: the run keeps its prediction
            answer = dataclasses.replace(answer, plan=dataclasses.replace(answer.plan, held=None))
        return _with_screen(request, answer, msg.mac) if msg.screen else answer

    with bound(mac=msg.mac, keep=True):
        answer = await asyncio.to_thread(answer_hello)
    return web.json_response(answer.to_dict())


async def firstboot(request: web.Request) -> web.Response:
    """An installed system's boot, proven by its run's first-boot secret: an event of the machine only."""
    msg = await _message(request, FirstBoot)
    with bound(mac=msg.mac, keep=True):
        await asyncio.to_thread(request.app[RUNS].firstboot, msg, request.remote)
    return web.json_response({"ok": True})


async def machines(request: web.Request) -> web.Response:
    return web.json_response([m.to_dict() for m in request.app[STORE].machines()])


async def machine_events(request: web.Request) -> web.Response:
    mac = normalize_mac(request.match_info["mac"])
    return web.json_response([e.to_dict() for e in request.app[STORE].events(mac)])


RunCall = Callable[[Runs, str, Any, "str | None"], Message]  # (runs, run id, message, remote) -> answer


def _run_handler(
    kind: type[M], call: RunCall, doc: str, *, screen: bool = True
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of one call about a run: parse ``kind``, ``call`` in a worker thread, the answer with the
    machine's screen (unless not ``screen``: an answer without one)."""

    async def handler(request: web.Request) -> web.Response:
        msg = await _message(request, kind)
        run_id = request.match_info["run"]

        def answer() -> Message:
            mac = _run_mac(request, run_id)
            with bound(mac=mac, keep=True):  # the run id is bound already (provision.web.logs)
                found = call(request.app[RUNS], run_id, msg, request.remote)
            return _with_screen(request, found, mac) if screen else found

        return web.json_response((await asyncio.to_thread(answer)).to_dict())

    handler.__doc__ = doc
    return handler


run_progress = _run_handler(
    Progress, lambda runs, run, msg, remote: runs.progress(run, msg, remote),
    "The write's progress (``Progress``): the run moves to ``writing`` or ``verifying``; its token lives on.",
)  # fmt: skip
run_report = _run_handler(
    Report, lambda runs, run, msg, remote: runs.report(run, msg, remote),
    "The end of the write (``Report``): verified, the run ends ``done`` (or goes on to its hooks), else ``failed``.",
)  # fmt: skip
run_multicast = _run_handler(
    MulticastCall, lambda runs, run, msg, remote: runs.multicast_call(run, msg, remote),
    "Join, keepalive or leave of the run's carousel (``MulticastCall``): whether it sends, how many listen.",
    screen=False,
)  # fmt: skip
run_erasure = _run_handler(
    ErasureReport, lambda runs, run, msg, remote: runs.erasing.report(run, msg, remote),
    "Every drive's erasure for the run (``ErasureReport``): recorded; the run goes on to ``writing``, ends "
    "``done`` (erase-only) or ``repair`` (a drive not ok or an internal drive left out: the reason says which).",
)  # fmt: skip
run_erasure_progress = _run_handler(
    ErasureProgress, lambda runs, run, msg, remote: runs.erasing.progress(run, msg, remote),
    "Each drive's erasure progress (``ErasureProgress``): the run is ``erasing``; the live tile follows.",
)  # fmt: skip

run_capture_offer = _run_handler(
    CaptureOffer, lambda runs, run, msg, remote: runs.capturing.offer(run, msg, remote),
    "Chunks of a capture run's disk, in order (``CaptureOffer``): recorded; the answer names those to upload.",
    screen=False,
)  # fmt: skip
run_capture_done = _run_handler(
    CaptureDone, lambda runs, run, msg, remote: runs.capturing.done(run, msg, remote),
    "The end of a capture (``CaptureDone``): the disk read back and checked, the version published, the run "
    "``done``; else ``failed`` with the reason.",
)  # fmt: skip


async def run_capture_chunk(request: web.Request) -> web.Response:
    """One chunk a capture run was asked for: the raw body is one zstd frame, the boot token in the
    ``X-Provision-Token`` header, checked before the body is read; read up to the run's limit (413 beyond), checked
    and stored."""
    run_id, sha256 = request.match_info["run"], request.match_info["sha256"]
    token = request.headers.get(TOKEN_HEADER, "")
    if not 8 <= len(token) <= 128:
        raise TokenRefused(f"a chunk upload carries the run's boot token in the {TOKEN_HEADER} header", run=run_id)
    if not is_sha256(sha256):
        raise NotFound("a chunk is named by its sha256 (64 lower-case hex digits)")
    runs = request.app[RUNS]
    limit = await asyncio.to_thread(runs.capturing.upload_limit, run_id, token, request.remote)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"a chunk upload is at most {limit} bytes, this one {request.content_length}")
    body = bytearray()
    async for block in request.content.iter_chunked(1 << 16):
        body += block
        if len(body) > limit:
            raise PayloadTooLarge(f"a chunk upload is at most {limit} bytes")

    def answer() -> Message:
        with bound(mac=_run_mac(request, run_id), keep=True):
            return runs.capturing.upload(run_id, sha256, token, bytes(body), request.remote)

    return web.json_response((await asyncio.to_thread(answer)).to_dict())


def _run_dict(store: Store, run: Run) -> dict[str, Any]:
    verifications = [v.to_dict() for v in store.verifications(run.id)]
    erasures = [e.to_dict() for e in store.erasures(run=run.id)]
    hooks = [h.to_dict() for h in store.hook_results(run.id)]
    capture = store.capture_run(run.id) if run.capture is not None else None
    found = {**run.to_dict(), "verifications": verifications, "erasures": erasures, "hooks": hooks}
    return found if capture is None else {**found, "captured": capture.to_dict()}


async def list_runs(request: web.Request) -> web.Response:
    store = request.app[STORE]
    mac = normalize_mac(request.query["mac"]) if "mac" in request.query else None
    return web.json_response([_run_dict(store, r) for r in store.runs(mac)])


async def get_run(request: web.Request) -> web.Response:
    """One run; with ``?screen=1`` (an agent waiting for its hooks) its machine's screen too."""
    store = request.app[STORE]
    run = store.run(request.match_info["run"])
    if run is None:
        raise NotFound("no such run")
    found = _run_dict(store, run)
    dash = request.app.get(DASHBOARD)
    if request.query.get("screen") == "1" and dash is not None:
        screen = await asyncio.to_thread(screen_of, dash.views, run.mac)
        if screen is not None:
            found["screen"] = screen.to_dict()
    return web.json_response(found)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of the JSON API (``provision.web.openapi``), made once per process."""
    return web.Response(body=openapi_bytes(), content_type="application/json")
