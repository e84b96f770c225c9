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
from typing import Any, TypeVar

from aiohttp import web

from provision.dashboard.render import DASHBOARD
from provision.dashboard.screen import screen_of
from provision.errors import NotFound
from provision.macaddr import normalize_mac
from provision.runs import Runs
from provision.store import Run, Store
from provision.web.errors import json_body
from provision.web.openapi import openapi_bytes
from provision.wire.api import (
    MAX_BODY,
    FirstBoot,
    Hello,
    Progress,
    ProgressAnswer,
    Report,
    RunAnswer,
)
from provision.wire.erasure import ErasureProgress, ErasureReport
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
        return _with_screen(request, answer, msg.mac) if msg.screen else answer

    answer = await asyncio.to_thread(answer_hello)
    return web.json_response(answer.to_dict())


async def firstboot(request: web.Request) -> web.Response:
    """An installed system's boot, proven by its run's first-boot secret: an event of the machine only."""
    msg = await _message(request, FirstBoot)
    await asyncio.to_thread(request.app[RUNS].firstboot, msg, request.remote)
    return web.json_response({"ok": True})


async def machines(request: web.Request) -> web.Response:
    return web.json_response([m.to_dict() for m in request.app[STORE].machines()])


async def machine_events(request: web.Request) -> web.Response:
    mac = normalize_mac(request.match_info["mac"])
    return web.json_response([e.to_dict() for e in request.app[STORE].events(mac)])


async def run_progress(request: web.Request) -> web.Response:
    msg = await _message(request, Progress)
    run_id = request.match_info["run"]

    def answer_progress() -> ProgressAnswer:
        answer = request.app[RUNS].progress(run_id, msg, request.remote)
        return _with_screen(request, answer, _run_mac(request, run_id))

    answer = await asyncio.to_thread(answer_progress)
    return web.json_response(answer.to_dict())


async def run_report(request: web.Request) -> web.Response:
    msg = await _message(request, Report)
    run_id = request.match_info["run"]

    def answer_report() -> RunAnswer:
        answer = request.app[RUNS].report(run_id, msg, request.remote)
        return _with_screen(request, answer, _run_mac(request, run_id))

    answer = await asyncio.to_thread(answer_report)
    return web.json_response(answer.to_dict())


async def run_erasure(request: web.Request) -> web.Response:
    """Every drive's erasure for the run (``ErasureReport``): recorded; the run goes on to ``writing``, ends
    ``done`` (erase-only) or ``repair`` (a drive not ok: the reason says which and what to do)."""
    msg = await _message(request, ErasureReport)
    run_id = request.match_info["run"]

    def answer_erasure() -> RunAnswer:
        answer = request.app[RUNS].erasing.report(run_id, msg, request.remote)
        return _with_screen(request, answer, _run_mac(request, run_id))

    answer = await asyncio.to_thread(answer_erasure)
    return web.json_response(answer.to_dict())


async def run_erasure_progress(request: web.Request) -> web.Response:
    """Each drive's erasure progress (``ErasureProgress``): the run is ``erasing``; the live tile follows."""
    msg = await _message(request, ErasureProgress)
    run_id = request.match_info["run"]

    def answer_progress() -> ProgressAnswer:
        answer = request.app[RUNS].erasing.progress(run_id, msg, request.remote)
        return _with_screen(request, answer, _run_mac(request, run_id))

    answer = await asyncio.to_thread(answer_progress)
    return web.json_response(answer.to_dict())


def _run_dict(store: Store, run: Run) -> dict[str, Any]:
    verifications = [v.to_dict() for v in store.verifications(run.id)]
    erasures = [e.to_dict() for e in store.erasures(run=run.id)]
    hooks = [h.to_dict() for h in store.hook_results(run.id)]
    return {**run.to_dict(), "verifications": verifications, "erasures": erasures, "hooks": hooks}


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
