"""The carousel sender (provision.multicast.sender) on a fake socket: every frame in carousel order, cut into
datagrams a receiver decodes, in GSO batches; a kernel that refuses GSO is detected once and every datagram
then goes alone; pause keeps the position; stop is prompt even mid-sleep; a socket the host refuses is logged
and nothing is sent. Every sender a test makes is stopped by the ``stopped`` fixture, whatever happens; no
assertion on elapsed time."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from provision.multicast import sender as sender_module
from provision.multicast.egress import Egress
from provision.multicast.sender import SOL_UDP, UDP_SEGMENT, Sender, Target
from provision.wire.carousel import HEADER, decode, digest16

DIGEST = "ab" * 32
FRAMES = {"a" * 64: b"A" * 5000, "b" * 64: b"B" * 100, "c" * 64: b"C" * 70_000}
ORDER = list(FRAMES)


class FakeSocket:
    def __init__(self, gso: bool = True) -> None:
        self.gso = gso
        self.datagrams: list[bytes] = []
        self.gso_sends = 0
        self.sent = threading.Event()

    def sendmsg(self, buffers: list[bytes], cmsgs: list[tuple[int, int, bytes]]) -> int:
        if not self.gso:
            raise OSError(errno.EIO, "Input/output error")
        [(level, kind, data)] = cmsgs
        assert (level, kind) == (SOL_UDP, UDP_SEGMENT)
        size = int.from_bytes(data, "little")
        blob = b"".join(buffers)
        self.datagrams += [blob[i : i + size] for i in range(0, len(blob), size)]
        self.gso_sends += 1
        self.sent.set()
        return len(blob)

    def send(self, datagram: bytes) -> int:
        self.datagrams.append(datagram)
        self.sent.set()
        return len(datagram)

    def close(self) -> None:
        pass


def sender(sock: FakeSocket, stopped: list[Sender], rate: int = 10**9) -> Sender:
    """A sender on ``sock``, in ``stopped`` (the fixture's list: stopped after the test)."""

    def opener(target: Target) -> socket.socket:
        return sock  # type: ignore[return-value]

    made = Sender(DIGEST, ORDER, FRAMES.__getitem__, Target("239.255.18.1", 18018), rate, opener=opener)
    stopped.append(made)
    return made


@pytest.fixture
def stopped() -> Iterator[list[Sender]]:
    """The senders a test makes, stopped whatever happens (a failed assertion must leave no thread sending)."""
    made: list[Sender] = []
    try:
        yield made
    finally:
        for s in made:
            s.stop()


def wait(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def reassembled(datagrams: list[bytes]) -> dict[tuple[int, int], bytes]:
    parts: dict[tuple[int, int], dict[int, bytes]] = {}
    for d in datagrams:
        piece = decode(d, digest16(DIGEST))
        parts.setdefault((piece.pass_number, piece.chunk), {})[piece.offset] = piece.payload
    return {k: b"".join(v[o] for o in sorted(v)) for k, v in parts.items()}


@pytest.mark.parametrize("gso", [True, False])
def test_one_pass_in_order_decodable_with_or_without_gso(gso: bool, stopped: list[Sender]) -> None:
    sock = FakeSocket(gso)
    s = sender(sock, stopped)
    s.resume()
    wait(lambda: s.stats.passes >= 1)
    s.stop()
    frames = reassembled(sock.datagrams)
    assert [frames[(0, n)] for n in range(3)] == list(FRAMES.values())
    assert all(len(d) <= HEADER.size + 1400 for d in sock.datagrams)
    assert s.stats.gso is gso and (sock.gso_sends > 0) is gso
    assert s.stats.datagrams >= 4 + 1 + 50 and s.stats.dropped == 0


def test_pause_keeps_the_position(stopped: list[Sender]) -> None:
    sock = FakeSocket()
    s = sender(sock, stopped, rate=20_000)  # 20 kB/s: the 70 kB frame takes seconds
    s.resume()
    wait(lambda: s.position[1] == 2)
    s.pause()
    count = len(sock.datagrams)
    threading.Event().wait(0.2)  # a chance for a sender that ignores the pause to send (not a timing assertion)
    paused = s.sending
    assert len(sock.datagrams) <= count + 45 and not paused  # at most the batch in hand
    assert s.position == (0, 2)
    s.resume()
    resumed = s.sending
    assert resumed


def test_pause_says_when_the_carousel_fell_behind_its_rate(
    stopped: list[Sender], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provision.multicast.sender")
    sock = FakeSocket()
    s = sender(sock, stopped, rate=20_000)
    s.resume()
    wait(lambda: s.position[1] == 2)
    s.pause()
    assert "paused at pass 0 chunk 2" in caplog.text and "behind" not in caplog.text
    s.resume()
    s._pacer.behind = 0.7  # as a pacer that gave up 0.7 s of its debt counts it (test_multicast_choose)
    s._pacer.set_rate(10_000)  # making room for other traffic: the warning still names the configured rate
    s.pause()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned and "fell 0.7 s behind its rate of 20000 B/s" in warned[-1], warned


class HalfEgress(Egress):
    """Other traffic on the link worth half the carousel's rate, then none."""

    def pace(self, own_bytes: int, own_datagrams: int) -> int:
        self.calls = getattr(self, "calls", 0) + 1
        self.other = self.rate / 2 if self.calls < 3 else 0.0
        return int(self.rate - self.other)


def test_the_sender_makes_room_for_the_link_s_other_traffic(
    stopped: list[Sender], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="provision.multicast.sender")
    monkeypatch.setattr(sender_module, "EGRESS_LOG_EVERY", 0.0)  # every change logged (10 s apart otherwise)
    sock = FakeSocket()
    egress = HalfEgress(200_000, lambda: 0)
    s = Sender(DIGEST, ORDER, FRAMES.__getitem__, Target("239.255.18.1", 18018), 200_000, egress=egress,
               opener=lambda target: sock)  # type: ignore[arg-type,return-value]  # fmt: skip
    stopped.append(s)
    s.resume()
    wait(lambda: getattr(egress, "calls", 0) >= 3)
    s.stop()
    assert "making room for 0.1 MB/s of other traffic on the link: paced at 0.1 of 0.2 MB/s" in caplog.text
    assert "back to its rate of 0.2 MB/s" in caplog.text and s._pacer.rate == 200_000


def test_stop_is_prompt_even_mid_sleep(stopped: list[Sender]) -> None:
    sock = FakeSocket()
    s = sender(sock, stopped, rate=500)  # the first frame (5 kB) goes at once, then the thread sleeps 10 s
    s.resume()
    wait(lambda: s._pacer.slept > 0)
    thread = s._thread
    s.stop()  # joins the thread for at most 5 s: it has ended only if the sleep woke on the stop
    assert thread is not None and not thread.is_alive() and not s.sending


def test_an_unreadable_chunk_is_skipped(stopped: list[Sender]) -> None:
    sock = FakeSocket()

    def read(sha: str) -> bytes:
        if sha == ORDER[1]:
            raise OSError(errno.ENOENT, "gone")
        return FRAMES[sha]

    s = Sender(DIGEST, ORDER, read, Target("239.255.18.1", 18018), 10**9, opener=lambda t: sock)  # type: ignore[arg-type,return-value]
    stopped.append(s)
    s.resume()
    wait(lambda: s.stats.passes >= 1)
    s.stop()
    assert s.stats.skipped_chunks >= 1 and (0, 1) not in reassembled(sock.datagrams)


def test_a_refused_socket_sends_nothing(stopped: list[Sender]) -> None:
    def refuse(target: Target) -> socket.socket:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    s = Sender(DIGEST, ORDER, FRAMES.__getitem__, Target("239.255.18.1", 18018), 10**9, opener=refuse)
    stopped.append(s)
    s.resume()
    assert not s.sending
    s.stop()


def test_a_resume_while_sending_keeps_the_pace(stopped: list[Sender]) -> None:
    """Every join and keepalive resumes the carousel: while it sends, that must not reset its pacer (the batch
    it waits for would go at once: a flood of keepalives would send over the rate)."""
    sock = FakeSocket()
    s = sender(sock, stopped, rate=2_000)  # the first frame (4 datagrams) costs 3 s: the thread sleeps that long
    s.resume()
    wait(lambda: s._pacer.slept > 0)  # the first batch went at once; the thread sleeps 3 s before the second
    due = s._pacer.due
    for _ in range(10):
        s.resume()
    assert due is not None and s._pacer.due == due
    s.stop()


def test_a_failed_thread_is_logged_and_restarted_by_the_next_resume(
    stopped: list[Sender], caplog: pytest.LogCaptureFixture
) -> None:
    sock = FakeSocket()
    calls: list[str] = []

    def read(sha: str) -> bytes:
        calls.append(sha)
        if len(calls) == 2:  # once, on the second chunk: a bug, not an unreadable chunk
            raise ValueError("unexpected")
        return FRAMES[sha]

    s = Sender(DIGEST, ORDER, read, Target("239.255.18.1", 18018), 10**9, opener=lambda t: sock)  # type: ignore[arg-type,return-value]
    stopped.append(s)
    s.resume()
    wait(lambda: any("sender failed" in r.getMessage() for r in caplog.records))
    wait(lambda: not s.sending)  # its state cleared: the next resume starts a thread
    failed = [r for r in caplog.records if "sender failed" in r.getMessage()]
    assert len(failed) == 1 and DIGEST in failed[0].getMessage() and s.position == (0, 2)
    s.resume()  # the next keepalive: it sends again, past the chunk it failed at
    wait(lambda: s.stats.passes >= 1)
    assert s.sending and s.failures == 1
