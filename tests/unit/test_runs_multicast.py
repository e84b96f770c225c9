"""The run side of rack multicast (provision.runs): an agent's join / keepalive / leave makes few events (the
first join and leave, then at most one of each every PROGRESS_EVERY seconds; no keepalive), and the leave of
a reported run comes after the report's store transaction (a stuck carousel never holds it). A fake clock and
a fake carousel registry."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.config import MulticastConfig
from provision.images import ImageStore
from provision.multicast import Multicast
from provision.runs import PROGRESS_EVERY, Runs
from provision.store import Run, Store
from provision.wire.api import Report
from provision.wire.carousel import MulticastAnswer, MulticastCall, MulticastPlan
from tests.support.clock import Clock

MAC = "52:54:00:16:00:42"
DIGEST = "a" * 64
PLAN = MulticastPlan(group="239.255.18.7", port=18018, digest=DIGEST, chunks=5, rate=10**6, keepalive=10)


class FakeMulticast(Multicast):
    """Answers every call; its leave checks that another thread can read the store meanwhile."""

    def __init__(self, store: Store, images: ImageStore) -> None:
        super().__init__(images, MulticastConfig())
        self.store = store
        self.left: list[tuple[str, bool]] = []  # (run, the store readable by another thread during the leave)

    def call(self, run: str, mac: str | None, image: str, plan: MulticastPlan, msg: MulticastCall) -> MulticastAnswer:
        return MulticastAnswer(run=run, sending=msg.event != "leave", listeners=1, keepalive=plan.keepalive)

    def leave(self, run: str, reason: str) -> None:
        answered = threading.Event()

        def read() -> None:
            self.store.run(run)
            answered.set()

        other = threading.Thread(target=read, daemon=True)
        other.start()
        self.left.append((run, answered.wait(10.0)))  # generous: at once unless the transaction is still open
        other.join(10.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def multicast(store: Store, tmp_path: Path) -> FakeMulticast:
    return FakeMulticast(store, ImageStore(tmp_path / "images"))


@pytest.fixture
def runs(store: Store, tmp_path: Path, multicast: FakeMulticast, clock: Clock) -> Runs:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    return Runs(store, None, recipes, tmp_path / "probes", multicast=multicast, clock=clock)


def new_run(store: Store) -> tuple[Run, str]:
    store.seen(MAC)
    token = store.issue_token(MAC, "ipxe", ttl=3600)
    plan = {"image": "rack", "version": "L", "digest": DIGEST, "multicast": PLAN.to_dict()}
    return store.create_run(MAC, recipe="r", image="rack", label="L", digest=DIGEST, token=token, plan=plan), token


def kinds(store: Store) -> list[str]:
    return [str(e.detail["event"]) for e in store.events(MAC, "multicast")]


def test_multicast_events_are_throttled(runs: Runs, store: Store, clock: Clock) -> None:
    run, token = new_run(store)
    for _ in range(50):  # an agent calling in a loop with its token
        runs.multicast_call(run.id, MulticastCall(token, "join"))
        runs.multicast_call(run.id, MulticastCall(token, "keepalive", chunks_done=1))
        runs.multicast_call(run.id, MulticastCall(token, "leave", reason="loss"))
    assert kinds(store) == ["join", "leave"]  # the first of each kind; keepalives never
    clock.now += PROGRESS_EVERY
    runs.multicast_call(run.id, MulticastCall(token, "join"))
    runs.multicast_call(run.id, MulticastCall(token, "keepalive"))
    assert kinds(store) == ["join", "leave", "join"]


def test_a_reported_run_leaves_after_the_transaction(runs: Runs, store: Store, multicast: FakeMulticast) -> None:
    run, token = new_run(store)
    answer = runs.report(run.id, Report(token, False, "disk gone"))
    assert answer.state == "failed"
    assert multicast.left == [(run.id, True)]
