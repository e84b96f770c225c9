"""Fault matrix (docs/reliability.md): the network between the PC and the server, and chunks damaged in the
server's store. ``provision serve`` is a process on 127.0.0.1; the agent talks to it through a proxy
(tests/support/faults.py) that cuts or stalls the link at an exact point of the write.

Shown: the link cut for 3 s mid-write (every connection reset, new ones reset) and a link that stalls for 4 s
(nothing forwarded, the agent's reads time out): the agent retries and the run is done, the disk holds the
image. A chunk damaged in the store (a flipped byte, another chunk's frame under its name): the server
refuses to send it (HTTP 500 "image store problem"), the run fails with that reason within its retry
deadline, nothing is verified; once the store is repaired the PC's next boot images it to done.
(A chunk damaged on the wire: tests/functional/test_agent_runs.py.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.agent.fetch import RetryPolicy
from provision.agent.main import EXIT_DONE, EXIT_FAILED
from provision.images import ImageStore
from tests.support.chunk_server import SIZE
from tests.support.faults import Proxy
from tests.support.images import damage
from tests.support.runs import (
    Site,
    agent_process,
    assert_ends,
    data_digest,
    disks,
    in_process,
    make_site,
    result,
)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with make_site(tmp_path) as site:
        yield site


@pytest.fixture
def proxy(site: Site) -> Iterator[Proxy]:
    with Proxy(site.server.port) as proxy:
        yield proxy


def at_chunk(proxy: Proxy, n: int, action: str, seconds: float) -> list[float]:
    """Cut or stall the proxy's link for ``seconds`` when the ``n``-th chunk GET comes through; the list
    gets the time it happened."""
    when: list[float] = []

    def saw(line: str) -> None:
        if not when and line.startswith("GET /chunks/") and proxy.chunk_gets >= n:
            when.append(time.monotonic())
            getattr(proxy, action)(seconds)

    proxy.on_request = saw
    return when


def test_network_cut_for_3_s_mid_write_the_agent_retries_and_the_run_is_done(
    site: Site, proxy: Proxy, tmp_path: Path
) -> None:
    mac = "52:54:00:fb:01:01"
    cut = at_chunk(proxy, site.data_chunks // 2, "cut", 3.0)
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    code, last, err = result(agent_process(proxy.url, mac, site.token(mac), folder))
    assert cut, "the link was never cut"
    assert code == EXIT_DONE, (last, err[-3000:])
    assert_ends(site, mac, "done", target=folder / "vda")
    [write] = site.events(mac, "write")
    assert write["failure_count"] >= 1 and {f["kind"] for f in write["failures"]} == {"transient"}
    assert "Traceback" not in site.server.log()


def test_network_stalled_for_4_s_mid_write_reads_time_out_and_the_run_is_done(
    site: Site, proxy: Proxy, tmp_path: Path
) -> None:
    mac = "52:54:00:fb:01:02"
    stalled = at_chunk(proxy, site.data_chunks // 2, "stall", 4.0)
    retry = RetryPolicy(deadline=30, initial_delay=0.1, max_delay=1, connect_timeout=1, read_timeout=1)
    outcome = in_process(site, tmp_path, mac, server=proxy.url, retry=retry, workers=2)
    assert stalled, "the link never stalled"
    assert (outcome.code, outcome.state) == (EXIT_DONE, "done"), outcome
    assert_ends(site, mac, "done", target=tmp_path / "pc" / "vda")
    [write] = site.events(mac, "write")
    assert {f["kind"] for f in write["failures"]} == {"transient"}
    assert any("timed out" in f["detail"].lower() for f in write["failures"]), write["failures"]
    log = site.server.log()  # the agent's reads timed out and it went away mid-answer: a line each, no traceback
    assert "Traceback" not in log and "the client went away" in log, log[-3000:]


@pytest.mark.parametrize("kind", ["flip", "swapped"])
def test_a_chunk_damaged_in_the_store_fails_the_run_with_the_reason_and_the_next_boot_reimages(
    site: Site, tmp_path: Path, kind: str
) -> None:
    mac = "52:54:00:fb:02:01"
    store = ImageStore(tmp_path / "store")
    digest = data_digest(site, 7)
    damage(store, digest, kind, tmp_path / "outside")
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    started = time.monotonic()
    code, last, err = result(agent_process(site.url, mac, site.token(mac), folder, "--fetch-deadline", "1"))
    seconds = time.monotonic() - started
    assert code == EXIT_FAILED and "FetchFailed" in last, (last, err[-3000:])
    assert seconds < 20, f"3 passes of a 1 s fetch deadline took {seconds:.1f} s"
    failed = assert_ends(site, mac, "failed", "image store problem")
    assert f"/chunks/{digest}" in failed["reason"] and "HTTP 500" in failed["reason"]
    assert "image store problem" in site.server.log() and "Traceback" not in site.server.log()
    # repaired (the bad frame removed, the raw disk imported again): the next boot images the PC
    store.chunks.path(digest).unlink()
    store.import_raw(tmp_path / "master.img", "educ", chunk_size=site.version.index.chunk_size,
                     created=site.version.created)  # fmt: skip
    assert store.verify(f"educ@{site.version.digest}").ok
    code, last, err = result(agent_process(site.url, mac, site.token(mac), folder))
    assert code == EXIT_DONE, (last, err[-3000:])
    assert_ends(site, mac, "done", target=folder / "vda")
    assert [r["state"] for r in site.runs(mac)] == ["failed", "done"]
