"""Fault matrix (docs/reliability.md): the server's state store (SQLite) busy or not writable while PCs are
imaged. ``provision serve`` is a process on 127.0.0.1 whose store waits 0.5 s for a lock (through
tests/support/launch.py, instead of 30 s); another process holds the store's write lock (tests/support/
faults.py ``StoreLock``), or the state folder's file system is full (a tmpfs, root only).

The state folder cannot be made read-only under a running server: the server runs as root here (file modes do
not stop root) and Linux refuses to remount read-only a mount with files open for writing (EBUSY); a full file
system is the unwritable store a workshop server meets (its disk filled by images or logs).

Shown: while the store is locked or full, the API answers 503 ("state store busy" / "state store not
writable"), one log line each, never a traceback; the agent retries its hello and its report; once the store
is writable again the run completes, with each record stored once (one hello, one verification, one writer
event: nothing half-recorded). A store locked on and off all through a run leaves no report half-applied.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.agent.main import EXIT_DONE
from provision.facts import load_probe
from provision.images import ImageStore
from provision.runs import Runs
from provision.states import RunState
from provision.store import Run, Store, StoreUnavailable, Verification
from provision.wire.api import BootInfo, Hello, ImageAnswer, Progress, Report, VerificationReport
from tests.support.chunk_server import SIZE, build_store
from tests.support.faults import Proxy, StoreLock, fill, tmpfs
from tests.support.images import MiB
from tests.support.paths import SAMPLE_PROBE
from tests.support.runs import RECIPE, Site, agent_process, assert_ends, disks, make_site, result, stop

BUSY = 0.5  # the server's SQLite busy timeout in these tests


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with make_site(tmp_path, busy_timeout=BUSY) as site:
        yield site


def db(site: Site) -> Path:
    return site.server.state_dir / "provision.db"


def assert_quiet_log(site: Site, needle: str) -> None:
    """The server said why (``needle``) in one line per refused call, and never printed a traceback."""
    log = site.server.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
    assert needle in log, log[-3000:]


def assert_recorded_once(site: Site, mac: str, *, hellos: int | None = 1) -> None:
    """One run, one verification, one writer event (and ``hellos`` hello events, unless None: a hello refused
    after its event was kept records another on its retry; its run is still made once): the refused calls left
    nothing half done."""
    if hellos is not None:
        assert len(site.events(mac, "hello")) == hellos
    [run] = site.runs(mac)
    assert len(run["verifications"]) == 1
    assert len(site.events(mac, "write")) == 1


def test_store_locked_by_another_process_the_api_answers_503_and_the_agent_retries_its_hello(
    site: Site, tmp_path: Path
) -> None:
    mac = "52:54:00:fe:01:01"
    token = site.token(mac)
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    with StoreLock(db(site), seconds=4) as lock:
        other = requests.get(f"{site.url}/boot/52:54:00:fe:01:99.ipxe", timeout=10)  # issuing a token writes
        assert other.status_code == 503 and other.text.count("\n") == 1, other.text
        assert "state store busy" in other.text
        proc = agent_process(site.url, mac, token, folder)
        try:
            lock.wait()
        except BaseException:
            stop(proc)
            raise
    code, last, err = result(proc)
    assert code == EXIT_DONE, (last, err[-3000:])
    assert "HTTP 503" in err and "state store busy" in err  # the agent saw the refusal and retried
    assert_ends(site, mac, "done", target=folder / "vda")
    assert_recorded_once(site, mac)
    assert_quiet_log(site, "state store busy")


def test_store_locked_when_the_report_arrives_the_agent_retries_and_the_run_is_done(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:fe:01:02"
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    locks: list[StoreLock] = []

    def lock_at_report(line: str) -> None:
        if "/report " in line and not locks:
            locks.append(StoreLock(db(site), seconds=3).hold())

    with Proxy(site.server.port) as proxy:
        proxy.on_request = lock_at_report
        try:
            code, last, err = result(agent_process(proxy.url, mac, site.token(mac), folder))
        finally:
            for lock in locks:
                lock.release()
    assert locks, "the report never came"
    assert code == EXIT_DONE, (last, err[-3000:])
    assert "/report: HTTP 503" in err
    assert_ends(site, mac, "done", target=folder / "vda")
    assert_recorded_once(site, mac)
    assert_quiet_log(site, "state store busy")


def test_store_locked_on_and_off_through_a_run_leaves_nothing_half_recorded(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:fe:01:03"
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    stop = threading.Event()
    locks: list[float] = []

    # another process takes the lock for 1.5 s (past the 0.5 s busy timeout) with 0.2 s gaps: a call arriving in the
    # first second of a lock (59 % of the time) meets "state store busy" (with 0.7 s / 0.3 s only 20 % did, and a
    # run whose few calls all fell in the other 80 % left nothing to check)
    def flap() -> None:
        while not stop.is_set():
            with StoreLock(db(site), seconds=1.5) as lock:
                locks.append(time.monotonic())
                lock.wait()
            stop.wait(0.2)

    flapper = threading.Thread(target=flap, daemon=True)
    token = site.token(mac)
    with Proxy(site.server.port) as proxy:
        proxy.chunk_delay = 0.08  # about 4 s of writing: the hello, progress and report meet the lock
        flapper.start()
        try:
            code, last, err = result(agent_process(proxy.url, mac, token, folder, "--workers", "1"))
        finally:
            stop.set()
            flapper.join(timeout=30)
    assert len(locks) >= 3
    assert code == EXIT_DONE, (last, err[-3000:])
    assert_ends(site, mac, "done", target=folder / "vda")
    assert_recorded_once(site, mac, hellos=None)
    assert_quiet_log(site, "state store busy")


def test_state_disk_full_the_api_answers_5xx_and_the_run_completes_once_space_is_freed(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "state", 8 * MiB) as state, make_site(tmp_path, busy_timeout=BUSY, state=state) as site:
        mac = "52:54:00:fe:02:01"
        token = site.token(mac)
        folder = disks(tmp_path / "pc", ("vda", SIZE, None))
        filler = fill(state)
        proc = agent_process(site.url, mac, token, folder)
        try:
            refused = requests.get(f"{site.url}/boot/52:54:00:fe:02:99.ipxe", timeout=10)
            assert refused.status_code == 503 and "state store not writable" in refused.text, refused.text
            time.sleep(3)  # the agent keeps asking
            assert proc.poll() is None
        except BaseException:
            stop(proc)
            raise
        filler.unlink()
        code, last, err = result(proc)
        assert code == EXIT_DONE, (last, err[-3000:])
        assert "HTTP 5" in err
        assert_ends(site, mac, "done", target=folder / "vda")
        assert_recorded_once(site, mac)
        assert_quiet_log(site, "not writable")


class LockedOnce(Store):
    """A real store (SQLite) that refuses one call, as a lock taken by another process right then would: the
    ``nth`` call of ``method`` (``record_verification`` or ``set_run_state``) raises StoreUnavailable (503)
    before it writes anything."""

    def __init__(self, path: Path, method: str, nth: int = 1) -> None:
        super().__init__(path)
        self.method, self.left = method, nth

    def _refuse(self, name: str) -> None:
        if name == self.method:
            self.left -= 1
            if self.left == 0:
                raise StoreUnavailable("state store busy (another process holds its lock): database is locked")

    def record_verification(self, run_id: str, report: VerificationReport) -> Verification:
        self._refuse("record_verification")
        return super().record_verification(run_id, report)

    def set_run_state(self, run_id: str, state: RunState, reason: str | None = None, **kwargs: Any) -> Run:
        self._refuse("set_run_state")
        return super().set_run_state(run_id, state, reason, **kwargs)


@pytest.mark.parametrize(
    ("method", "nth"),
    [("record_verification", 1), ("set_run_state", 2), ("set_run_state", 3)],
    ids=["at-the-verification", "at-verifying", "at-done"],
)
def test_a_report_refused_part_way_keeps_nothing_and_its_retry_records_it_once(
    tmp_path: Path, method: str, nth: int, request: pytest.FixtureRequest
) -> None:
    """Runs and a real SQLite store in this process: the report's records (writer event, verification, the run's
    moves to verifying and done) are one transaction, so a report refused at any of them leaves the run as it
    was, and the agent's retry records each once."""
    _, version, _ = build_store(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "default.yaml").write_text(RECIPE)
    store = LockedOnce(tmp_path / "state" / "provision.db", method, nth)
    request.addfinalizer(store.close)
    runs = Runs(store, ImageStore(tmp_path / "store"), tmp_path / "recipes", tmp_path / "state" / "probes")
    mac = "52:54:00:fe:03:01"
    token = store.issue_token(mac, via="ipxe", ttl=600)
    answer = runs.hello(Hello(mac, token, BootInfo("bios"), load_probe(SAMPLE_PROBE).to_dict()))
    assert isinstance(answer, ImageAnswer)
    runs.progress(answer.run, Progress(token, "writing", 1, 2, 1.0))
    data = len(version.index.chunks) - version.index.holes
    body = VerificationReport(version.digest, data, data, True, SIZE, 1.0, float(SIZE))
    report = Report(token, True, None, body, writer={"fetched": data, "skipped": 0})
    with pytest.raises(StoreUnavailable):
        runs.report(answer.run, report)
    run = store.run(answer.run)
    assert run is not None and run.state is RunState.WRITING and run.finished is None
    assert store.verifications(answer.run) == [] and store.events(mac, "write") == []
    assert runs.report(answer.run, report).state == "done"  # the agent's retry
    assert len(store.verifications(answer.run)) == 1 and len(store.events(mac, "write")) == 1
    states = [e.detail["state"] for e in store.events(mac, "run")]
    assert states == ["inventoried", "writing", "verifying", "done"]
