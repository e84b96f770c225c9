"""Fault matrix (docs/reliability.md): the server killed or restarted under imaging runs. ``provision serve`` is a
process on 127.0.0.1; the agents are ``python -m provision.agent`` processes talking through a proxy
(tests/support/faults.py) that sees each request, so a fault lands at an exact point of the write.

Shown: the server SIGKILLed at 10, 50 and 90 % of the chunk fetches and restarted 1 s later: the agent rides it
out and the run is done, the disk holds the image. Left down past the agent's fetch deadline: the run fails
with the reason once the server is back, the PC's next boot gets the live environment again and that run
resumes (chunks already right are skipped) to done. Restarted (SIGTERM or SIGKILL) with 10 runs in flight:
every run ends done, none open, one verification and one writer event stored per report sent.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.agent.main import EXIT_DONE, EXIT_FAILED
from tests.support.chunk_server import SIZE
from tests.support.faults import Proxy
from tests.support.runs import Site, agent_process, assert_ends, disks, make_site, result, stop
from tests.support.wait import wait_for


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    # HTTP only: these faults are on the unicast path (ten runs of one version would be multicast on auto)
    with make_site(tmp_path, config="multicast:\n  transfer: unicast\n") as site:
        yield site


@pytest.fixture
def proxy(site: Site) -> Iterator[Proxy]:
    with Proxy(site.server.port) as proxy:
        yield proxy


class Restarts:
    """Kill the site's server at the ``at``-th chunk GET seen by the proxy; start it again ``after`` seconds
    later (on a timer), or when a request line holding ``on`` comes through the proxy."""

    def __init__(self, site: Site, proxy: Proxy, at: int, *, after: float | None = None, on: str = "") -> None:
        self.site, self.proxy, self.at, self.after, self.on = site, proxy, at, after, on
        self.lock = threading.Lock()
        self.killed = self.restarted = False
        self.timer: threading.Timer | None = None
        proxy.on_request = self.saw

    def saw(self, line: str) -> None:
        with self.lock:
            if not self.killed and line.startswith("GET /chunks/") and self.proxy.chunk_gets >= self.at:
                self.killed = True
                self.site.server.kill()
                if self.after is not None:
                    self.timer = threading.Timer(self.after, self.restart)
                    self.timer.start()
            elif self.killed and not self.restarted and self.on and self.on in line:
                self.restart()

    def restart(self) -> None:
        if not self.restarted:
            self.restarted = True
            self.site.server.start()

    def join(self) -> None:
        if self.timer is not None:
            self.timer.join(timeout=60)


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_server_killed_mid_write_and_restarted_the_agent_resumes_and_the_run_is_done(
    site: Site, proxy: Proxy, tmp_path: Path, percent: int
) -> None:
    mac = f"52:54:00:fa:01:{percent:02x}"
    at = max(1, round(site.data_chunks * percent / 100))
    restarts = Restarts(site, proxy, at, after=1.0)
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    try:
        code, last, err = result(agent_process(proxy.url, mac, site.token(mac), folder))
    finally:
        restarts.join()
    assert restarts.killed and restarts.restarted
    assert code == EXIT_DONE, (last, err[-3000:])
    assert_ends(site, mac, "done", target=folder / "vda")
    [write] = site.events(mac, "write")
    assert write["failure_count"] >= 1 and {f["kind"] for f in write["failures"]} == {"transient"}
    assert write["fetched"] + write["skipped"] == site.data_chunks


def test_server_left_down_past_the_fetch_deadline_the_run_fails_and_the_next_boot_resumes(
    site: Site, proxy: Proxy, tmp_path: Path
) -> None:
    mac = "52:54:00:fa:02:01"
    at = site.data_chunks // 2
    restarts = Restarts(site, proxy, at, on="/report ")  # back when the agent reports
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    code, last, err = result(agent_process(proxy.url, mac, site.token(mac), folder, "--fetch-deadline", "1"))
    assert restarts.restarted
    assert code == EXIT_FAILED and "FetchFailed" in last, (last, err[-3000:])
    failed = assert_ends(site, mac, "failed", "FetchFailed")
    assert "gave up after" in failed["reason"] and "/chunks/" in failed["reason"]
    [event] = site.events(mac, "run-failed")
    assert event["error"]["retryable"] is True
    # the PC's next boot: the live environment again (a token without a network boot: no run in flight)
    code, last, err = result(agent_process(site.url, mac, site.token(mac), folder))
    assert code == EXIT_DONE, (last, err[-3000:])
    done = assert_ends(site, mac, "done", target=folder / "vda")
    runs = site.runs(mac)
    assert [r["state"] for r in runs] == ["failed", "done"] and runs[1]["id"] == done["id"]
    [write] = site.events(mac, "write")  # only the done run's report carries writer figures
    assert write["skipped"] >= at // 2 and write["fetched"] + write["skipped"] == site.data_chunks


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_server_restarted_with_ten_runs_in_flight_every_run_ends_done(
    site: Site, tmp_path: Path, how: signal.Signals
) -> None:
    macs = [f"52:54:00:fa:03:{i:02x}" for i in range(10)]
    folders = [disks(tmp_path / f"pc{i}", ("vda", SIZE, None)) for i in range(10)]
    with contextlib.ExitStack() as links:
        proxies = [links.enter_context(Proxy(site.server.port)) for _ in macs]  # each PC its own link
        for proxy in proxies:
            proxy.hold_chunks(after=8)  # every PC held mid-write, however fast it writes, till the server is back
        procs = [
            agent_process(proxy.url, mac, site.token(mac), folder, "--workers", "1")
            for proxy, mac, folder in zip(proxies, macs, folders, strict=True)
        ]
        try:
            held = wait_for(lambda: all(p.held for p in proxies), 120, interval=0.1)
            assert held, [(r["mac"], r["state"]) for r in site.runs()]
            assert [r["state"] for r in site.runs()] == ["writing"] * len(macs), site.runs()
            if how is signal.SIGTERM:
                site.server.stop()
            else:
                site.server.kill()
            site.server.start()
            for proxy in proxies:
                proxy.release_chunks()
            outcomes = [result(proc) for proc in procs]
        finally:
            for proc in procs:
                stop(proc)
    for (code, last, err), mac, folder in zip(outcomes, macs, folders, strict=True):
        assert code == EXIT_DONE, (mac, last, err[-3000:])
        run = assert_ends(site, mac, "done", target=folder / "vda")
        assert len(site.runs(mac)) == 1
        # events sent = events stored: one report sent per run, its writer figures stored once
        [write] = site.events(mac, "write")
        assert write["run"] == run["id"] and write["fetched"] + write["skipped"] == site.data_chunks
        assert site.events(mac, "run-failed") == []
    assert all(r["finished"] is not None for r in site.runs())
    assert "Traceback" not in site.server.log()


def test_server_stopped_while_a_request_body_is_in_flight_exits_within_seconds(site: Site) -> None:
    """SIGTERM (a restart) while a client's request has sent its headers but not yet its body (a PC posting
    progress at that moment, a slow link): the server stops within seconds, not after aiohttp's 60 s grace
    (once stopping, aiohttp reads no more bytes of that connection, so the body can never arrive)."""
    with socket.create_connection(("127.0.0.1", site.server.port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/hello HTTP/1.1\r\nHost: pc\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n")  # fmt: skip
        time.sleep(0.5)  # the handler is waiting for the body
        assert site.server.proc is not None
        started = time.monotonic()
        site.server.proc.send_signal(signal.SIGTERM)
        site.server.proc.wait(timeout=90)
        seconds = time.monotonic() - started
    assert site.server.proc.returncode == 0
    assert seconds < 10, f"SIGTERM took {seconds:.1f} s"
    assert "Traceback" not in site.server.log()
