"""The report: the table, the per-side summary and ratios, tool versions, and the final JSON line."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .common import BLKSIZE, BOOT_FILE, SIDES, STEPS, _run
from .run import RunResult


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(runs: Sequence[RunResult], http_baseline: bool) -> str:
    head = (
        "| side | round | failures | wall s | DHCP p50/p95 ms | TFTP p50/p95 ms | HTTP p50/p95 ms "
        "| client p50/p95 ms | resends d/t/h | UDP drops srv/cli | server CPU s | CPU s (/proc) |"
    )
    lines = [head, "|---|---:|---:|---:|---|---|---|---|---|---|---:|---:|"]
    for r in runs:
        cells = [
            r.side,
            str(r.round),
            str(r.failures),
            _s(r.wall_s),
        ]
        for step in STEPS:
            st = r.steps_ms[step]
            if step == "http" and r.side == "baseline" and not http_baseline:
                cells.append("n/a")
            else:
                cells.append(f"{_ms(st['p50'])} / {_ms(st['p95'])}")
        cells += [
            f"{r.resends['dhcp']}/{r.resends['tftp']}/{r.resends['http']}",
            f"{r.udp_drops_server}/{r.udp_drops_client}",
            _s(r.cpu_s),
            _s(r.proc_cpu_s),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(runs: Sequence[RunResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in SIDES:
        mine = [r for r in runs if r.side == side]
        if not mine:
            continue
        cpu = [r.cpu_s for r in mine if r.cpu_s is not None]
        out[side] = {
            "runs": len(mine),
            "failures": sum(r.failures for r in mine),
            "wall_s_median": statistics.median(r.wall_s for r in mine),
            "cpu_s_median": statistics.median(cpu) if cpu else None,
            "proc_cpu_s_median": statistics.median(r.proc_cpu_s for r in mine),
            "client_cpu_s_median": statistics.median(r.client_cpu_s for r in mine),
            "resends": {k: sum(r.resends[k] for r in mine) for k in ("dhcp", "tftp", "http")},
            "udp_drops_server": sum(r.udp_drops_server for r in mine),
        }
        for step in STEPS:
            p50 = [v for r in mine if (v := r.steps_ms[step]["p50"]) is not None]
            p95 = [v for r in mine if (v := r.steps_ms[step]["p95"]) is not None]
            out[side][f"{step}_p50_ms_median"] = statistics.median(p50) if p50 else None
            out[side][f"{step}_p95_ms_median"] = statistics.median(p95) if p95 else None
    if "provision" in out and "baseline" in out:
        p, b = out["provision"], out["baseline"]

        def ratio(key: str) -> float | None:
            return p[key] / b[key] if p.get(key) and b.get(key) else None

        out["ratio_provision_over_baseline"] = {
            "wall": ratio("wall_s_median"),
            "cpu": ratio("cpu_s_median"),
            "proc_cpu": ratio("proc_cpu_s_median"),
        }
    return out


def tool_versions() -> dict[str, str]:
    versions: dict[str, str] = {"python": sys.version.split()[0]}
    for name, argv in (
        ("dnsmasq", ["dnsmasq", "--version"]),
        ("tftpd-hpa", ["in.tftpd", "-V"]),
        ("nginx", ["nginx", "-v"]),
    ):
        if shutil.which(argv[0]):
            done = _run(argv, check=False)
            versions[name] = (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr) else ""
    return versions


def print_report(clients: int, rounds: int, file_size: int, runs: Sequence[RunResult], has_nginx: bool) -> None:
    """Everything on stdout after the runs: header, table, per-side lines, failures, the JSON line."""
    summary = summarize(runs)
    print(
        f"\nboot burst: {clients} PXE clients at once (DHCP full -> TFTP {BOOT_FILE} {file_size} B "
        f"blksize {BLKSIZE} -> HTTP /boot/<mac>.ipxe), {rounds} rounds per side, alternating; "
        f"{os.cpu_count()} CPUs"
    )
    print("baseline: dnsmasq (DHCP) + tftpd-hpa + " + ("nginx" if has_nginx else "no HTTP server (nginx missing)"))
    print()
    print(table(runs, has_nginx))
    print()
    for side in SIDES:
        s = summary.get(side)
        if s:
            print(
                f"{side:<9}: median wall {s['wall_s_median']:.2f} s, median server CPU {_s(s['cpu_s_median'])} s "
                f"(/proc {s['proc_cpu_s_median']:.2f} s), failures {s['failures']}, "
                f"resends DHCP/TFTP/HTTP {s['resends']['dhcp']}/{s['resends']['tftp']}/{s['resends']['http']}, "
                f"server UDP drops {s['udp_drops_server']}"
            )
    ratio = summary.get("ratio_provision_over_baseline", {})
    print(
        f"provision / baseline: wall {_s(ratio.get('wall'))}x, server CPU {_s(ratio.get('cpu'))}x "
        f"(/proc {_s(ratio.get('proc_cpu'))}x)"
    )
    for r in runs:
        for line in r.errors[:10]:
            print(f"  failure r{r.round} {r.side}: {line}")
        for line in r.server_log[:10]:
            print(f"  server log r{r.round} {r.side}: {line}")
    print()
    print(
        json.dumps(
            {
                "benchmark": "boot_burst",
                "clients": clients,
                "rounds": rounds,
                "file_size": file_size,
                "blksize": BLKSIZE,
                "cpus": os.cpu_count(),
                "baseline_http": has_nginx,
                "versions": tool_versions(),
                "summary": summary,
                "runs": [{k: v for k, v in asdict(r).items() if k != "server_log"} for r in runs],
            },
            separators=(",", ":"),
        )
    )
