"""The simulated PCs: one asyncio task per bench slot, each looping the real agent protocol over HTTP.

A slot images one PC after another (a workshop bench: a PC is imaged, reboots into its disk, and the next
PC takes its place; each PC has its own MAC). One boot of a PC:

1. (``netboot``: a PXE DHCPDISCOVER, only when its previous run may still be open: after a power cut);
2. ``boot``: ``GET /boot/<mac>.ipxe`` on a fresh connection, as iPXE does; the token from the script;
3. ``hello`` with the probe, on the boot's own keep-alive session (as the agent's requests.Session);
4. ``index``: ``GET`` the plan's index, which gives the digest and the data chunks the report states;
5. ``progress`` every ~2 s of simulated writing (``writing``, then ``verifying`` for the last quarter; the
   last post says ``bytes_done == bytes_total``), each sent >= 2.05 s after the previous answer;
6. ``report``: the verification (``VerificationReport``), the writer's figures, the grow result;
7. after ``done``, the PC's next boot: ``boot-local``, the script must send it to its local disk.

Some boots go wrong on purpose (``--fail-rate``: the agent reports a write failure, and the same PC boots
the live environment again; ``--abandon-rate``: the power is cut mid-write, the run stays open, and the PC's
next boot must network-boot first to earn a token, its hello superseding the old run). At the deadline a
slot starts no new PC; a boot under way ends normally (no synchronized rush of reports), and a PC whose run
a power cut left open boots once more to close it. Bodies are built with ``provision.wire.api`` (``Hello``,
``Progress``, ``Report``, ``VerificationReport``).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.agents.fixture import netboot
from bench.agents.ledger import NETBOOT_NOTE_EVERY, Ledger, RunLog
from bench.agents.metrics import Recorder
from provision.wire.api import BootInfo, Hello, Progress, Report, Stage, VerificationReport
from provision.wire.index import Index

TOKEN = re.compile(r"provision\.token=([0-9a-f]+)")
HTTP_KINDS = ("boot", "boot-local", "hello", "index", "progress", "report")
PACE = 2.05  # seconds from a progress answer to the next post: > the server's 2 s, so each post is stored
TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclass(frozen=True)
class Target:
    """Where the agents go: the HTTP URL, the DHCP port (None: no DHCP, no netboot) and whether provision's
    promises are checked (``strict``; a baseline answers without them)."""

    name: str
    url: str
    dhcp_port: int | None
    strict: bool


@dataclass(frozen=True)
class Mix:
    """What each boot does: seconds of simulated writing (+-25 %), the share of failed and abandoned writes."""

    write_seconds: float
    fail_rate: float
    abandon_rate: float
    probe: dict[str, str]


class Slot:
    """One bench slot: its PCs, one after another, until the deadline (and its last run closed)."""

    def __init__(self, n: int, target: Target, mix: Mix, recorder: Recorder, ledger: Ledger, seed: int) -> None:
        self.n, self.target, self.mix, self.rec, self.ledger = n, target, mix, recorder, ledger
        self.rng = random.Random(seed * 100_003 + n)  # a simulation, not a secret
        self.pc = 0
        self.open_run: str | None = None  # a run this PC's server may still hold open

    def mac_of(self, pc: int) -> str:
        return f"02:b1:{self.n >> 8:02x}:{self.n & 255:02x}:{pc >> 8:02x}:{pc & 255:02x}"

    @property
    def mac(self) -> str:
        return self.mac_of(self.pc)

    async def run(self, deadline: float, ipxe: aiohttp.ClientSession) -> None:
        await asyncio.sleep(self.rng.uniform(0, min(5.0, self.mix.write_seconds)))
        tries_after_deadline = 0
        while time.monotonic() < deadline or self.open_run is not None:
            if time.monotonic() >= deadline:
                tries_after_deadline += 1
                if tries_after_deadline > 3:
                    self.ledger.problem(f"{self.mac}: run {self.open_run} still open at the end")
                    return
            outcome = await self.boot(deadline, ipxe)
            if outcome == "done":  # the PC reboots into its disk, then the next PC takes its place
                await asyncio.sleep(self.rng.uniform(1, 3))
                await self.local_boot(ipxe, self.mac)
                self.pc += 1
                if time.monotonic() < deadline:
                    await asyncio.sleep(self.rng.uniform(1, 3))
            elif time.monotonic() < deadline or self.open_run is not None:
                # failed: the same PC boots the live environment again; abandoned / error: after a pause
                await asyncio.sleep(self.rng.uniform(1, 3) if outcome == "failed" else self.rng.uniform(2, 5))

    async def call(
        self, session: aiohttp.ClientSession, kind: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int | None, bytes, float, float]:
        """One timed request: (status or None, body, sent, answered) on CLOCK_MONOTONIC."""
        sent = time.monotonic()
        try:
            async with session.request(method, self.target.url + path, json=body) as resp:
                data = await resp.read()
                status: int | None = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            answered = time.monotonic()
            self.rec.add(kind, answered - sent, type(exc).__name__)
            return None, b"", sent, answered
        answered = time.monotonic()
        self.rec.add(kind, answered - sent, str(status))
        return status, data, sent, answered

    async def netboot(self) -> None:
        port = self.target.dhcp_port
        if port is None:
            return
        sent = time.monotonic()
        try:
            await asyncio.to_thread(netboot, port, self.mac)
        except OSError as exc:
            self.rec.add("netboot", time.monotonic() - sent, type(exc).__name__)
            return
        self.rec.add("netboot", time.monotonic() - sent, "answered")
        self.ledger.netboot(self.mac, self.open_run is not None, sent)

    async def token(self, ipxe: aiohttp.ClientSession) -> str | None:
        """The boot script's token (netbooting first when a run may be open); None: refused or failed."""
        for attempt in range(3):
            if self.open_run is not None:
                await self.netboot()
            status, data, _, _ = await self.call(ipxe, "boot", "GET", f"/boot/{self.mac}.ipxe")
            found = TOKEN.search(data.decode(errors="replace")) if status == 200 else None
            if found is not None:
                self.ledger.counts["scripts_live"] += 1
                return found.group(1)
            self.ledger.counts["scripts_refused" if status == 200 else "scripts_failed"] += 1
            self.ledger.problem(f"{self.mac}: boot script {status} without a token (attempt {attempt + 1})")
            await asyncio.sleep(5)
        return None

    async def local_boot(self, ipxe: aiohttp.ClientSession, mac: str) -> None:
        status, data, _, _ = await self.call(ipxe, "boot-local", "GET", f"/boot/{mac}.ipxe")
        text = data.decode(errors="replace")
        if status == 200 and "-> local disk" in text and not TOKEN.search(text):
            self.ledger.counts["scripts_local"] += 1
        elif self.target.strict:
            self.ledger.problem(f"{mac}: the boot after done: {status} {text[:120]!r}")

    async def boot(self, deadline: float, ipxe: aiohttp.ClientSession) -> str:
        """One boot of the slot's PC: done, failed, abandoned or error."""
        token = await self.token(ipxe)
        if token is None:
            return "error"
        connector = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
            probe = {**self.mix.probe, "mac": self.mac + "\n"}
            hello = Hello(self.mac, token, BootInfo("bios", None, "6.1.0-bench"), None, probe, [])
            status, data, _, _ = await self.call(session, "hello", "POST", "/api/v1/hello", hello.to_dict())
            answer = _json(data) if status == 200 else {}
            if status != 200 or answer.get("action") != "image":
                self.ledger.problem(f"{self.mac}: hello {status}: {data[:200]!r}")
                return "error"
            self.ledger.counts["hellos"] += 1
            run_id, plan = str(answer["run"]), answer["plan"]
            if self.target.strict and run_id in self.ledger.runs:
                self.ledger.problem(f"{self.mac}: hello with a new token gave the old run {run_id}")
            if self.open_run is not None and self.open_run in self.ledger.runs:
                self.ledger.runs[self.open_run].end = "superseded"  # the server fails it for the new run
            self.open_run = run_id
            log = self.ledger.runs.setdefault(run_id, RunLog(self.mac))
            status, data, _, _ = await self.call(session, "index", "GET", str(plan["index_url"]))
            if status != 200:
                return "error"
            try:
                index = Index.from_bytes(data)
            except ValueError as exc:
                self.ledger.problem(f"{self.mac}: the plan's index does not read: {exc}")
                return "error"
            if index.digest != plan["digest"]:
                self.ledger.problem(f"{self.mac}: index digest {index.digest} is not the plan's {plan['digest']}")
            return await self.write(session, token, run_id, log, index, deadline)

    async def write(
        self, session: aiohttp.ClientSession, token: str, run_id: str, log: RunLog, index: Index, deadline: float
    ) -> str:
        """Progress through the simulated write, then the report (or a power cut, or a failure report)."""
        mix, rng = self.mix, self.rng
        seconds = mix.write_seconds * rng.uniform(0.75, 1.25)
        noted = self.ledger.netbooted_at.get(self.mac)
        may_abandon = time.monotonic() + 2 * seconds < deadline and (
            noted is None or time.monotonic() - noted > 2 * NETBOOT_NOTE_EVERY
        )  # two netboots of a MAC inside the server's 30 s window would make one event, not two
        fate = rng.random()
        fate_name = "fail" if fate < mix.fail_rate else "abandon" if fate < mix.fail_rate + mix.abandon_rate else "ok"
        if fate_name == "abandon" and not may_abandon:
            fate_name = "ok"
        stop_at = rng.uniform(0.2, 0.7) if fate_name != "ok" else 2.0
        total = index.mapped_bytes
        started = time.monotonic()
        path = f"/api/v1/runs/{run_id}/progress"
        while True:
            frac = min(1.0, (time.monotonic() - started) / seconds)
            if frac >= stop_at:
                break
            if frac >= 1.0 and log.stage == "inventoried":  # a stalled client: inventoried -> verifying is a 409
                first = self.progress(token, "writing", 0, total, seconds)
                status, _, sent, answered = await self.call(session, "progress", "POST", path, first)
                log.progress("writing", 0, total, sent, answered, status)
            stage: Stage = "writing" if frac < 0.75 else "verifying"
            done = min(total, int(total * (frac / 0.75 if stage == "writing" else (frac - 0.75) / 0.25)))
            body = self.progress(token, stage, done, total, seconds)
            status, _, sent, answered = await self.call(session, "progress", "POST", path, body)
            log.progress(stage, done, total, sent, answered, status)
            if frac >= 1.0:
                break
            pause = answered + PACE + rng.uniform(0, 0.1) - time.monotonic()
            await asyncio.sleep(max(0.0, pause))
        if fate_name == "abandon":
            self.ledger.counts["abandoned"] += 1
            log.end = "abandoned"
            return "abandoned"
        elapsed = time.monotonic() - started
        report = self.report(token, index, total, elapsed, fail=fate_name == "fail")
        status, data, _, _ = await self.call(session, "report", "POST", f"/api/v1/runs/{run_id}/report", report)
        answer = _json(data) if status == 200 else {}
        if status != 200:
            self.ledger.problem(f"{self.mac}: report of run {run_id}: {status} {data[:200]!r}")
            return "error"
        self.open_run = None
        log.end = str(answer.get("state"))
        log.reported_with_verification = fate_name == "ok"
        self.ledger.counts["reports_with_writer" if fate_name == "ok" else "reports_failed_unverified"] += 1
        self.ledger.counts["reports_with_grow"] += fate_name == "ok"
        self.ledger.counts["verifications_sent"] += fate_name == "ok"
        want = "done" if fate_name == "ok" else "failed"
        if self.target.strict and log.end != want:
            self.ledger.problem(f"{self.mac}: run {run_id} ended {log.end}, not {want}: {answer.get('reason')}")
        return log.end

    @staticmethod
    def progress(token: str, stage: Stage, done: int, total: int, seconds: float) -> dict[str, Any]:
        return Progress(token, stage, done, total, round(total / seconds / 0.75, 1)).to_dict()

    def report(self, token: str, index: Index, total: int, seconds: float, fail: bool) -> dict[str, Any]:
        """The final report's body: a consistent verification (the index's digest and data chunks), or a
        write failure as the real agent reports one before any verification."""
        if fail:
            error = {"type": "WriteError", "retryable": False, "facts": {"device": "/dev/sda", "errno": 5}}
            return Report(token, False, "WriteError: bench: simulated I/O error on /dev/sda", error=error).to_dict()
        data, holes = len(index.data_chunks), index.holes
        verified = VerificationReport(
            digest=index.digest, chunks=data, verified=data, read_back_ok=True, bytes_written=total,
            seconds=round(seconds, 3), mean_rate=float(round(total / seconds)), holes=holes, holes_verified=holes,
            wipe_method="BLKZEROOUT", wipe_ranges=[(0, 4096), (index.disk_size - 4096, 4096)],
        )  # fmt: skip
        writer = {"target": "/dev/sda", "target_kind": "block", "io_mode": "O_DIRECT", "readback": "O_DIRECT",
                  "disk_size": index.disk_size, "chunk_size": index.chunk_size, "fetched": data, "skipped": 0,
                  "downloads": data, "bytes_fetched": total, "failure_count": 0, "failures": [],
                  "stage_seconds": {"write": round(seconds * 0.75, 3), "verify": round(seconds * 0.25, 3)}}  # fmt: skip
        grow = {"grown": True, "partition": 2, "device": "/dev/sda2", "filesystem": "ext4"}
        return Report(token, True, None, verified, grow=grow, writer=writer).to_dict()


def _json(data: bytes) -> dict[str, Any]:
    import json

    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def run_agents(
    target: Target, mix: Mix, agents: int, seconds: float, seed: int, recorder: Recorder, ledger: Ledger
) -> float:
    """``agents`` slots against ``target`` for ``seconds`` (then each closes its last run); the wall time."""
    started = time.monotonic()
    deadline = started + seconds
    connector = aiohttp.TCPConnector(force_close=True, limit=0)  # iPXE: one connection per script
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as ipxe:
        slots = [Slot(n, target, mix, recorder, ledger, seed) for n in range(agents)]
        await asyncio.gather(*(slot.run(deadline, ipxe) for slot in slots))
    return time.monotonic() - started
