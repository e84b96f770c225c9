"""A fixed pool of worker threads fed through a bounded queue, each with its own scratch state.

The queue holds at most ``2 * workers`` items, and each worker holds one item's data at a time, so memory
stays bounded by the worker count whatever the image size. The first exception sets ``cancel`` (the other
workers drain the queue without working, the feeding stops) and is raised again in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from provision.agent.fetch import Cancelled

T = TypeVar("T")
S = TypeVar("S")


class _Stop:
    pass


_STOP = _Stop()


class _Failures:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []

    def add(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(exc)

    def first(self) -> BaseException | None:
        """The first real failure; a worker that stopped because of it (``Cancelled``) is not one."""
        real = [e for e in self.errors if not isinstance(e, Cancelled)]
        return real[0] if real else (self.errors[0] if self.errors else None)


def run_pool(
    items: Iterable[T],
    work: Callable[[T, S], None],
    *,
    workers: int,
    setup: Callable[[], S],
    teardown: Callable[[S], None],
    cancel: threading.Event,
    name: str = "agent",
) -> None:
    """Call ``work(item, state)`` for every item on ``workers`` threads; ``state = setup()`` per thread."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    pending: queue.Queue[T | _Stop] = queue.Queue(maxsize=2 * workers)
    failures = _Failures()

    def loop() -> None:
        try:
            state = setup()
        except BaseException as exc:
            failures.add(exc)
            cancel.set()
            state = None
        try:
            while True:
                item = pending.get()
                if isinstance(item, _Stop):
                    return
                if cancel.is_set() or state is None:
                    continue  # drain, so the feeder never blocks
                try:
                    work(item, state)
                except BaseException as exc:
                    failures.add(exc)
                    cancel.set()
        finally:
            if state is not None:
                teardown(state)

    threads = [threading.Thread(target=loop, name=f"{name}-{i}", daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for item in items:
            while not cancel.is_set():
                try:
                    pending.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if cancel.is_set():
                break
    except BaseException:
        cancel.set()
        raise
    finally:
        for _ in threads:
            pending.put(_STOP)
        for thread in threads:
            thread.join()
    error = failures.first()
    if error is not None:
        raise error
    if cancel.is_set():
        raise Cancelled
