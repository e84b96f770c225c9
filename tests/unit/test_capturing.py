"""The capture lifecycle over a real store and image store in a temporary folder, without sockets
(provision.capturing): the plan's chunk size, offer / upload / done, a done sent twice at once (the agent's
request timed out) made once, a report ending a capture; at hello (``Runs.plan_for``) a capture wins over the
recipe until it is done: asked, mid-capture after a reboot, after a failure."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from provision.capturing import Capturing
from provision.errors import RunConflict
from provision.facts import load_probe
from provision.facts.derive import derive
from provision.images import DEFAULT_CHUNK_SIZE, ImageStore, ImageVersion
from provision.runs import Runs
from provision.store import Run, Store
from provision.wire.api import CaptureAnswer, Report, RunAnswer, WaitAnswer
from provision.wire.capture import CaptureDone, CaptureOffer
from tests.support.capturing import disk_chunks
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE

MAC = "52:54:00:ca:97:20"
TOKEN = "t" * 32


class Site:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(tmp_path / "db.sqlite")
        self.images = ImageStore(tmp_path / "images")
        self.data = make_disk(tmp_path / "golden.raw", 4 * MiB, [(2 * MiB, 200_000)], seed=5).read_bytes()
        self.capturing = Capturing(self.store, self.images, self.open_run)

    def open_run(self, run_id: str, token: str, remote: str | None) -> Run:
        run = self.store.run(run_id)
        assert run is not None and token == TOKEN
        if run.state.value in ("done", "failed", "repair"):
            raise RunConflict("ended", run=run_id)
        return run

    def capture(self, image: str = "golden") -> str:
        self.store.seen(MAC)
        answer = self.capturing.start(MAC, image, recipe=None, target_disk={}, requested_by="alice", token=TOKEN,
                                      live=(None, None), facts={"serial": "PC-1"})  # fmt: skip
        return answer.run

    def send(self, run_id: str, chunk_size: int) -> None:
        shas = disk_chunks(self.data, chunk_size)
        answer = self.capturing.offer(run_id, CaptureOffer(TOKEN, len(self.data), 0, shas))
        for sha in answer.missing:
            i = shas.index(sha)
            frame = zstandard.ZstdCompressor().compress(self.data[i * chunk_size : (i + 1) * chunk_size])
            self.capturing.upload(run_id, sha, TOKEN, frame)

    def done(self, run_id: str, chunk_size: int) -> RunAnswer:
        shas = disk_chunks(self.data, chunk_size)
        end = CaptureDone(TOKEN, len(self.data), 512, hashlib.sha256(self.data).hexdigest(), len(shas),
                          shas.count(None), len(self.data), 1, 1, 1.0)  # fmt: skip
        return self.capturing.done(run_id, end)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    found = Site(tmp_path)
    yield found
    found.store.close()


def test_a_new_image_gets_the_default_chunk_size_and_a_known_one_its_current_versions(site: Site) -> None:
    site.store.seen(MAC)
    plan = site.capturing.start(MAC, "golden", recipe=None, target_disk={"select": "largest"}, requested_by=None,
                                token=TOKEN, live=(None, None), facts={})  # fmt: skip
    assert (plan.capture.chunk_size, plan.capture.current, plan.capture.target_disk) == (
        DEFAULT_CHUNK_SIZE, None, {"select": "largest"})  # fmt: skip
    site.images.import_raw(Path(site.images.root.parent / "golden.raw"), "golden", chunk_size=CHUNK)
    again = site.capturing.start(MAC, "golden", recipe=None, target_disk={}, requested_by=None, token=TOKEN,
                                 live=(None, None), facts={})  # fmt: skip
    current = site.images.current("golden")
    assert current is not None and (again.capture.chunk_size, again.capture.current) == (CHUNK, current.label)


def test_a_done_sent_twice_at_once_is_made_once(site: Site) -> None:
    site.images.import_raw(Path(site.images.root.parent / "golden.raw"), "golden", chunk_size=CHUNK)
    run_id = site.capture()
    site.send(run_id, CHUNK)
    answers: list[RunAnswer] = []
    threads = [threading.Thread(target=lambda: answers.append(site.done(run_id, CHUNK))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a.state for a in answers] == ["done", "done"] and answers[0].reason == answers[1].reason
    assert len(site.images.digests("golden")) == 2  # the import and one capture
    assert site.done(run_id, CHUNK).state == "done"  # once more after the end: the same answer


def test_a_failure_reported_while_the_done_is_made_waits_for_it(site: Site) -> None:
    """The agent's done timed out and it reports the capture failed while the server still reads the disk back:
    the report waits for the end being made and gets it; never a version published for a run that failed."""
    site.images.import_raw(Path(site.images.root.parent / "golden.raw"), "golden", chunk_size=CHUNK)
    run_id = site.capture()
    site.send(run_id, CHUNK)
    reached, go = threading.Event(), threading.Event()
    add_version = site.images.add_version

    def slow_add_version(*args: Any, **kwargs: Any) -> ImageVersion:  # the read-back of a large disk
        reached.set()
        go.wait(30)
        return add_version(*args, **kwargs)

    site.images.add_version = slow_add_version  # type: ignore[method-assign]
    answers: dict[str, RunAnswer | Exception] = {}

    def call(name: str, fn: Callable[[], RunAnswer]) -> None:
        try:
            answers[name] = fn()
        except Exception as exc:  # kept for the assertion
            answers[name] = exc

    done = threading.Thread(target=call, args=("done", lambda: site.done(run_id, CHUNK)))
    done.start()
    assert reached.wait(30)
    run = site.store.run(run_id)
    assert run is not None
    failure = Report(TOKEN, False, reason="the capture failed: read timed out")
    report = threading.Thread(target=call, args=("report", lambda: site.capturing.report(run, failure)))
    report.start()
    report.join(0.3)
    go.set()
    for thread in (done, report):
        thread.join(30)
    ended = site.store.run(run_id)
    assert ended is not None and ended.state.value == "done", answers
    assert [getattr(a, "state", a) for a in (answers["done"], answers["report"])] == ["done", "done"]
    assert len(site.images.digests("golden")) == 2 and site.store.capture_request(MAC) is None  # import + capture


def test_a_run_superseded_while_its_done_is_made_publishes_nothing(site: Site) -> None:
    """The PC booted again (a new run supersedes this one) while the server read its disk back: the version is
    not published over the image, the done answers the run's end."""
    site.images.import_raw(Path(site.images.root.parent / "golden.raw"), "golden", chunk_size=CHUNK)
    before = site.images.current("golden")
    run_id = site.capture()
    site.send(run_id, CHUNK)
    add_version = site.images.add_version
    newer: list[str] = []

    def add_version_meanwhile(*args: Any, **kwargs: Any) -> ImageVersion:  # the read-back of a large disk
        newer.append(site.capture())  # meanwhile the PC booted again
        return add_version(*args, **kwargs)

    site.images.add_version = add_version_meanwhile  # type: ignore[method-assign]
    answer = site.done(run_id, CHUNK)
    assert (answer.state, answer.reason) == ("failed", f"superseded by run {newer[0]}")
    current = site.images.current("golden")
    assert before is not None and current is not None and current.digest == before.digest


