"""The printout: one table of every request kind per side, each side's server CPU and memory, the client's
own load, the ratios of provision's latency to each baseline's, the store's consistency, and (``--json``)
one JSON line with every figure."""

from __future__ import annotations

import json
from typing import Any

KIND_ORDER = ("boot", "hello", "index", "progress", "report", "boot-local", "netboot", "all")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(errors.items())) or "0"


def table(sides: list[dict[str, Any]]) -> str:
    lines = ["| side | kind | requests | per s | p50 ms | p95 ms | p99 ms | max ms | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for side in sides:
        for kind in KIND_ORDER:
            row = side["requests"].get(kind)
            if row is None:
                continue
            cells = [side["name"], kind, str(row["requests"]), f"{row['per_s']:.1f}",
                     *(_ms(row[q]) for q in ("p50", "p95", "p99", "max")), _errors(row["errors"])]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def server_line(side: dict[str, Any]) -> str:
    s = side["server"]
    return (f"{side['name']:<9}: {side['wall_s']:.0f} s, server CPU {s['cpu_s']:.1f} s = "
            f"{100 * s['cpu_s'] / side['wall_s']:.1f} % of one CPU ({s['cpu_ms_per_request']:.2f} ms per request); "
            f"RSS {s['rss_start_mib']:.0f} MiB at start, {s['rss_end_mib']:.0f} MiB at the end, peak "
            f"{s['rss_peak_mib']:.0f} MiB; threads {s['threads_end']}, fds {s['fds_start']} -> {s['fds_end']}; "
            f"exit {s['exit']}; client CPU {side['client_cpu_s']:.1f} s, client loop lag p99 "
            f"{_ms(side['loop_lag_ms']['p99'])} ms, max {_ms(side['loop_lag_ms']['max'])} ms; "
            f"machine load average {side['loadavg_before']:.1f} before, {side['loadavg_mean']:.1f} mean, "
            f"{side['loadavg_max']:.1f} max")  # fmt: skip


def ratios(sides: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """provision's p50/p99 over each baseline's, per kind and for all requests."""
    mine = sides[0]["requests"]
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for base in sides[1:]:
        theirs = base["requests"]
        per: dict[str, dict[str, float | None]] = {}
        for kind in KIND_ORDER:
            if kind in mine and kind in theirs and kind != "netboot":
                per[kind] = {q: (round(mine[kind][q] / theirs[kind][q], 2) if mine[kind][q] and theirs[kind][q]
                                 else None) for q in ("p50", "p99")}  # fmt: skip
        per["cpu_per_request"] = {"x": round(sides[0]["server"]["cpu_ms_per_request"]
                                             / max(base["server"]["cpu_ms_per_request"], 1e-6), 2)}  # fmt: skip
        out[base["name"]] = per
    return out


def consistency_lines(c: dict[str, Any]) -> list[str]:
    ev = c["events"]
    sent = " + ".join(f"{k} {ev.get(k, {}).get('expected', 0)}" for k in ("hello", "progress", "write", "grow",
                                                                           "run-failed"))  # fmt: skip
    same = "=" if c["events_sent"] == c["events_stored"] else "!="
    maybe = f" (+{c['progress_maybe']} progress posts that may or may not be kept)" if c["progress_maybe"] else ""
    states = ", ".join(f"{k} {n}" for k, n in sorted(c["runs_by_state"].items()))
    ends = ", ".join(f"{k} {n}" for k, n in sorted(c["agent_ends"].items()))
    others = ", ".join(f"{k} {v['expected']}/{v['stored']}" for k, v in ev.items()
                       if k not in ("hello", "progress", "write", "grow", "run-failed"))  # fmt: skip
    counts = c["agent_counts"]
    lines = [
        f"events sent = events stored: {c['events_sent']} {same} {c['events_stored']} ({sent}){maybe}; "
        f"{c['progress_posts']} progress posts",
        f"other events expected/stored: {others}",
        f"runs created {c['runs_created']}, stored {c['runs_stored']}: {states} (agents saw: {ends}); "
        f"left open {c['runs_open']}",
        f"verification records {c['verification_records']} = reports with a verification "
        f"{c['reports_with_verification']}; machines {c['machines']}; netboots {counts.get('netboots', 0)} "
        f"({counts.get('netboots_noted', 0)} during a run); boot scripts refused {counts.get('scripts_refused', 0)}",
        "consistency: " + ("every count matches" if not c["mismatches"] else "MISMATCH: " + "; ".join(c["mismatches"])),
    ]
    if c["problems"]:
        lines.append("unexpected answers: " + " | ".join(c["problems"][:5]))
    return lines


def print_report(figures: dict[str, Any], as_json: bool) -> None:
    sides = figures["sides"]
    cfg = figures["config"]
    print(f"\nagent load: {cfg['agents']} agents; provision {cfg['seconds']:.0f} s, baselines "
          f"{cfg['baseline_seconds']:.0f} s each; writes {cfg['write_seconds']:.0f} s +-25 %, progress every "
          f"~2.1 s; {100 * cfg['fail_rate']:.0f} % failed writes, {100 * cfg['abandon_rate']:.0f} % power cuts; "
          f"{figures['cpus']} CPUs; Python {figures['python']}, aiohttp {figures['aiohttp']}"
          f"{', ' + figures['nginx'] if figures.get('nginx') else ', nginx not installed'}\n")  # fmt: skip
    print(table(sides))
    print()
    for side in sides:
        print(server_line(side))
    for base, per in figures["ratios"].items():
        shown = ", ".join(f"{k} {_x(v['p50'])}/{_x(v['p99'])}" for k, v in per.items() if k != "cpu_per_request")
        print(f"provision / {base}: p50/p99 {shown}; server CPU per request {per['cpu_per_request']['x']}x")
    log = figures["server_log"]
    print(f"provision's log: {log['lines']} lines, {log['warnings']} warnings, {log['errors']} errors, "
          f"{log['tracebacks']} tracebacks")  # fmt: skip
    for line in consistency_lines(figures["consistency"]):
        print(line)
    if as_json:
        print(json.dumps(figures, sort_keys=True))


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
