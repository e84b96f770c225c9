"""Fault matrix (docs/reliability.md): the agent killed mid-write (the PC's power cut, a kernel panic in the live
environment). ``provision serve`` is a process on 127.0.0.1 with proxyDHCP on a port of its own, so the test can
network-boot the PC again (a PXE DHCPDISCOVER); the agent is a ``python -m provision.agent`` process, slowed by
the proxy (tests/support/faults.py) so that the SIGKILL lands mid-write.

Shown: the killed agent's run stays open (no report came) and the PC gets no new token until it network-boots
again; after that boot, the new agent's hello fails the old run as superseded and the new run resumes (the
chunks the killed agent wrote are skipped) to done; nothing of the killed run is ever verified.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.agent.main import EXIT_DONE
from tests.support.chunk_server import SIZE
from tests.support.faults import Proxy
from tests.support.runs import Site, agent_process, assert_ends, disks, make_site, result, stop, wait_run


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with make_site(tmp_path, dhcp=True) as site:
        yield site


def test_agent_killed_mid_write_the_run_stays_open_until_the_pc_boots_again_then_superseded(
    site: Site, tmp_path: Path
) -> None:
    mac = "52:54:00:fd:01:01"
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    at = site.data_chunks // 2
    procs: list[subprocess.Popen[str]] = []
    killed = threading.Event()

    def kill_agent(line: str) -> None:
        if line.startswith("GET /chunks/") and proxy.chunk_gets >= at and not killed.is_set():
            procs[0].kill()  # SIGKILL, by its PID
            killed.set()

    with Proxy(site.server.port) as proxy:
        proxy.chunk_delay = 0.05
        proxy.on_request = kill_agent
        procs.append(agent_process(proxy.url, mac, site.token(mac), folder, "--workers", "1"))
        try:
            assert killed.wait(60), "the agent was never killed"
            procs[0].communicate(timeout=30)
        finally:
            stop(procs[0])
    assert procs[0].returncode == -9
    old = wait_run(site, mac, ("writing",))
    assert old["finished"] is None and old["verifications"] == []
    assert site.machine(mac)["state"] == "imaging"
    written = folder.joinpath("vda").stat().st_blocks
    assert written > 0
    # without a network boot of the PC, nobody gets a token for it (another host, or the dead agent's boot)
    refused = site.boot_script(mac)
    assert "provision.token=" not in refused and "is under way" in refused
    site.netboot(mac)  # power on again: PXE
    code, last, err = result(agent_process(site.url, mac, site.token(mac), folder))
    assert code == EXIT_DONE, (last, err[-3000:])
    new = assert_ends(site, mac, "done", target=folder / "vda")
    runs = {r["id"]: r for r in site.runs(mac)}
    assert set(runs) == {old["id"], new["id"]}
    assert runs[old["id"]]["state"] == "failed" and runs[old["id"]]["reason"] == f"superseded by run {new['id']}"
    assert runs[old["id"]]["verifications"] == []
    [write] = site.events(mac, "write")
    assert write["run"] == new["id"] and write["skipped"] >= 1 and write["fetched"] < site.data_chunks
    [netboot] = site.events(mac, "netboot")
    assert netboot["run"] == old["id"]
