"""Arguments and the run: the fixture, provision under load, the baselines under the same load, the store's
consistency, the printout. See the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.agents.agent import HTTP_KINDS, Mix, Target, run_agents
from bench.agents.baseline import serve_main, start_aiohttp, start_nginx
from bench.agents.consistency import check
from bench.agents.fixture import Fixture, Served, log_summary, make_fixture, start_provision
from bench.agents.ledger import Ledger
from bench.agents.metrics import LoopLag, ProcWatch, Recorder, is_ok, own_cpu
from bench.agents.report import print_report, ratios

MiB = 1024.0


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


async def _watch(
    watch: ProcWatch, recorder: Recorder, name: str, every: float, started: float, loads: list[float]
) -> None:
    """Sample the server's memory and the machine's load average every 5 s; a line on stderr every ``every``
    s, so a long run shows life."""
    next_line = started + every
    while True:
        await asyncio.sleep(5)
        watch.sample()
        loads.append(_loadavg())
        if time.monotonic() >= next_line:
            next_line += every
            total = sum(len(k.latencies) for k in recorder.kinds.values())
            bad = sum(n for k in recorder.kinds.values() for o, n in k.outcomes.items() if not is_ok(o))
            print(f"  {name}: {time.monotonic() - started:.0f} s, {total} requests, {bad} errors, "
                  f"RSS {watch.rss_max_kib / MiB:.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip


async def load(served: Served, target: Target, args: argparse.Namespace, mix: Mix, seconds: float,
               ledger: Ledger) -> dict[str, Any]:  # fmt: skip
    """One side under load: the agents' figures and the server's CPU, memory and descriptors."""
    recorder, watch, lag = Recorder(), ProcWatch(served.pid), LoopLag()
    loads = [_loadavg()]  # other work on the machine skews every figure: its load average is kept
    first = watch.sample()
    cpu, client = watch.cpu(), own_cpu()
    lag.start()
    started = time.monotonic()
    sampler = asyncio.get_running_loop().create_task(
        _watch(watch, recorder, target.name, args.status_every, started, loads)
    )
    try:
        wall = await run_agents(target, mix, args.agents, seconds, args.seed, recorder, ledger)
    finally:
        sampler.cancel()
    cpu_s, client_s = watch.cpu() - cpu, own_cpu() - client
    last = watch.sample()
    lags = await lag.stop()
    requests = recorder.summary(wall, HTTP_KINDS)
    count = max(requests["all"]["requests"], 1)
    server = {"cpu_s": round(cpu_s, 2), "cpu_ms_per_request": round(1000 * cpu_s / count, 3),
              "rss_start_mib": first["VmRSS"] / MiB, "rss_end_mib": last["VmRSS"] / MiB,
              "rss_peak_mib": max(watch.rss_max_kib, last["VmHWM"]) / MiB, "threads_end": last["Threads"],
              "fds_start": first["fds"], "fds_end": last["fds"]}  # fmt: skip
    return {"name": target.name, "wall_s": round(wall, 2), "requests": requests, "server": server,
            "client_cpu_s": round(client_s, 2), "loop_lag_ms": lags, "loadavg_before": loads[0],
            "loadavg_mean": round(sum(loads) / len(loads), 2), "loadavg_max": max(loads)}  # fmt: skip


def side(fx: Fixture, served: Served, name: str, args: argparse.Namespace, mix: Mix, seconds: float) -> dict[str, Any]:
    """A baseline under load, then stopped."""
    print(f"{name}: {args.agents} agents for {seconds:.0f} s", file=sys.stderr, flush=True)
    try:
        figures = asyncio.run(load(served, Target(name, served.url, None, False), args, mix, seconds, Ledger()))
    finally:
        figures_exit = served.stop()
    figures["server"]["exit"] = figures_exit
    return figures


def run(args: argparse.Namespace, work: Path) -> int:
    fx = make_fixture(work)
    mix = Mix(args.write_seconds, args.fail_rate, args.abandon_rate, fx.probe)
    figures: dict[str, Any] = {
        "config": {k: getattr(args, k) for k in ("agents", "seconds", "baseline_seconds", "write_seconds",
                                                 "fail_rate", "abandon_rate", "seed")},
        "cpus": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__, "nginx": _nginx_version(),
        "image": {"digest": fx.digest, "data_chunks": fx.data_chunks, "holes": fx.holes},
    }  # fmt: skip
    sides: list[dict[str, Any]] = []
    provision = start_provision(fx)
    ledger = Ledger()
    print(f"provision: {args.agents} agents for {args.seconds:.0f} s (pid {provision.pid}, {provision.url})",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        target = Target("provision", provision.url, provision.ports["dhcp"], True)
        sides.append(asyncio.run(load(provision, target, args, mix, args.seconds, ledger)))
    finally:
        sides_exit = provision.stop()
    if sides:
        sides[0]["server"]["exit"] = sides_exit
    figures["server_log"] = log_summary(provision.log)
    figures["consistency"] = check(work / "state" / "provision.db", ledger)
    sides.append(side(fx, start_aiohttp(fx), "aiohttp", args, mix, args.baseline_seconds))
    if not args.no_nginx:
        nginx = start_nginx(fx)
        if nginx is not None:
            sides.append(side(fx, nginx, "nginx", args, mix, args.baseline_seconds))
    figures["sides"] = sides
    figures["ratios"] = ratios(sides)
    (work / "figures.json").write_text(json.dumps(figures, sort_keys=True))
    print_report(figures, args.json)
    provision_errors = sides[0]["requests"]["all"]["errors"]
    return 1 if figures["consistency"]["mismatches"] or provision_errors else 0


def _nginx_version() -> str | None:
    nginx = shutil.which("nginx")
    if nginx is None:
        return None
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ") or None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100, help="simulated PCs at once (default 100)")
    parser.add_argument("--seconds", type=float, default=600, help="load on provision (default 600)")
    parser.add_argument("--baseline-seconds", type=float, help="load on each baseline (default: min(seconds, 120))")
    parser.add_argument("--write-seconds", type=float, default=20, help="simulated write per run (default 20, +-25 %%)")
    parser.add_argument("--fail-rate", type=float, default=0.05, help="share of writes reported failed (0.05)")
    parser.add_argument("--abandon-rate", type=float, default=0.03, help="share of writes cut by a power loss (0.03)")
    parser.add_argument("--quick", action="store_true", help="12 s on provision, 5 s per baseline, 6 s writes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx baseline even when installed")
    parser.add_argument("--json", action="store_true", help="end with one JSON line holding every figure")
    parser.add_argument("--workdir", type=Path, help="work folder (kept); default a temporary one, removed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder (store, logs)")
    parser.add_argument("--baseline-server", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        return serve_main(args.baseline_server)
    if args.quick:
        args.seconds, args.write_seconds = 12.0, 6.0
        args.baseline_seconds = args.baseline_seconds or 5.0
    if args.baseline_seconds is None:
        args.baseline_seconds = min(args.seconds, 120.0)
    args.status_every = 10.0 if args.seconds <= 60 else 60.0
    if args.agents < 1 or args.agents > 65_535 or args.seconds <= 0 or args.write_seconds < 2:
        parser.error("--agents 1..65535, --seconds > 0, --write-seconds >= 2")
    if not (args.fail_rate >= 0 and args.abandon_rate >= 0 and args.fail_rate + args.abandon_rate < 1):
        parser.error("--fail-rate and --abandon-rate are shares: each >= 0, together < 1")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-agents-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # nginx's worker (nobody) reads the index under it
    try:
        return run(args, work)
    finally:
        if args.keep or args.workdir is not None:
            print(f"agents bench: work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
