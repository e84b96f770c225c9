"""The dashboard under load: ``--machines`` PCs reporting progress every ``--every`` seconds while ``--browsers``
browsers hold the rack view's live stream (``GET /dashboard/events``) open (bench/README.md).

    .venv/bin/python bench/dashboard_live.py [--machines 40] [--seconds 60] [--every 2.1] [--browsers 3] [--json]

Figures: the server's CPU (seconds and share of one core) idle with the browsers connected and during the
load; the update latency, from sending a progress report to the tile carrying its percent arriving on each
browser's stream (p50/p95/p99/max in ms), and how many updates never arrived; the rack page's render time
with every machine on it. Nothing is asserted on time. No root, everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent))  # the repository, so that `bench.agents` imports

import aiohttp

from bench.agents.fixture import Fixture, Served, make_fixture, start_provision
from bench.agents.metrics import ProcWatch, spread
from provision.wire.api import BootInfo, Hello, Progress

TOKEN = re.compile(r"provision\.token=([0-9a-f]+)")
PERCENT = re.compile(r'class="figures">(\d+) %')
TOTAL = 100 * (1 << 20)
TIMEOUT = aiohttp.ClientTimeout(total=30)


class Browser:
    """One browser on the live stream: when each (mac, percent) tile arrived."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        self.tiles = 0
        self.connected = asyncio.Event()

    async def watch(self, url: str) -> None:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
            session.get(f"{url}/dashboard/events", params={"lang": "fr"}) as response,
        ):
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                self.connected.set()
                if not line.startswith("data: "):
                    continue
                data = json.loads(line[6:])
                self.tiles += 1
                found = PERCENT.search(data["html"])
                if found is not None:
                    self.seen.setdefault((data["mac"], int(found.group(1))), time.monotonic())


async def boot(session: aiohttp.ClientSession, url: str, fx: Fixture, mac: str) -> tuple[str, str]:
    """The PC's boot script and hello: (token, run)."""
    async with session.get(f"{url}/boot/{mac}.ipxe") as response:
        found = TOKEN.search(await response.text())
        assert found is not None, f"{mac}: no token"
    token = found.group(1)
    hello = Hello(mac, token, BootInfo("bios", None, "6.1.0-bench"), None, {**fx.probe, "mac": mac + "\n"}, [])
    async with session.post(f"{url}/api/v1/hello", json=hello.to_dict()) as response:
        answer = await response.json()
    assert answer.get("action") == "image", answer
    return token, str(answer["run"])


async def machine(session: aiohttp.ClientSession, url: str, token: str, run: str, rounds: int, every: float,
                  offset: float, sent: dict[tuple[str, int], float], mac: str) -> None:  # fmt: skip
    """Progress every ``every`` seconds, its percent growing by one each time (1, 2, 3 ...)."""
    await asyncio.sleep(offset)
    start = time.monotonic()
    for n in range(1, rounds + 1):
        await asyncio.sleep(max(0.0, start + (n - 1) * every - time.monotonic()))
        body = Progress(token, "writing", TOTAL * n // 100, TOTAL, 50e6).to_dict()
        sent[(mac, n)] = time.monotonic()
        async with session.post(f"{url}/api/v1/runs/{run}/progress", json=body) as response:
            assert response.status == 200, await response.text()


async def bench(args: argparse.Namespace, fx: Fixture, server: Served) -> dict[str, Any]:
    url, watch = server.url, ProcWatch(server.pid)
    rounds = max(1, min(99, int(args.seconds / args.every)))
    macs = [f"52:54:00:da:{i // 256:02x}:{i % 256:02x}" for i in range(args.machines)]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        runs = [await boot(session, url, fx, mac) for mac in macs]
        began = time.monotonic()
        async with session.get(f"{url}/", params={"lang": "fr"}) as response:
            await response.read()
        rack_ms = (time.monotonic() - began) * 1000
        browsers = [Browser() for _ in range(args.browsers)]
        streams = [asyncio.create_task(b.watch(url)) for b in browsers]
        await asyncio.gather(*(b.connected.wait() for b in browsers))
        idle_cpu, idle_began = watch.cpu(), time.monotonic()
        await asyncio.sleep(args.idle)
        idle = (watch.cpu() - idle_cpu, time.monotonic() - idle_began)
        sent: dict[tuple[str, int], float] = {}
        cpu, began = watch.cpu(), time.monotonic()
        await asyncio.gather(*(
            machine(session, url, token, run, rounds, args.every, i * args.every / len(macs), sent, mac)
            for i, (mac, (token, run)) in enumerate(zip(macs, runs, strict=True))
        ))  # fmt: skip
        await asyncio.sleep(2.5)  # the last updates reach the browsers
        load = (watch.cpu() - cpu, time.monotonic() - began)
        for task in streams:
            task.cancel()
    latencies = [b.seen[key] - at for b in browsers for key, at in sent.items() if key in b.seen]
    missed = sum(1 for b in browsers for key in sent if key not in b.seen)
    return {
        "machines": args.machines, "browsers": args.browsers, "every_s": args.every, "rounds": rounds,
        "progress_posts": len(sent), "tiles_received": sum(b.tiles for b in browsers),
        "update_latency_ms": spread(latencies), "updates_missed": missed,
        "cpu_idle_s": round(idle[0], 3), "cpu_idle_share": round(idle[0] / idle[1], 4),
        "cpu_load_s": round(load[0], 3), "cpu_load_share": round(load[0] / load[1], 4),
        "load_wall_s": round(load[1], 1),
        "rack_page_ms": round(rack_ms, 1), "rss_kib": watch.status().get("VmRSS"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (at most 99 reports)")
    parser.add_argument("--every", type=float, default=2.1, help="seconds between two reports of one PC")
    parser.add_argument("--browsers", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds measured with browsers and no load")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as work:
        fx = make_fixture(Path(work))
        server = start_provision(fx)
        try:
            figures = asyncio.run(bench(args, fx, server))
        finally:
            server.stop()
    lat = figures["update_latency_ms"]
    print(f"dashboard: {figures['machines']} machines, a report every {figures['every_s']} s each, "
          f"{figures['browsers']} browsers on the live stream, {figures['progress_posts']} reports")  # fmt: skip
    print(f"  update latency (report sent -> tile on a browser): p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
          f"p99 {lat['p99']} ms, max {lat['max']} ms; missed {figures['updates_missed']}")  # fmt: skip
    print(f"  server CPU: {figures['cpu_load_share'] * 100:.1f} % of a core under load "
          f"({figures['cpu_load_s']} s in {figures['load_wall_s']} s), {figures['cpu_idle_share'] * 100:.1f} % idle; "
          f"RSS {figures['rss_kib']} KiB; rack page {figures['rack_page_ms']} ms")  # fmt: skip
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
