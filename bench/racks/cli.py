"""The rack bench's options, its runs in order and the figures it prints (see ``bench/racks/__init__.py``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from bench.image_import import make_disk, size_arg
from bench.racks import __doc__ as DOC
from bench.racks.hosts import snapshot
from bench.racks.net import Rack, RackError, cleanup_stale, rate_bits
from bench.racks.rounds import Round, Twist, agents_round, sha256_of, transfer_totals, udpcast_round
from provision.images import ImageStore

TRANSPORTS = ("unicast", "multicast", "udpcast")
SCENARIOS = ("late", "slow", "kill", "loss")
TOOLS = ("ip", "tc", "bridge", "mkfs.ext4", "udp-sender", "udp-receiver")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/rack.py", description=(DOC or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join((DOC or "").split("\n\n")[1:]))  # fmt: skip
    p.add_argument("--agents", default="1,4,8", help="the N of the table (default 1,4,8)")
    p.add_argument("--max", type=int, default=8, help="the largest N: 12 adds N=12 to the table")
    p.add_argument("--transports", default=",".join(TRANSPORTS), help="of unicast, multicast, udpcast")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="of late, slow, kill, loss; none: none")
    p.add_argument("--scenario-agents", type=int, default=4, help="N of the scenarios (default 4)")
    p.add_argument("--loss", type=float, default=0.05, help="netem's loss share in the loss scenario")
    p.add_argument("--loss-on", choices=("all", "one"), default="all", help="the links the loss is on")
    p.add_argument("--rate", default="100mbit", help="every link's rate, tc units (50mbit when 2 cores limit)")
    p.add_argument("--disk-size", type=size_arg, default=512 << 20)
    p.add_argument("--content", type=size_arg, default=160 << 20, help="real files copied into the ext4")
    p.add_argument("--workdir", type=Path, default=None, help="keep the disk and store here, reused next time")
    p.add_argument(
        "--agent-nice",
        type=int,
        default=5,
        help="the agents' niceness (default 5: below the server's, as on separate PCs; 0: the same)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="start each agent's Python when its clock starts (default: warm, imported before: warmstart.py)",
    )
    return p.parse_args(argv)


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through every finally: processes killed, namespaces deleted


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("rack bench: needs root (network namespaces, tc): sudo scripts/bench rack", file=sys.stderr)
        return 2
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"rack bench: missing {', '.join(missing)} (scripts/bench rack installs them)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    for name in cleanup_stale():
        print(f"rack bench: removed a stale namespace {name}", file=sys.stderr)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args, args.workdir)
    with tempfile.TemporaryDirectory(prefix="rack-bench-", dir="/var/tmp") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    ns = sorted({int(n) for n in args.agents.split(",") if n.strip()} | ({args.max} if args.max > 8 else set()))
    transports = [t for t in args.transports.split(",") if t in TRANSPORTS]
    scenarios = [s for s in args.scenarios.split(",") if s in SCENARIOS]
    bits = rate_bits(args.rate)
    send_rate = int(bits * 0.9 / 8)  # the carousel's pace: 90 % of the link, bytes/s
    code = snapshot(work)
    raw, _ = make_disk(work, args.disk_size, args.content)
    store = ImageStore(work / "store")
    version = store.import_raw(raw, "bench")
    export, _ = store.export(version.ref, work / "export")
    export_sha = sha256_of(export)
    stored = store.stored_bytes(version)
    wire = {"unicast": stored, "multicast": stored, "udpcast": export.stat().st_size}
    print(f"image: {version.index.disk_size / 2**20:.0f} MiB disk, {version.index.mapped_bytes / 2**20:.0f} MiB "
          f"mapped, {stored / 2**20:.1f} MiB stored (zstd), export {wire['udpcast'] / 2**20:.1f} MiB; links "
          f"{args.rate} (tbf); carousel and udp-sender paced at {send_rate * 8 / 1e6:.0f} Mbit/s; "
          f"{os.cpu_count()} CPUs; agents at nice {args.agent_nice}, {'cold' if args.cold else 'warm'}; "
          f"provision from a copy in {code}", flush=True)  # fmt: skip
    rounds: dict[tuple[str, int], Round] = {}
    scen: dict[str, Round] = {}
    skipped: dict[str, str] = {}
    count = max([*ns, args.scenario_agents if scenarios else 0])
    with Rack(count, args.rate) as rack:
        for n in ns:
            for t in transports:
                place = work / "rounds" / f"{t}-{n}"
                shutil.rmtree(place, ignore_errors=True)
                if t == "udpcast":
                    rnd = udpcast_round(rack, place, export, export_sha, n, int(bits * 0.9), args.agent_nice)
                else:
                    rnd = agents_round(rack, place, work / "store", t, n, version.index.disk_size, send_rate,
                                       nice=args.agent_nice, warm=not args.cold)  # fmt: skip
                rounds[(t, n)] = rnd
                print(f"  {t} x{n}: {rnd.seconds:.1f} s{'' if rnd.ok else ' NOT OK: ' + rnd.note}", flush=True)
        m = args.scenario_agents
        base = rounds.get(("multicast", m))
        if scenarios and base is None:
            shutil.rmtree(work / "rounds" / f"base-{m}", ignore_errors=True)  # a --workdir's last run
            base = agents_round(rack, work / "rounds" / f"base-{m}", work / "store", "multicast", m,
                                version.index.disk_size, send_rate, nice=args.agent_nice,
                                warm=not args.cold)  # fmt: skip
            rounds[("multicast", m)] = base
        twists = {"late": Twist(late=0.3 * base.seconds if base else 0), "slow": Twist(slow=f"{bits // 10}bit"),
                  "kill": Twist(kill=0.5 * base.seconds if base else 0),
                  "loss": Twist(loss=args.loss, loss_on=args.loss_on)}  # fmt: skip
        for s in scenarios:
            place = work / "rounds" / f"scenario-{s}"
            shutil.rmtree(place, ignore_errors=True)
            try:
                scen[s] = agents_round(rack, place, work / "store", "multicast", m, version.index.disk_size,
                                       send_rate, twists[s], nice=args.agent_nice, warm=not args.cold)  # fmt: skip
            except RackError as exc:  # e.g. a kernel without sch_netem: the others' figures still print
                print(f"  scenario {s}: not run: {exc}", flush=True)
                skipped[s] = str(exc)
                continue
            print(f"  scenario {s}: {scen[s].seconds:.1f} s{'' if scen[s].ok else ' NOT OK: ' + scen[s].note}",
                  flush=True)  # fmt: skip
    figures = report(rounds, scen, ns, transports, wire, stored / send_rate, twists, args)
    for s, why in skipped.items():
        print(f"  {s:5} not run: {why}")
    figures["skipped"] = skipped
    print(json.dumps(figures, sort_keys=True, default=str))
    return 0 if all(r.ok for r in [*rounds.values(), *scen.values()]) and not skipped else 1


def multicast_used(rnd: Round) -> bool:
    return any(t.get("mode") == "multicast" and int(t.get("bytes_multicast", 0)) > 0 for t in rnd.transfers)


def report(
    rounds: dict[tuple[str, int], Round],
    scen: dict[str, Round],
    ns: list[int],
    transports: list[str],
    wire: dict[str, int],
    one_pass: float,
    twists: dict[str, Twist],
    args: argparse.Namespace,
) -> dict[str, Any]:
    print(f"\n{'N':>3} {'transport':10} {'seconds':>8} {'t(N)/t(1)':>9} {'aggr MB/s':>9} {'server CPU':>16}  verified"
          "  link drops: server out/in, agents in/out")  # fmt: skip
    table = []
    for t in transports:
        one = rounds.get((t, 1))
        for n in ns:
            r = rounds[(t, n)]
            if t == "multicast" and not multicast_used(r):
                print(f"{n:>3} {t:10} not available yet: the agents took HTTP (no run's transfer was multicast)")
                table.append({"transport": t, "n": n, "available": False})
                continue
            ratio = r.seconds / one.seconds if one else math.nan
            aggr = n * wire[t] / r.seconds / 1e6
            cpu = f"{r.server_cpu:5.2f}s {100 * r.server_cpu / r.seconds:4.0f}%"
            drops = "/".join(str(r.drops.get(k, 0)) for k in ("server_out", "server_in", "agents_in", "agents_out"))
            print(f"{n:>3} {t:10} {r.seconds:8.1f} {ratio:9.2f} {aggr:9.1f} {cpu:>16}  {r.ok!s:8}  {drops}")
            table.append({"transport": t, "n": n, "seconds": round(r.seconds, 2), "ratio": round(ratio, 3),
                          "aggregate_MBps": round(aggr, 2), "server_cpu_s": round(r.server_cpu, 2),
                          "ok": r.ok, "link_drops": r.drops})  # fmt: skip
    base = rounds.get(("multicast", args.scenario_agents))
    out: dict[str, Any] = {"table": table, "one_pass_s": round(one_pass, 2), "rate": args.rate, "scenarios": {}}
    if scen and base is not None:
        print(f"\nscenarios at N={args.scenario_agents}, multicast (baseline: all {base.seconds:.1f} s"
              f"{'' if multicast_used(base) else ', NOT multicast'}); one pass of the carousel "
              f"{one_pass:.1f} s")  # fmt: skip
    for s, r in scen.items():
        others = [x for x in r.times[:-1] if x is not None]
        last = r.times[-1]
        tot = transfer_totals([r])
        lastt = r.transfers[-1] if len(r.transfers) == len(r.times) else {}
        fig = {"others_max_s": round(max(others), 2) if others else None, "last_s": last, "ok": r.ok,
               "others_ratio": round(max(others) / base.seconds, 3) if others and base else None, **tot,
               "last_transfer": lastt}  # fmt: skip
        out["scenarios"][s] = fig
        head = f"  {s:5} others {fig['others_max_s']} s (x{fig['others_ratio']} of baseline)"
        if s == "late":
            print(f"{head}; the late one joined at {twists['late'].late:.1f} s, done {last:.1f} s after joining "
                  f"({(last or 0) / one_pass:.2f} passes)")  # fmt: skip
        elif s == "slow":
            print(f"{head}; the slow one ({twists['slow'].slow}) {last or math.nan:.1f} s, {lastt.get('mode')}, "
                  f"left because "
                  f"{lastt.get('left_because')}, {int(lastt.get('bytes_http', 0)) / 1e6:.1f} MB by HTTP")  # fmt: skip
        elif s == "kill":
            print(f"{head}; one killed at {twists['kill'].kill:.1f} s; verified as expected: {r.ok}")
        else:
            print(f"{head}; {args.loss:.0%} loss on {args.loss_on} link(s): all verified {r.ok}; repair "
                  f"{tot['repair_bytes'] / 1e6:.2f} MB by HTTP ranges, {tot['bytes_http'] / 1e6:.2f} MB by HTTP "
                  f"in all, {tot['datagrams_lost']} datagrams lost")  # fmt: skip
    return out


def entry() -> int:
    try:
        return main()
    except RackError as exc:
        print(f"rack bench: {exc}", file=sys.stderr)
        return 1
