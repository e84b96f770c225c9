"""The agent's carousel reassembly and listening loop, with pieces made in process (no sockets)."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.agent.index import read_index
from provision.agent.multicast.listen import Keepalive, Timeouts, listen
from provision.agent.multicast.reassembly import Event, Limits, Ready, Reassembly, Repair, pieces_of
from provision.agent.multicast.receiver import Rejoin, socket_drops
from provision.wire.carousel import HEADER, MAX_PAYLOAD, Piece, carousel_order, decode, digest16, encode, pieces
from tests.support.agent import CHUNK, build_image, random_disk
from tests.support.carousel import stream


@dataclass
class Carousel:
    digest: str
    order: list[str]
    lengths: list[int]
    frames: list[bytes]

    def reassembly(self, wanted: list[int] | None = None, limits: Limits | None = None) -> Reassembly:
        numbers = range(len(self.order)) if wanted is None else wanted
        return Reassembly(self.order, self.lengths, numbers, digest16(self.digest), limits or Limits())

    def datagrams(self, **kw: object) -> list[bytes]:
        return list(stream(self.frames, self.digest, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def carousel() -> Carousel:
    image = build_image(random_disk(12 * CHUNK, [0, 1, 2, 4, 5, 7, 8, 10, 11], seed=5))
    index = read_index(image.index)
    order = carousel_order(index.chunks)
    lengths = {c.sha256: c.length for c in index.data_chunks}
    return Carousel(index.digest, order, [lengths[s] for s in order], [image.frames[s] for s in order])


def feed(reassembly: Reassembly, datagrams: list[bytes]) -> list[Event]:
    return [event for data in datagrams for event in reassembly.datagram(data)]


def ready(events: list[Event]) -> dict[int, bytes]:
    return {e.number: e.frame for e in events if isinstance(e, Ready)}


def test_in_order_every_wanted_frame_whole_and_nothing_lost(carousel: Carousel) -> None:
    assert all(pieces_of(len(f)) > 40 for f in carousel.frames)  # frames of many datagrams each
    r = carousel.reassembly(wanted=[0, 3, 8])
    events = feed(r, carousel.datagrams())
    assert ready(events) == {n: carousel.frames[n] for n in (0, 3, 8)}
    assert [e for e in events if isinstance(e, Repair)] == []
    assert r.finished and r.remaining() == [] and r.held == sum(len(carousel.frames[n]) for n in (0, 3, 8))
    assert (r.counts.lost, r.counts.dropped) == (0, 0) and r.leave() == []
    assert r.counts.datagrams == r.counts.expected == sum(pieces_of(len(f)) for f in carousel.frames)


def test_reordered_and_duplicated_pieces(carousel: Carousel) -> None:
    datagrams = carousel.datagrams()
    shuffled: list[bytes] = []
    rng = random.Random(3)
    for number, frame in enumerate(carousel.frames):  # each frame's pieces in a random order, each sent twice
        cut = [encode(p) for p in pieces(frame, digest=digest16(carousel.digest), pass_number=0, chunk=number)]
        rng.shuffle(cut)
        shuffled += [d for d in cut for _ in range(2)]
    r = carousel.reassembly()
    assert ready(feed(r, shuffled)) == dict(enumerate(carousel.frames))
    assert r.counts.dropped == len(datagrams)  # every second copy
    assert r.counts.datagrams == len(datagrams) and r.counts.lost == 0


def test_lost_pieces_are_repaired_by_exactly_the_missing_ranges(carousel: Carousel) -> None:
    frame1 = carousel.frames[1]
    first = pieces_of(len(carousel.frames[0]))
    last_of_1 = first + pieces_of(len(frame1)) - 1
    lost = {first + 2, first + 3, first + 7, last_of_1}  # chunk 1: pieces 2-3 (one range), 7, and its last
    r = carousel.reassembly(wanted=[0, 1, 2])
    events = feed(r, carousel.datagrams(drop=lambda i: i in lost))
    repairs = [e for e in events if isinstance(e, Repair)]
    assert [e.number for e in repairs] == [1]
    piece_end = len(frame1) - 1
    assert repairs[0].missing == [
        (2 * MAX_PAYLOAD, 4 * MAX_PAYLOAD - 1),
        (7 * MAX_PAYLOAD, 8 * MAX_PAYLOAD - 1),
        ((len(frame1) - 1) // MAX_PAYLOAD * MAX_PAYLOAD, piece_end),
    ]
    held = repairs[0].pieces
    for offset, payload in held.items():
        assert frame1[offset : offset + len(payload)] == payload
    assert sum(len(p) for p in held.values()) + sum(b - a + 1 for a, b in repairs[0].missing) == len(frame1)
    assert set(ready(events)) == {0, 2} and r.counts.lost == 4


def test_a_frame_still_in_progress_when_leaving_is_repaired(carousel: Carousel) -> None:
    r = carousel.reassembly(wanted=[0])
    feed(r, carousel.datagrams(chunks=1)[:10])
    [repair] = r.leave()
    assert repair.number == 0 and repair.missing == [(10 * MAX_PAYLOAD, len(carousel.frames[0]) - 1)]


def test_another_version_and_malformed_datagrams_are_dropped(carousel: Carousel) -> None:
    other = "ab" * 32
    r = carousel.reassembly()
    good = carousel.datagrams(chunks=1)
    forged = [
        *stream(carousel.frames, other, chunks=1),  # another version
        b"PVC1",  # shorter than a header
        b"XXXX" + good[0][4:],  # not our magic
        good[0][:6] + (77).to_bytes(2, "big") + good[0][8:],  # length field not the payload's
        good[0][:-1],  # payload cut
    ]
    assert feed(r, forged) == [] and r.counts.dropped == len(forged) and r.start is None
    d16 = digest16(carousel.digest)
    unaligned = Piece(d16, 0, 0, 100, len(carousel.frames[0]), carousel.frames[0][100 : 100 + MAX_PAYLOAD])
    huge = Piece(d16, 0, 0, 0, 10 * CHUNK, b"x" * MAX_PAYLOAD)  # a frame larger than zstd makes of the chunk
    beyond = Piece(d16, 0, len(carousel.order), 0, 100, b"y" * 100)  # a chunk number the order lacks
    for piece in (unaligned, huge, beyond):
        assert r.piece(piece) == []
    assert r.counts.dropped == len(forged) + 3 and r.counts.datagrams == 0
    assert ready(feed(r, good)) == {0: carousel.frames[0]}


def test_frame_length_changed_mid_frame_discards_the_frame(carousel: Carousel) -> None:
    r = carousel.reassembly(wanted=[0, 1])
    good = carousel.datagrams(chunks=1)
    feed(r, good[:5])
    head = decode(good[5])
    forged = encode(Piece(head.digest16, 0, 0, head.offset, head.frame_length + MAX_PAYLOAD, head.payload))
    assert r.datagram(forged) == [] and r.held == 0
    assert feed(r, good[6:]) == []  # the rest of that frame is not kept: the chunk is left to HTTP
    assert r.remaining() == [0, 1] and 0 not in r.wanted
    events = feed(r, carousel.datagrams(first=(0, 1), chunks=1))
    assert ready(events) == {1: carousel.frames[1]} and r.remaining() == [0]


def test_late_joiner_starts_mid_pass_and_completes_after_one_cycle(carousel: Carousel) -> None:
    n = len(carousel.order)
    r = carousel.reassembly()
    datagrams = carousel.datagrams(first=(41, 5), chunks=n + 1, skip_offsets=9)  # joins mid-frame of chunk 5
    events: list[Event] = []
    used = 0
    for data in datagrams:
        used += 1
        events += r.datagram(data)
        if r.finished or r.cycle_done:
            break
    assert r.start == (41, 5) and r.finished  # as the first 9 pieces of chunk 5 came again in pass 42
    last = decode(datagrams[used - 1])
    assert (last.pass_number, last.chunk, last.offset) == (42, 5, 8 * MAX_PAYLOAD)
    assert ready(events) == {k: carousel.frames[k] for k in range(n)}  # the frame it joined in the middle of too
    assert [e for e in events if isinstance(e, Repair)] == [] and r.counts.lost == 0 and r.counts.dropped == 0


def test_the_frame_joined_mid_way_is_repaired_only_when_its_next_turn_is_lost(carousel: Carousel) -> None:
    n = len(carousel.order)
    r = carousel.reassembly()
    first = carousel.datagrams(first=(41, 5), chunks=n, skip_offsets=9)  # chunks 5 ... 4: one pass
    events = feed(r, first)
    assert not r.cycle_done and 5 in r.wanted and [e for e in events if isinstance(e, Repair)] == []
    assert r.held >= len(carousel.frames[5]) - 9 * MAX_PAYLOAD  # held a whole pass
    after = [d for d in carousel.datagrams(first=(42, 5), chunks=3) if decode(d).chunk != 5]  # its turn lost
    events = feed(r, after)
    [repair] = [e for e in events if isinstance(e, Repair)]
    assert repair.number == 5 and repair.missing == [(0, 9 * MAX_PAYLOAD - 1)] and r.cycle_done


def test_pass_number_wraps(carousel: Carousel) -> None:
    r = carousel.reassembly()
    events = feed(r, carousel.datagrams(first=(2**32 - 1, 3), chunks=len(carousel.order)))
    assert len(ready(events)) == len(carousel.order) and r.finished


def test_memory_bound_drops_and_counts_pieces_over_it(carousel: Carousel) -> None:
    limit = len(carousel.frames[0]) + 3 * MAX_PAYLOAD
    r = carousel.reassembly(limits=Limits(bytes=limit))
    events = feed(r, carousel.datagrams(chunks=3))  # the consumer never releases
    assert ready(events) == {0: carousel.frames[0]} and r.held <= limit
    assert r.counts.overflow > 0 and r.counts.lost == r.counts.overflow
    r.release(len(carousel.frames[0]))
    assert r.held <= 3 * MAX_PAYLOAD
    few = carousel.reassembly(limits=Limits(partials=1))
    interleaved = [d for pair in zip(*(carousel.datagrams(first=(0, k), chunks=1) for k in (0, 1)), strict=False)
                   for d in pair]  # fmt: skip
    feed(few, interleaved)
    assert few.counts.overflow > 0 and 1 in few.remaining()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def recv_from(datagrams: list[bytes], clock: Clock, step: float = 0.001) -> Iterator[bytes | None]:
    for data in datagrams:
        clock.now += step
        yield data
    while True:
        clock.now += 0.5
        yield None


def run_listen(r: Reassembly, datagrams: list[bytes], max_loss: float = 0.2) -> tuple[str, list[Event]]:
    clock, events = Clock(), list[Event]()
    feed_ = recv_from(datagrams, clock)
    reason = listen(lambda: next(feed_), r, events.append, max_loss=max_loss, timeouts=Timeouts(3, 4), clock=clock)
    return reason, events


def test_listen_leaves_when_every_chunk_is_in(carousel: Carousel) -> None:
    reason, events = run_listen(carousel.reassembly(wanted=[1]), carousel.datagrams(chunks=30))
    assert reason == "all chunks received" and ready(events) == {1: carousel.frames[1]}


def test_listen_leaves_after_one_full_cycle(carousel: Carousel) -> None:
    datagrams = [d for d in carousel.datagrams(first=(0, 4), chunks=50) if decode(d).chunk != 3]  # 3 never comes
    r = carousel.reassembly(wanted=[0, 2, 3])
    reason, events = run_listen(r, datagrams)
    assert reason == "one full cycle" and set(ready(events)) == {0, 2}
    assert r.remaining() == [3] and [e for e in events if isinstance(e, Repair)] == []
    assert r.start == (0, 4) and decode(datagrams[r.counts.datagrams - 1]).chunk == 4  # back where it started


def test_listen_leaves_on_loss_above_the_plan_s_threshold(carousel: Carousel) -> None:
    r = carousel.reassembly(limits=Limits(window=200))
    reason, _ = run_listen(r, carousel.datagrams(drop=lambda i: i % 3 == 0), max_loss=0.2)
    assert reason == "loss 33% above 20%"
    assert r.counts.datagrams < 300  # left early, not at the end of the pass
    lossy = carousel.reassembly(limits=Limits(window=200))
    reason, events = run_listen(lossy, carousel.datagrams(chunks=50, drop=lambda i: i % 10 == 0), max_loss=0.2)
    assert reason == "one full cycle" and len(events) + len(lossy.leave()) == len(carousel.order)
    assert 0.09 < lossy.loss < 0.11


def test_listen_leaves_when_no_multicast_comes_or_it_stops(carousel: Carousel) -> None:
    reason, _ = run_listen(carousel.reassembly(), [])
    assert reason == "no multicast: no datagram within 3 s of joining"
    reason, _ = run_listen(carousel.reassembly(), list(stream(carousel.frames, "cd" * 32)))
    assert reason.startswith("no multicast")
    reason, _ = run_listen(carousel.reassembly(), carousel.datagrams(chunks=2))
    assert reason == "the carousel stopped: no datagram for 4 s"


def test_header_is_the_contract_s(carousel: Carousel) -> None:
    assert HEADER.size == 40 and all(len(d) <= HEADER.size + MAX_PAYLOAD for d in carousel.datagrams(chunks=1))


def test_keepalive_beats_until_stopped_and_survives_failures() -> None:
    beats: list[float] = []
    done = threading.Event()

    def beat() -> None:
        beats.append(time.monotonic())
        if len(beats) == 2:
            raise ConnectionError("server restarting")  # logged; the next beat still comes
        if len(beats) >= 4:
            done.set()

    keepalive = Keepalive(beat, 0.01).start()
    assert done.wait(5)
    keepalive.stop()
    count = len(beats)
    time.sleep(0.05)
    assert len(beats) == count >= 4


def test_kernel_drops_are_read_by_the_socket_s_inode(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    udp = tmp_path / "net" / "udp"
    with (tmp_path / "stand-in").open("w") as socket_file:  # any descriptor: its inode is what is looked up
        inode = os.fstat(socket_file.fileno()).st_ino
        header = (
            "sl local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode ref pointer drops"
        )
        line = (
            "{n}: 0100007F:B30D 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 {inode} 2 00000000 {drops}"
        )
        udp.write_text("\n".join([header, line.format(n=1, inode=1, drops=5), line.format(n=2, inode=inode, drops=17)]))
        assert socket_drops(socket_file.fileno(), tmp_path) == 17
        udp.write_text("\n".join([header, line.format(n=1, inode=1, drops=5)]))
        assert socket_drops(socket_file.fileno(), tmp_path) is None


def test_a_piece_more_than_a_pass_ahead_is_dropped(carousel: Carousel) -> None:
    """One datagram with a forged pass number (or of the pass before the start, reordered) neither ends the
    cycle nor counts a pass of loss: the listener goes on and every frame comes."""
    n = len(carousel.order)
    datagrams = carousel.datagrams(first=(7, 0), chunks=n)
    forged = Piece(digest16(carousel.digest), 7 + 5, 2, 0, len(carousel.frames[2]), b"!" * MAX_PAYLOAD)
    before = pieces(carousel.frames[n - 1], digest=digest16(carousel.digest), pass_number=6, chunk=n - 1)[0]
    mixed = [*datagrams[:100], encode(forged), encode(before), *datagrams[100:]]
    r = carousel.reassembly()
    reason, events = run_listen(r, mixed)
    assert reason == "all chunks received" and ready(events) == dict(enumerate(carousel.frames))
    assert r.counts.dropped == 2 and r.counts.lost == 0


def test_old_datagrams_sent_again_do_not_keep_it_listening(carousel: Carousel) -> None:
    """A replay of datagrams the carousel has passed (late pieces) is not a sign of life: the listener leaves
    when the carousel's own datagrams stop, not when the replay does."""
    first = carousel.datagrams(chunks=2)
    replay = carousel.datagrams(chunks=1) * 400  # 20 000 datagrams, 1 ms apart on the clock: 20 s
    clock, events = Clock(), list[Event]()
    feed_ = recv_from(first + replay, clock)
    reason = listen(lambda: next(feed_), carousel.reassembly(wanted=[5]), events.append, max_loss=0.2,
                    timeouts=Timeouts(3, 4), clock=clock)  # fmt: skip
    assert reason == "the carousel stopped: no datagram for 4 s" and clock.now < 10


def test_listening_ends_after_the_longest_time_whatever_comes(carousel: Carousel) -> None:
    clock, events = Clock(), list[Event]()
    feed_ = recv_from(carousel.datagrams(chunks=1) * 400, clock)
    reason = listen(lambda: next(feed_), carousel.reassembly(wanted=[5]), events.append, max_loss=0.2,
                    timeouts=Timeouts(3, 100), clock=clock, longest=2.5)  # fmt: skip
    assert reason == "listening longer than 2 s" and 2.5 < clock.now < 2.6


def test_the_membership_is_sent_again_after_a_second_of_silence_then_every_second() -> None:
    clock = Clock()
    rejoins = Rejoin(after=1.0, clock=clock)
    due = []
    for _ in range(40):  # 0.1 s steps: datagrams for 1 s, then 3 s of silence
        clock.now += 0.1
        if clock.now <= 1.0:
            rejoins.heard()
        due.append(rejoins.due())
    times = [round(0.1 * (i + 1), 1) for i, d in enumerate(due) if d]
    assert times == [2.0, 3.0, 4.0] and rejoins.count == 3  # not while datagrams come; once a second after
    rejoins.heard()
    clock.now += 0.5
    assert not rejoins.due()
