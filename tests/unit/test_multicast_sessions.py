"""The carousel registry (provision.multicast.sessions) with a fake clock and a fake sender: join starts the
version's carousel, keepalives keep a listener, silence drops it after 3 keepalive periods, the last leave
pauses the carousel (its position is the sender's to keep), a keepalive after a drop joins again."""

from __future__ import annotations

import threading

import pytest

from provision.multicast import Sessions, Status
from provision.wire.carousel import MulticastPlan

A = "a" * 64
B = "b" * 64


class FakeSender:
    def __init__(self, plan: MulticastPlan) -> None:
        self.plan = plan
        self.calls: list[str] = []
        self._sending = False

    @property
    def sending(self) -> bool:
        return self._sending

    def resume(self) -> None:
        self.calls.append("resume")
        self._sending = True

    def pause(self) -> None:
        self.calls.append("pause")
        self._sending = False

    def stop(self, timeout: float = 5.0) -> None:
        self.calls.append("stop")
        self._sending = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plan(digest: str = A, keepalive: int = 10) -> MulticastPlan:
    return MulticastPlan(group="239.255.18.7", port=18018, digest=digest, chunks=5, rate=10**6, keepalive=keepalive)


@pytest.fixture
def made() -> dict[str, FakeSender]:
    return {}


@pytest.fixture
def sessions(made: dict[str, FakeSender], clock: Clock) -> Sessions:
    def make(p: MulticastPlan) -> FakeSender:
        made[p.digest] = FakeSender(p)
        return made[p.digest]

    return Sessions(make, clock=clock, reaper=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_join_starts_one_carousel_per_version(sessions: Sessions, made: dict[str, FakeSender]) -> None:
    first = sessions.join("r1", "52:54:00:00:00:01", plan())
    second = sessions.join("r2", "52:54:00:00:00:02", plan())
    assert (first.sending, first.listeners, second.listeners) == (True, 1, 2)
    assert list(made) == [A] and made[A].sending
    other = sessions.join("r3", None, plan(B))
    assert other.listeners == 1 and set(made) == {A, B}
    assert sessions.status(A) == Status(True, 2)


def test_keepalive_keeps_and_silence_drops_after_three_periods(
    sessions: Sessions, made: dict[str, FakeSender], clock: Clock
) -> None:
    sessions.join("r1", "m1", plan())
    sessions.join("r2", "m2", plan())
    for _ in range(5):  # r1 keeps saying keepalive every 10 s; r2 says nothing
        clock.now += 10
        sessions.keepalive("r1", "m1", plan(), chunks_done=1, received=1400)
    assert sessions.listening("r1") and not sessions.listening("r2")
    assert made[A].sending
    clock.now += 30  # exactly 3 periods: still there
    assert sessions.expire() == []
    clock.now += 0.5
    assert sessions.expire() == ["r1"]
    assert not made[A].sending and made[A].calls[-1] == "pause"
    assert sessions.status(A) == Status(False, 0)


def test_last_leave_pauses_and_a_newcomer_resumes(sessions: Sessions, made: dict[str, FakeSender]) -> None:
    sessions.join("r1", "m1", plan())
    sessions.join("r2", "m2", plan())
    assert sessions.leave("r1", "one full cycle").listeners == 1 and made[A].sending
    left = sessions.leave("r2", "done")
    assert (left.sending, left.listeners) == (False, 0) and not made[A].sending
    assert sessions.leave("r2").listeners == 0  # a second leave: nothing happens
    assert sessions.join("r3", "m3", plan()).sending
    assert made[A].calls.count("pause") == 1 and len(made) == 1  # the same carousel: its position kept


def test_keepalive_of_a_dropped_run_joins_again(sessions: Sessions, clock: Clock) -> None:
    sessions.join("r1", "m1", plan())
    clock.now += 31
    assert sessions.expire() == ["r1"]
    status = sessions.keepalive("r1", "m1", plan(), chunks_done=3, received=99)
    assert (status.sending, status.listeners) == (True, 1) and sessions.listening("r1")


def test_a_run_listens_to_one_version(sessions: Sessions, made: dict[str, FakeSender]) -> None:
    sessions.join("r1", "m1", plan(A))
    sessions.join("r1", "m1", plan(B))
    assert not made[A].sending and made[B].sending


def test_an_idle_carousel_is_stopped_after_ten_minutes(
    sessions: Sessions, made: dict[str, FakeSender], clock: Clock
) -> None:
    sessions.join("r1", "m1", plan())
    sessions.leave("r1")
    first = made[A]
    clock.now += 599
    sessions.expire()
    assert first.calls[-1] == "pause" and sessions.status(A) == Status(False, 0)
    clock.now += 2
    sessions.expire()
    assert first.calls[-1] == "stop" and sessions.status(A) is None
    assert sessions.join("r2", "m2", plan()).sending and made[A] is not first  # a new carousel


def test_close_stops_every_sender_and_makes_none_after(sessions: Sessions, made: dict[str, FakeSender]) -> None:
    sessions.join("r1", "m1", plan(A))
    sessions.join("r2", "m2", plan(B))
    sessions.close()
    assert all(s.calls[-1] == "stop" for s in made.values())
    sessions.join("r3", "m3", plan("c" * 64))  # a call still in flight as the server stops
    sessions.keepalive("r1", "m1", plan(A), 1, 1)
    assert sessions.status("c" * 64) is None and sessions.status(A) is None and set(made) == {A, B}


class StuckSender(FakeSender):
    """A sender whose stop waits (a thread slow to end): meanwhile another thread's call must be answered."""

    def __init__(self, plan: MulticastPlan, sessions: list[Sessions]) -> None:
        super().__init__(plan)
        self.sessions = sessions
        self.answered_while_stopping: bool | None = None

    def stop(self, timeout: float = 5.0) -> None:
        answered = threading.Event()

        def call() -> None:
            self.sessions[0].listening("r9")
            answered.set()

        other = threading.Thread(target=call, daemon=True)
        other.start()
        self.answered_while_stopping = answered.wait(10.0)  # generous: at once unless the lock is held
        super().stop(timeout)


@pytest.mark.parametrize("call", ["expire", "join", "leave"])
def test_an_idle_carousel_is_stopped_outside_the_lock(clock: Clock, call: str) -> None:
    made: list[StuckSender] = []
    holder: list[Sessions] = []

    def make(p: MulticastPlan) -> StuckSender:
        made.append(StuckSender(p, holder))
        return made[-1]

    sessions = Sessions(make, clock=clock, reaper=False)
    holder.append(sessions)
    sessions.join("r1", "m1", plan(A))
    sessions.leave("r1")
    clock.now += 601
    if call == "expire":
        sessions.expire()
    elif call == "join":
        sessions.join("r2", "m2", plan(B))
    else:
        sessions.leave("r2")
    assert made[0].calls[-1] == "stop" and made[0].answered_while_stopping is True
