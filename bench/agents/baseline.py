"""The baselines: the same requests answered by servers that do none of provision's work, on the same
machine and in the same run, so that provision's latency can be read as a ratio.

- ``aiohttp``: always. A minimal aiohttp app (same framework and Python as provision, its own process,
  access log off) with provision's routes: the boot script is a per-MAC text with a fresh random token (or
  "local disk" once that MAC reported done); hello, progress and report parse the JSON body and answer with
  the same shape as provision (a random run id, the plan of the bench image); the index is served from
  memory. No validation, no SQLite, no probe written to disk, no recipe.
- ``nginx``: when ``nginx`` is on the PATH (``apt-get install nginx``; the bench works without it). One
  worker, access log off, every answer a fixed ``return`` from the config (a live script with one token,
  one run id, the index file from disk): the cost of HTTP alone in C.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.agents.fixture import Fixture, Served, free_port

LIVE = "#!ipxe\necho provision: {mac} -> live environment\nkernel http://127.0.0.1/files/live/vmlinuz " \
       "provision.mac={mac} provision.token={token}\nboot\n"  # fmt: skip
LOCAL = "#!ipxe\necho provision: {mac} -> local disk\nsanboot --no-describe --drive 0x80\nexit 1\n"


def plan_of(fx: Fixture) -> dict[str, Any]:
    return {"image": "bench", "version": f"bench-{fx.digest[:12]}", "digest": fx.digest, "index_url": fx.index_url,
            "wipe": "zero", "target_disk": {}, "grow_root": True, "hostname": "bench-pc", "hooks": []}  # fmt: skip


def make_app(plan: dict[str, Any], index: bytes) -> web.Application:
    """The minimal server's routes; its only state: run -> MAC, and the MACs whose run ended done."""
    runs: dict[str, str] = {}
    done: set[str] = set()

    async def script(request: web.Request) -> web.Response:
        mac = request.match_info["mac"].lower()
        text = LOCAL.format(mac=mac) if mac in done else LIVE.format(mac=mac, token=secrets.token_hex(16))
        return web.Response(text=text, content_type="text/plain")

    async def hello(request: web.Request) -> web.Response:
        body = await request.json()
        run = uuid.uuid4().hex
        runs[run] = str(body.get("mac"))
        return web.json_response({"action": "image", "run": run, "recipe": "default", "plan": plan})

    async def progress(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"ok": True, "run": request.match_info["run"], "state": body.get("stage")})

    async def report(request: web.Request) -> web.Response:
        body = await request.json()
        run = request.match_info["run"]
        state = "done" if body.get("ok") else "failed"
        if state == "done" and run in runs:
            done.add(runs.pop(run))
        return web.json_response({"run": run, "state": state, "reason": body.get("reason")})

    async def index_json(request: web.Request) -> web.Response:
        return web.Response(body=index, content_type="application/json")

    app = web.Application(client_max_size=4 << 20)
    app.router.add_get("/boot/{mac}.ipxe", script)
    app.router.add_post("/api/v1/hello", hello)
    app.router.add_post("/api/v1/runs/{run}/progress", progress)
    app.router.add_post("/api/v1/runs/{run}/report", report)
    app.router.add_get(plan["index_url"], index_json)
    return app


def serve_main(spec_file: str) -> int:
    """The aiohttp baseline's process (``python -m bench.agents --baseline-server SPEC``): 127.0.0.1, port 0,
    the bound port written to the spec's ready file."""
    import asyncio

    spec = json.loads(Path(spec_file).read_text())
    app = make_app(spec["plan"], Path(spec["index"]).read_bytes())

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        Path(spec["ready"]).write_text(json.dumps({"http": port}))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def start_aiohttp(fx: Fixture) -> Served:
    ready = fx.work / "baseline-ready.json"
    spec = fx.work / "baseline.json"
    spec.write_text(json.dumps({"plan": plan_of(fx), "index": str(fx.index_file), "ready": str(ready)}))
    argv = [sys.executable, "-m", "bench.agents", "--baseline-server", str(spec)]
    return Served("aiohttp baseline", argv, ready, fx.work / "baseline.log")


NGINX_CONF = """\
worker_processes 1;
pid {work}/nginx/nginx.pid;
error_log {work}/nginx/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx/body;
    client_max_body_size 4m;
    client_body_buffer_size 64k;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        location /boot/ {{ return 200 "{live}"; }}
        location = /api/v1/hello {{ default_type application/json; return 200 '{hello}'; }}
        location ~ ^/api/v1/runs/[^/]+/progress$ {{ default_type application/json; return 200 '{progress}'; }}
        location ~ ^/api/v1/runs/[^/]+/report$ {{ default_type application/json; return 200 '{report}'; }}
        location = {index_url} {{ default_type application/json; alias {index}; }}
    }}
}}
"""


def start_nginx(fx: Fixture) -> Served | None:
    """nginx with fixed answers on 127.0.0.1:``port``; None when nginx is not installed."""
    nginx = shutil.which("nginx")
    if nginx is None:
        return None
    (fx.work / "nginx" / "body").mkdir(parents=True, exist_ok=True)
    port = free_port()
    run = "0" * 32
    live = LIVE.format(mac="any", token=secrets.token_hex(16)).replace("\n", "\\n")
    conf = NGINX_CONF.format(
        work=fx.work, port=port, live=live, index_url=fx.index_url, index=fx.index_file,
        hello=json.dumps({"action": "image", "run": run, "recipe": "default", "plan": plan_of(fx)}),
        progress=json.dumps({"ok": True, "run": run, "state": "writing"}),
        report=json.dumps({"run": run, "state": "done", "reason": None}),
    )  # fmt: skip
    (fx.work / "nginx" / "nginx.conf").write_text(conf)
    argv = [nginx, "-p", f"{fx.work}/nginx", "-c", f"{fx.work}/nginx/nginx.conf"]
    return Served("nginx baseline", argv, port, fx.work / "nginx.log")
