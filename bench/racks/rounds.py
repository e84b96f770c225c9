"""One timed round: N agents imaging at once through one transport (``unicast`` or ``multicast``, the
server's ``multicast.transfer``), or udpcast's sender and N receivers; with a scenario's twist (a late
joiner, a slow link, a client killed, netem loss). The time is from the start to the last verified agent
(the last receiver done for udpcast); each agent's own time, its run's TransferReport and the server's CPU
come back in a ``Round``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.racks.hosts import Procs, Server, proc_cpu, start_agent, udp_receiver, udp_sender
from bench.racks.net import Link, Rack, RackError, mac_of

AGENT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Twist:
    """A scenario: ``late``: the last agent starts this many seconds after the others; ``slow``: the last
    agent's link at this rate (tc units); ``kill``: the last agent killed after this many seconds; ``loss``:
    netem's share on the down links of ``loss_on`` (``one``: the last agent's, ``all``)."""

    late: float = 0.0
    slow: str = ""
    kill: float = 0.0
    loss: float = 0.0
    loss_on: str = "all"


@dataclass
class Round:
    transport: str
    n: int
    seconds: float  # to the last verified (the killed one left out)
    server_cpu: float
    times: list[float | None] = field(default_factory=list)  # per agent, from its own start; None: failed
    transfers: list[dict[str, Any]] = field(default_factory=list)  # per verified run: its TransferReport
    ok: bool = True
    note: str = ""
    drops: dict[str, int] = field(default_factory=dict)  # packets the links' qdiscs dropped (link_drops)


def link_drops(rack: Rack, before: dict[tuple[str, str], int], links: list[Link]) -> dict[str, int]:
    """Packets dropped since ``before``: out of the server, into it, into the agents, out of them."""
    after = rack.drops()

    def delta(ns: str, way: str) -> int:
        return after[(ns, way)] - before[(ns, way)]

    return {"server_out": delta(rack.server.ns, "out"), "server_in": delta(rack.server.ns, "in"),
            "agents_in": sum(delta(link.ns, "in") for link in links),
            "agents_out": sum(delta(link.ns, "out") for link in links)}  # fmt: skip


def fresh_disk(folder: Path, size: int) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with (folder / "vda").open("wb") as f:
        f.truncate(size)
    return folder


def agents_round(rack: Rack, work: Path, store: Path, transport: str, n: int, disk_size: int, rate: int,
                 twist: Twist = Twist(), nice: int = 0, warm: bool = True) -> Round:  # fmt: skip
    """N agents against a fresh server whose config says ``transfer: transport``; the agents at ``nice``.
    ``warm``: every agent is started and has imported before the clock starts (``warmstart.py``); each one
    (the late one too) is then let go at its time. Cold: each is started at its time."""
    procs = Procs()
    links = rack.agents[:n]
    try:
        for i, link in enumerate(links):
            slow = twist.slow if twist.slow and i == n - 1 else rack.rate
            lossy = twist.loss if twist.loss and (twist.loss_on == "all" or i == n - 1) else 0.0
            rack.shape(link, slow, lossy)
        before = rack.drops()
        server = Server(rack, procs, work / "server", store, transport, rate)
        macs = [mac_of(i) for i in range(n)]
        tokens = {link.mac or "": server.token(link) for link in links}
        disks = [fresh_disk(work / f"pc{i}", disk_size) for i in range(n)]
        started = [0.0] * n
        procs_by_i: dict[int, Any] = {}
        gates = [(work / f"agent{i}.ready", work / f"agent{i}.go") for i in range(n)] if warm else []

        def start(i: int) -> None:
            if warm:
                gates[i][1].touch()
            else:
                procs_by_i[i] = start_agent(procs, links[i], macs[i], tokens[macs[i]], disks[i],
                                            work / f"agent{i}.log", nice)  # fmt: skip
            started[i] = time.monotonic()

        if warm:
            for i in range(n):
                procs_by_i[i] = start_agent(procs, links[i], macs[i], tokens[macs[i]], disks[i],
                                            work / f"agent{i}.log", nice, gates[i])  # fmt: skip
            wait_ready(gates, procs_by_i)
        cpu = server.cpu()
        t0 = time.monotonic()
        for i in range(n):
            if not (twist.late and i == n - 1):
                start(i)
        ends: dict[int, float] = {}
        killed = False
        while len(ends) < n:
            now = time.monotonic()
            if twist.late and not started[n - 1] and now - t0 >= twist.late:
                start(n - 1)
            if twist.kill and not killed and now - t0 >= twist.kill:
                procs.kill(procs_by_i[n - 1])
                killed = True
            for i, proc in procs_by_i.items():
                if i not in ends and started[i] and proc.poll() is not None:
                    ends[i] = time.monotonic()
            if now - t0 > AGENT_TIMEOUT:
                raise RackError(f"{transport} x{n}: agents still running after {AGENT_TIMEOUT:.0f} s")
            time.sleep(0.02)
        server_cpu = server.cpu() - cpu
        drops = link_drops(rack, before, links)
        codes = {i: procs_by_i[i].returncode for i in range(n)}
        times: list[float | None] = [ends[i] - started[i] if codes[i] == 0 else None for i in range(n)]
        counted = [ends[i] for i in range(n) if not (twist.kill and i == n - 1)]
        runs = {r["mac"]: r for r in server.runs()}
        transfers = [dict(runs[m].get("transfer") or {"mode": "none"}) for m in macs if m in runs]
        done = [runs.get(m, {}).get("state") == "done" for m in macs]
        expect = [not (twist.kill and i == n - 1) for i in range(n)]
        server.stop()
        rnd = Round(transport, n, max(counted) - t0, server_cpu, times, transfers, ok=done == expect, drops=drops)
        if not rnd.ok:
            rnd.note = f"runs done {done}, exit codes {codes}: see {work}/agent*.log"
        return rnd
    finally:
        procs.close()
        for link in links:
            rack.shape(link, rack.rate)


def wait_ready(gates: list[tuple[Path, Path]], procs: dict[int, Any], timeout: float = 60.0) -> None:
    """Until every warm agent has imported (its READY file); RackError if one exits or takes ``timeout``."""
    deadline = time.monotonic() + timeout
    while not all(ready.exists() for ready, _ in gates):
        dead = [i for i, proc in procs.items() if proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RackError(f"warm agents {dead or 'all'} not ready (exited or over {timeout:.0f} s): see agent*.log")
        time.sleep(0.02)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def udpcast_round(rack: Rack, work: Path, export: Path, export_sha: str, n: int, bitrate: int,
                  nice: int = 0) -> Round:  # fmt: skip
    """udp-sender of the export file to N udp-receivers writing files: the time to all received."""
    procs = Procs()
    work.mkdir(parents=True, exist_ok=True)
    try:
        before = rack.drops()
        targets = [work / f"recv{i}.zst" for i in range(n)]
        for t in targets:
            t.unlink(missing_ok=True)
        receivers = [udp_receiver(procs, rack.agents[i], targets[i], work / f"recv{i}.log", nice) for i in range(n)]
        time.sleep(0.3)  # listening before the sender's hello
        t0 = time.monotonic()
        sender = udp_sender(procs, rack, export, n, bitrate, work / "sender.log")
        ends: dict[int, float] = {}
        sender_cpu = 0.0
        while len(ends) < n:
            with contextlib.suppress(OSError, IndexError, ValueError):  # its last reading before it exits
                sender_cpu = proc_cpu(sender.pid)
            for i, proc in enumerate(receivers):
                if i not in ends and proc.poll() is not None:
                    ends[i] = time.monotonic()
            if time.monotonic() - t0 > AGENT_TIMEOUT:
                raise RackError(f"udpcast x{n}: receivers still running after {AGENT_TIMEOUT:.0f} s")
            time.sleep(0.02)
        seconds = max(ends.values()) - t0
        sender.wait(timeout=30)
        ok = all(p.returncode == 0 for p in receivers) and all(sha256_of(t) == export_sha for t in targets)
        rnd = Round("udpcast", n, seconds, sender_cpu, [ends[i] - t0 for i in range(n)], ok=ok,
                    drops=link_drops(rack, before, rack.agents[:n]))  # fmt: skip
        if not ok:
            rnd.note = f"a receiver failed or its file differs: see {work}"
        return rnd
    finally:
        procs.close()


def transfer_totals(rounds: list[Round]) -> dict[str, int]:
    keys = ("bytes_multicast", "bytes_http", "repair_bytes", "datagrams_lost", "chunks_http", "chunks_multicast")
    return {k: sum(int(t.get(k, 0)) for r in rounds for t in r.transfers) for k in keys}


def dump(rounds: list[Round]) -> str:
    return json.dumps([r.__dict__ for r in rounds], default=str)
