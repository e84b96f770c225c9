"""The worker pool: every item done once with per-thread state, bounded feeding, the first failure wins."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from provision.agent.fetch import Cancelled
from provision.agent.pool import run_pool


class State:
    made = 0
    closed = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        with State.lock:
            State.made += 1
        self.thread = threading.get_ident()

    def close(self) -> None:
        with State.lock:
            State.closed += 1


def test_each_item_once_with_per_thread_state() -> None:
    State.made = State.closed = 0
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(item: int, state: State) -> None:
        assert state.thread == threading.get_ident()
        with lock:
            seen.append((item, state.thread))

    run_pool(range(500), work, workers=4, setup=State, teardown=State.close, cancel=threading.Event())
    assert sorted(i for i, _ in seen) == list(range(500))
    assert State.made == State.closed == 4


def test_the_feeder_stays_ahead_by_a_bounded_amount() -> None:
    fed = 0
    done = 0
    ahead: list[int] = []
    lock = threading.Lock()

    def items() -> Iterator[int]:
        nonlocal fed
        for i in range(60):
            fed += 1
            yield i

    def work(item: int, state: State) -> None:
        nonlocal done
        time.sleep(0.001)
        with lock:
            done += 1
            ahead.append(fed - done)

    run_pool(items(), work, workers=3, setup=State, teardown=State.close, cancel=threading.Event())
    assert done == 60 and max(ahead) <= 2 * 3 + 3 + 1  # queue of 2 x workers, one item in each worker, one in hand


def test_the_first_failure_stops_the_rest_and_is_raised() -> None:
    done: list[int] = []
    cancel = threading.Event()

    def work(item: int, state: State) -> None:
        if item == 5:
            raise KeyError("boom")
        if item > 5:
            raise Cancelled  # what a worker waiting on a backoff raises once cancel is set
        done.append(item)

    with pytest.raises(KeyError, match="boom"):
        run_pool(range(10_000), work, workers=2, setup=State, teardown=State.close, cancel=cancel)
    assert cancel.is_set() and len(done) < 100


def test_a_failing_setup_is_raised() -> None:
    def setup() -> State:
        raise MemoryError("no buffer")

    with pytest.raises(MemoryError):
        run_pool(range(10), lambda i, s: None, workers=2, setup=setup, teardown=State.close, cancel=threading.Event())


def test_cancelled_from_outside() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_pool(range(10), lambda i, s: None, workers=1, setup=State, teardown=State.close, cancel=cancel)
    with pytest.raises(ValueError, match="workers"):
        run_pool(range(1), lambda i, s: None, workers=0, setup=State, teardown=State.close, cancel=threading.Event())