def test_a_report_ends_a_capture_failed_and_never_done(site: Site) -> None:
    run_id = site.capture()
    run = site.store.run(run_id)
    assert run is not None
    read_back = {"digest": "0" * 64, "chunks": 1, "verified": 1, "read_back_ok": True, "bytes_written": 1,
                 "seconds": 1.0, "mean_rate": 1.0}  # fmt: skip
    with pytest.raises(RunConflict, match="capture/done"):
        site.capturing.report(run, Report.from_dict({"token": TOKEN, "ok": True, "report": read_back}))
    ended = site.capturing.report(run, Report(TOKEN, False, reason="disk unreadable"))
    assert (ended.state, ended.reason) == ("failed", "disk unreadable")
    assert site.images.digests("golden") == []
    kept = site.store.capture_request(MAC)  # captured again at the next boot, never imaged in its place
    assert kept is not None and (kept.image, kept.requested_by) == ("golden", "alice")
    by_recipe = site.capturing.start(MAC, "golden", recipe="golden", target_disk={}, requested_by=None, token=TOKEN,
                                     live=(None, None), facts={})  # fmt: skip
    assert site.store.capture_request(MAC) is None
    run = site.store.run(by_recipe.run)
    assert run is not None
    site.capturing.fail(run, "disk unreadable")
    assert site.store.capture_request(MAC) is None  # the recipe still applies: no request kept


def test_a_capture_wins_over_the_recipe_until_it_is_done(site: Site, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text("name: default\ndefault: true\nimage: educ\n")
    runs = Runs(site.store, site.images, recipes)
    derived = derive(load_probe(SAMPLE_PROBE))
    site.store.request_capture(MAC, "golden", "alice", {"select": "largest"})
    waiting = runs.plan_for(MAC, derived, TOKEN)  # a live environment that cannot capture
    assert isinstance(waiting, WaitAnswer) and "provision live build" in waiting.reason
    first = runs.plan_for(MAC, derived, TOKEN, capture=True)
    assert isinstance(first, CaptureAnswer) and first.capture.target_disk == {"select": "largest"}
    assert site.store.capture_request(MAC) is None  # used up by its run
    again = runs.plan_for(MAC, derived, TOKEN, capture=True)  # the PC rebooted mid-capture
    assert isinstance(again, CaptureAnswer) and again.run != first.run and again.capture == first.capture
    old = site.store.run(first.run)
    assert old is not None and old.state.value == "failed" and "superseded" in (old.reason or "")
    site.capturing.fail(site.store.run(again.run) or old, "disk unreadable")
    assert isinstance(runs.plan_for(MAC, derived, TOKEN, capture=True), CaptureAnswer)  # the request was kept
