"""Fault matrix (docs/reliability.md): the image store changing under runs in flight. ``provision serve`` is a
process on 127.0.0.1; two agents (``python -m provision.agent`` processes, slowed by the proxy of
tests/support/faults.py) write version 1 of ``educ`` while ``provision image import`` publishes version 2 of
it (a rebuild: another disk under the same name) and ``provision image retain educ --keep 1`` runs.

Shown: retention spares the versions that runs in flight were planned with (read from the server's state
store): both runs finish done with their planned version 1, byte for byte, and a PC that boots afterwards gets
version 2; once no run uses version 1, the next retention removes it and its chunks.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.agent.main import EXIT_DONE
from provision.images import ImageStore
from tests.support.chunk_server import EXTENTS, SIZE
from tests.support.faults import Proxy
from tests.support.files import sha256_file
from tests.support.images import make_disk
from tests.support.paths import REPO
from tests.support.runs import AGENT_ENV, Site, agent_process, assert_ends, disks, make_site, result, stop
from tests.support.wait import wait_for


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with make_site(tmp_path) as site:
        yield site


def image_command(site: Site, *argv: str) -> str:
    """``provision image ...`` on the site's store and state, as a technician runs it beside the server."""
    done = subprocess.run(
        [sys.executable, "-m", "provision", "image", *argv, "--store", str(site.server.tmp / "store"),
         *(["--state-dir", str(site.server.state_dir)] if argv[0] == "retain" else [])],
        capture_output=True, text=True, env=AGENT_ENV, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


def test_rebuild_and_retention_during_runs_the_runs_finish_with_their_planned_version(
    site: Site, tmp_path: Path
) -> None:
    macs = ["52:54:00:f9:01:01", "52:54:00:f9:01:02"]
    store = ImageStore(tmp_path / "store")
    v1 = site.version
    folders = [disks(tmp_path / f"pc{i}", ("vda", SIZE, None)) for i in range(2)]
    rebuilt = make_disk(tmp_path / "rebuilt.img", SIZE, [(o + 4096, n) for o, n in EXTENTS], seed=7)
    with contextlib.ExitStack() as links:
        proxies = [links.enter_context(Proxy(site.server.port)) for _ in macs]  # each PC its own link
        for proxy in proxies:
            proxy.hold_chunks(after=8)  # both held mid-write while the store changes
        procs = [
            agent_process(proxy.url, mac, site.token(mac), folder, "--workers", "1")
            for proxy, mac, folder in zip(proxies, macs, folders, strict=True)
        ]
        try:
            assert wait_for(lambda: all(p.held for p in proxies), 60, interval=0.05), site.runs()
            assert [r["state"] for r in site.runs()] == ["writing"] * len(macs), site.runs()
            image_command(site, "import", str(rebuilt), "--name", "educ", "--chunk-size", "1")
            v2 = store.resolve("educ@current")
            assert v2.digest != v1.digest
            retained = image_command(site, "retain", "educ", "--keep", "1")
            assert f"spared for imaging runs in flight: {v1.label}" in retained and "removed none" in retained
            assert {v.digest for v in store.versions("educ")} == {v1.digest, v2.digest}
            assert all(proc.poll() is None for proc in procs), "the runs ended before the store changed"
            for proxy in proxies:
                proxy.release_chunks()
            outcomes = [result(proc) for proc in procs]
        finally:
            for proc in procs:
                stop(proc)
    for (code, last, err), mac, folder in zip(outcomes, macs, folders, strict=True):
        assert code == EXIT_DONE, (mac, last, err[-3000:])
        run = assert_ends(site, mac, "done", target=folder / "vda")
        assert (run["digest"], run["label"]) == (v1.digest, v1.label)
    # a PC booting now gets version 2
    mac = "52:54:00:f9:01:03"
    folder = disks(tmp_path / "pc3", ("vda", SIZE, None))
    code, last, err = result(agent_process(site.url, mac, site.token(mac), folder))
    assert code == EXIT_DONE, (last, err[-3000:])
    [run] = site.runs(mac)
    assert run["state"] == "done" and run["digest"] == v2.digest
    assert sha256_file(folder / "vda", SIZE) == sha256_file(rebuilt)
    # no run uses version 1 any more: the next retention removes it, the records of its runs stay
    retained = image_command(site, "retain", "educ", "--keep", "1")
    assert f"removed {v1.label}" in retained and "spared" not in retained
    assert f"index kept for machines that hold: {v1.label}" in retained  # the first two PCs hold it (delta)
    assert [v.digest for v in store.versions("educ")] == [v2.digest]
    assert all(site.runs(m)[0]["state"] == "done" for m in macs)
