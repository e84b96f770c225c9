"""Fetching: retries of transient failures with backoff until a deadline, 4xx final, chunks checked
before use (K attempts), and the progress meter's throttling."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest
import zstandard

from provision.agent import ChunkCorrupt, FetchFailed, HttpRefused, Incident, Progress, RetryPolicy
from provision.agent.fetch import Cancelled, Fetcher
from provision.agent.index import Index, read_index
from provision.agent.progress import ProgressMeter
from provision.errors import FatalError, RetryableError
from tests.support.agent import CHUNK, FAST, SERVER, FakeSession, build_image, random_disk


def _setup(policy: RetryPolicy = FAST) -> tuple[FakeSession, Fetcher, Index, list[Incident]]:
    image = build_image(random_disk(4 * CHUNK, [0, 1, 3], seed=7))
    session = FakeSession(image)
    incidents: list[Incident] = []
    fetcher = Fetcher(SERVER, session, policy, on_incident=incidents.append, rng=random.Random(1))
    return session, fetcher, read_index(image.index), incidents


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=10)
    rng = random.Random(3)
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (5, 10.0), (60, 10.0)]:
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert max(delays) - min(delays) > cap / 4  # jitter: not all the same


@pytest.mark.parametrize("fault", ["refused", "500", "truncated", "cut"])
def test_transient_failures_are_retried(fault: str) -> None:
    session, fetcher, index, incidents = _setup()
    chunk = index.chunks[1]
    assert chunk.sha256 is not None
    session.fault(chunk.sha256, fault, fault)
    plain, size = fetcher.fetch_chunk(chunk, zstandard.ZstdDecompressor())
    assert bytes(plain) == session.image.plain[chunk.sha256] and size == len(session.image.frames[chunk.sha256])
    assert session.chunk_gets[chunk.sha256] == 3
    assert [(i.kind, i.chunk, i.attempt) for i in incidents] == [("transient", 1, 1), ("transient", 1, 2)]


def test_gives_up_at_the_deadline() -> None:
    session, fetcher, index, _ = _setup(RetryPolicy(deadline=0.3, initial_delay=0.01, max_delay=0.05))
    session.down = True
    started = time.monotonic()
    with pytest.raises(FetchFailed) as exc:
        fetcher.fetch_chunk(index.chunks[0], zstandard.ZstdDecompressor())
    assert 0.3 <= time.monotonic() - started < 2
    assert isinstance(exc.value, RetryableError)
    assert exc.value.url == f"{SERVER}/chunks/{index.chunks[0].sha256}" and exc.value.chunk == 0
    assert exc.value.attempts >= 4 and "refused" in exc.value.last
    assert exc.value.facts["url"] == exc.value.url


def test_deadline_with_a_fake_clock() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    policy = RetryPolicy(deadline=5, initial_delay=0.0001, max_delay=0.0001)
    image = build_image(random_disk(CHUNK, [0]))
    session = FakeSession(image, down=True)
    fetcher = Fetcher(SERVER, session, policy, clock=clock)
    with pytest.raises(FetchFailed) as exc:
        fetcher.get(f"{SERVER}/chunks/{'0' * 64}")
    assert exc.value.attempts == 6 and exc.value.seconds == 5.0


@pytest.mark.parametrize("status", ["404"])
def test_4xx_is_fatal_with_the_url(status: str) -> None:
    session, fetcher, index, _ = _setup()
    chunk = index.chunks[3]
    assert chunk.sha256 is not None
    session.fault(chunk.sha256, status)
    with pytest.raises(HttpRefused) as exc:
        fetcher.fetch_chunk(chunk, zstandard.ZstdDecompressor())
    assert isinstance(exc.value, FatalError)
    assert exc.value.url.endswith(chunk.sha256) and exc.value.status == 404
    assert (exc.value.chunk, exc.value.offset) == (3, 3 * CHUNK)
    assert session.chunk_gets[chunk.sha256] == 1  # not retried


@pytest.mark.parametrize("fault", ["corrupt", "garbage", "bomb"])
def test_a_bad_chunk_is_fetched_again(fault: str) -> None:
    session, fetcher, index, incidents = _setup()
    chunk = index.chunks[0]
    assert chunk.sha256 is not None
    session.fault(chunk.sha256, fault)
    plain, _ = fetcher.fetch_chunk(chunk, zstandard.ZstdDecompressor())
    assert bytes(plain) == session.image.plain[chunk.sha256]
    assert [(i.kind, i.attempt) for i in incidents] == [("corrupt", 1)]
    assert chunk.sha256 in incidents[0].detail


def test_k_bad_attempts_fail_naming_the_chunk() -> None:
    session, fetcher, index, incidents = _setup(RetryPolicy(chunk_attempts=4))
    chunk = index.chunks[1]
    assert chunk.sha256 is not None
    session.fault(chunk.sha256, "corrupt", "garbage", "corrupt", "corrupt", "ok")
    with pytest.raises(ChunkCorrupt) as exc:
        fetcher.fetch_chunk(chunk, zstandard.ZstdDecompressor())
    err = exc.value
    assert isinstance(err, RetryableError)
    assert (err.chunk, err.offset, err.expected, err.attempts) == (1, CHUNK, chunk.sha256, 4)
    assert len(err.actual) == 64 and err.actual != chunk.sha256
    assert err.url == f"{SERVER}/chunks/{chunk.sha256}" and "chunk 1" in str(err)
    assert session.chunk_gets[chunk.sha256] == 4 and len(incidents) == 4


def test_cancel_stops_a_backoff() -> None:
    session, fetcher, index, _ = _setup(RetryPolicy(deadline=60, initial_delay=5, max_delay=5))
    session.down = True
    threading.Timer(0.2, fetcher.cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        fetcher.fetch_chunk(index.chunks[0], zstandard.ZstdDecompressor())
    assert time.monotonic() - started < 3


def test_urls() -> None:
    _, fetcher, _, _ = _setup()
    assert fetcher.url("/images/a/current/index.json") == f"{SERVER}/images/a/current/index.json"
    assert fetcher.url("images/a") == f"{SERVER}/images/a"
    assert fetcher.url("http://other:1/x") == "http://other:1/x"


def test_progress_meter_throttles() -> None:
    now = [100.0]
    seen: list[Progress] = []
    meter = ProgressMeter(seen.append, interval=2.0, clock=lambda: now[0])
    meter.start("writing", 1000)
    for _ in range(10):
        now[0] += 0.5
        meter.add(100, fetched=1)
    meter.end()
    assert [(p.stage, p.done) for p in seen] == [("writing", 0), ("writing", 400), ("writing", 800), ("writing", 1000)]
    assert seen[1].rate == 200.0 and seen[1].elapsed == 2.0 and seen[-1].fraction == 1.0
    assert seen[-1].fetched == 10 and meter.stage_seconds == {"writing": 5.0}
    assert seen[-1].to_dict()["stage"] == "writing"


def test_a_failing_progress_callback_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(progress: Progress) -> None:
        raise RuntimeError("dashboard down")

    meter = ProgressMeter(broken)
    with caplog.at_level(logging.ERROR):
        meter.start("checking", 10)
        meter.add(10)
        meter.end()
    assert "progress callback failed" in caplog.text
