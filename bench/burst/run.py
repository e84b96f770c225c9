"""One burst: start a side's servers, run the client worker in the clients' namespace, measure, check."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.dhcp.packet import BROADCAST_FLAG, MessageType, client_request

from .clients import ClientResult
from .common import CLIENT_IF, CLIENT_IP, HTTP_PORT, REPO, STEPS, BenchError
from .dhcp import pxe_options
from .measure import CpuCgroup, proc_cpu_seconds, udp_drops_by_port, udp_rcvbuf_errors
from .netns import ClientNetns
from .servers import Files, Servers, Started


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class RunResult:
    side: str
    round: int
    clients: int
    failures: int
    wall_s: float
    cpu_s: float | None  # cgroup: every server process, also the exited ones
    proc_cpu_s: float  # /proc/PID/stat of the server processes and their live children
    client_cpu_s: float
    steps_ms: dict[str, dict[str, float | None]]
    resends: dict[str, int]
    udp_drops_server: int  # datagrams the servers' namespace dropped on full socket buffers during the burst
    udp_drops_client: int
    udp_drops_by_port: dict[str, int]
    blksizes: list[int]
    errors: list[str] = field(default_factory=list)
    server_log: list[str] = field(default_factory=list)


def _log_problems(lab: Any, started: Started) -> list[str]:
    lines: list[str] = []
    for log in started.logs:
        path = lab.log_path(log)
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if started.side == "provision":
                    if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                        lines.append(line)
                elif "LOUD WARNING" in line:  # dnsmasq on --bind-interfaces: about DNS, which is off (port 0)
                    continue
                elif re.search(r"\b(warning|error|fail|crit|alert|emerg)", line, re.IGNORECASE):
                    lines.append(f"{log}: {line}")
    return lines


def run_once(
    lab: Any,
    servers: Servers,
    cns: ClientNetns,
    files: Files,
    side: str,
    rnd: int,
    workdir: Path,
) -> RunResult:
    run_dir = workdir / f"r{rnd}-{side}"
    group = CpuCgroup.create(f"boot-burst-{os.getpid()}-r{rnd}-{side}")
    started: Started | None = None
    try:
        started = servers.start(side, run_dir, group)
        servers.wait_ready(started)
        time.sleep(0.5)  # start-up work (imports, first select turns) is not the burst's
        rng = random.SystemRandom()
        xids = rng.sample(range(1, 1 << 32), len(files.macs))
        use_http = side == "provision" or servers.nginx
        clients = []
        for mac, xid in zip(files.macs, xids, strict=True):
            discover = client_request(
                MessageType.DISCOVER, mac, xid=xid, flags=BROADCAST_FLAG, options=pxe_options(mac)
            )
            script = str(files.script(mac)) if side == "baseline" else None
            clients.append({"mac": mac, "xid": xid, "discover": discover.encode().hex(), "script": script})
        spec = {
            "side": side,
            "interface": CLIENT_IF,
            "client_ip": CLIENT_IP,
            "http": use_http,
            "http_port": HTTP_PORT,
            "file": str(files.boot_file),
            "clients": clients,
        }
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        roots = [p.pid for p in started.procs]
        snmp0 = (lab.run(["cat", "/proc/net/snmp"]).stdout, cns.exec(["cat", "/proc/net/snmp"]).stdout)
        proc0 = proc_cpu_seconds(roots)
        cg0 = group.usage_seconds() if group else 0.0
        done = subprocess.run(
            ["ip", "netns", "exec", cns.name, sys.executable, "-m", "bench.burst", "--worker", str(spec_path)],
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        time.sleep(0.5)  # the servers' trailing work (last ACKs, lease file) is the burst's
        proc1 = proc_cpu_seconds(roots)
        cg1 = group.usage_seconds() if group else 0.0
        snmp1 = (lab.run(["cat", "/proc/net/snmp"]).stdout, cns.exec(["cat", "/proc/net/snmp"]).stdout)
        by_port = udp_drops_by_port(lab.run(["cat", "/proc/net/udp"]).stdout, started.udp)
        if done.returncode != 0:
            raise BenchError(f"the client worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
        out = json.loads(done.stdout)
        server_log = _log_problems(lab, started)
    finally:
        if started is not None:
            servers.stop(started, group)
        if group is not None:
            group.remove()

    results = [ClientResult(**r) for r in out["results"]]
    errors = [f"{r.mac}: {r.error}" for r in results if not r.ok]
    holders: dict[str, list[str]] = {}
    for r in results:
        if r.ip:
            holders.setdefault(r.ip, []).append(r.mac)
    failed = {r.mac for r in results if not r.ok}
    for ip, macs in holders.items():
        if len(macs) > 1:
            errors.append(f"{ip} leased to {len(macs)} clients: {', '.join(macs)}")
            failed |= set(macs)
    steps: dict[str, dict[str, float | None]] = {}
    for step in STEPS:
        values = [v * 1000 for r in results if r.ok and (v := getattr(r, step)) is not None]
        steps[step] = {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values, default=None)}
    return RunResult(
        side=side,
        round=rnd,
        clients=len(results),
        failures=len(failed),
        wall_s=float(out["wall_s"]),
        cpu_s=(cg1 - cg0) if group else None,
        proc_cpu_s=proc1 - proc0,
        client_cpu_s=float(out["client_cpu_s"]),
        steps_ms=steps,
        resends={
            "dhcp": sum(r.dhcp_resends for r in results),
            "tftp": sum(r.tftp_resends for r in results),
            "http": sum(r.http_retries for r in results),
        },
        udp_drops_server=udp_rcvbuf_errors(snmp1[0]) - udp_rcvbuf_errors(snmp0[0]),
        udp_drops_client=udp_rcvbuf_errors(snmp1[1]) - udp_rcvbuf_errors(snmp0[1]),
        udp_drops_by_port=by_port,
        blksizes=sorted({r.blksize for r in results if r.blksize}),
        errors=errors,
        server_log=server_log,
    )
