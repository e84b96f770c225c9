"""write_image with the multicast source: datagrams from a list (no sockets), the fake chunk server for the
HTTP part (ranges included), a fake agent API for join, keepalive and leave."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from provision.agent import HttpRefused, WriteReport, read_index, write_image
from provision.agent.fetch import Fetcher
from provision.agent.index import Index
from provision.agent.multicast import Limits, MulticastSource, Timeouts
from provision.agent.multicast.loads import RepairFailed, fetch_ranges
from provision.agent.multicast.reassembly import Repair, pieces_of
from provision.agent.multicast.source import Receiver
from provision.errors import ProvisionError
from provision.wire.byteranges import MAX_RANGES
from provision.wire.carousel import (
    MAX_PAYLOAD,
    MulticastAnswer,
    MulticastCall,
    MulticastPlan,
    carousel_order,
    decode,
    encode,
    pieces,
)
from tests.support.agent import CHUNK, FAST, SERVER, FakeImage, FakeSession, RecordingTarget, build_image, frame, sha
from tests.support.carousel import ListReceiver, stream
from tests.support.files import sha256_file, sparse_file

TOKEN = "t0ken-of-the-run"
RUN = "run-1"


class FakeApi:
    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[MulticastCall] = []
        self.refuse = refuse

    def multicast(self, run: str, call: MulticastCall) -> MulticastAnswer:
        assert run == RUN and call.token == TOKEN
        self.calls.append(call)
        if self.refuse:
            raise ProvisionError("POST /api/v1/runs/run-1/multicast: HTTP 404: no such route")
        return MulticastAnswer(run, call.event != "leave", 1)


def image_with_repeats() -> FakeImage:
    raw = bytearray()
    blocks = [bytes([i]) * 100 + bytes(range(256)) * (CHUNK // 256 - 1) + bytes(156) for i in range(1, 9)]
    rng = random.Random(4)
    for i in range(20):
        if i in (3, 9):
            raw += bytes(CHUNK)  # holes
        elif i in (6, 15):
            raw += blocks[0]  # a chunk repeated at three offsets (with 1)
        else:
            raw += rng.randbytes(CHUNK) if i != 1 else blocks[0]
    return build_image(bytes(raw))


def plan_of(index: Index) -> MulticastPlan:
    return MulticastPlan("239.255.1.1", 9, index.digest, len(carousel_order(index.chunks)), 10_000_000, keepalive=1)


def write(
    image: FakeImage, target: Path | RecordingTarget, datagrams: Iterable[bytes], api: FakeApi, **kw: object
) -> tuple[WriteReport, MulticastSource, FakeSession, ListReceiver]:
    index = read_index(image.index)
    receiver = ListReceiver(datagrams)

    def open_receiver(plan: MulticastPlan) -> Receiver:
        assert plan.digest == index.digest
        return receiver

    source = MulticastSource(plan_of(index), index, run=RUN, token=TOKEN, api=api, open_receiver=open_receiver,
                             timeouts=Timeouts(join=0.3, idle=0.3), **kw)  # type: ignore[arg-type]  # fmt: skip
    session = FakeSession(image)
    report = write_image(SERVER, index, target, session=session, retry=FAST, source=source)
    return report, source, session, receiver


def frames_of(image: FakeImage) -> list[bytes]:
    return [image.frames[s] for s in carousel_order(read_index(image.index).chunks)]


def test_written_from_the_carousel_with_loss_repaired_by_ranges(tmp_path: Path) -> None:
    image = image_with_repeats()
    index = read_index(image.index)
    frames = frames_of(image)
    target = sparse_file(tmp_path / "disk.img", len(image.raw))
    right = index.chunks[2]  # already right on disk: never asked for
    with target.open("r+b") as f:
        f.seek(right.offset)
        f.write(image.raw[right.offset : right.offset + right.length])
    datagrams = list(stream(frames, index.digest, first=(7, 4), chunks=len(frames) + 3))
    lost = {5, 6, 7, 60, 200}  # of datagram numbers
    kept = [d for i, d in enumerate(datagrams) if i not in lost]
    report, source, session, receiver = write(image, target, kept, api := FakeApi())
    assert sha256_file(target, len(image.raw)) == sha(image.raw) and report.ok
    transfer = source.report()
    order = carousel_order(index.chunks)
    missing = [p for p in (decode(datagrams[i]) for i in sorted(lost)) if order[p.chunk] != right.sha256]
    assert len(missing) == len(lost)
    expected_ranges = {(order[p.chunk], p.offset, p.offset + len(p.payload) - 1) for p in missing}
    merged = {(s, a, b) for s, a, b in session.ranges}
    assert merged == merge(expected_ranges)  # exactly the missing bytes, adjacent pieces in one range
    assert transfer.repair_bytes == transfer.bytes_http == sum(len(p.payload) for p in missing)
    distinct = len(frames) - 1  # the chunk already right is not taken
    assert (transfer.mode, transfer.chunks_multicast, transfer.chunks_http) == ("multicast", distinct, 0)
    needed_bytes = sum(len(f) for f in frames) - len(image.frames[right.sha256 or ""])
    assert transfer.bytes_multicast + transfer.repair_bytes == needed_bytes
    assert sum(session.chunk_gets.values()) == len(session.ranges)  # no whole chunk by HTTP
    assert transfer.datagrams_lost == len(lost) and transfer.left_because == "all chunks received"
    assert api.calls[0].event == "join" and api.calls[-1].event == "leave"
    assert api.calls[-1].reason == "all chunks received" and api.calls[-1].chunks_done > 0
    assert receiver.closed and report.verified == len(image.data_indexes())


def merge(ranges: set[tuple[str, int, int]]) -> set[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for s, a, b in sorted(ranges):
        if out and out[-1][0] == s and out[-1][2] + 1 == a:
            out[-1] = (s, out[-1][1], b)
        else:
            out.append((s, a, b))
    return set(out)


def test_a_wrong_frame_is_never_written_and_comes_by_http(tmp_path: Path) -> None:
    image = image_with_repeats()
    index = read_index(image.index)
    order = carousel_order(index.chunks)
    frames = frames_of(image)
    bad = bytearray(image.plain[order[1]])
    bad[100] ^= 1
    forged = frame(bytes(bad))  # well formed, of the chunk's length: only its sha256 tells
    d16 = bytes.fromhex(index.digest)[:16]
    datagrams = [d for d in stream(frames, index.digest) if decode(d).chunk != 1]
    datagrams += [encode(p) for p in pieces(forged, digest=d16, pass_number=0, chunk=1)]
    path = sparse_file(tmp_path / "disk.img", len(image.raw))
    with RecordingTarget.open(path) as target:
        report, source, session, _ = write(image, target, datagrams, FakeApi())
        writes = target.writes
    assert report.ok and sha256_file(path, len(image.raw)) == sha(image.raw)
    good = {c.sha256 for c in index.data_chunks}
    assert all(digest in good for _, digest in writes)  # nothing unverified reached the disk
    transfer = source.report()
    assert session.chunk_gets == {order[1]: 1} and transfer.chunks_http == 1
    assert transfer.bytes_http == len(image.frames[order[1]]) and source.tally.bad_frames == 1


def test_join_refused_or_no_multicast_everything_by_http(tmp_path: Path) -> None:
    image = image_with_repeats()
    frames = frames_of(image)
    for api, reason in [
        (FakeApi(refuse=True), "join refused: ProvisionError: POST /api/v1/runs/run-1/multicast: HTTP 404"),
        (FakeApi(), "no multicast: no datagram within 0.3 s of joining"),
    ]:
        target = sparse_file(tmp_path / "disk.img", len(image.raw))
        report, source, session, receiver = write(image, target, [], api)
        transfer = source.report()
        assert report.ok and receiver.closed and transfer.left_because and transfer.left_because.startswith(reason)
        assert (transfer.chunks_multicast, transfer.chunks_http) == (0, len(frames))
        assert transfer.bytes_http == sum(map(len, frames)) and set(session.chunk_gets.values()) == {1}
        assert [c.event for c in api.calls] == (["join"] if api.refuse else ["join", "leave"])


def test_memory_bound_held_while_the_writer_is_slow(tmp_path: Path) -> None:
    image = image_with_repeats()
    frames = frames_of(image)
    index = read_index(image.index)
    limit = 3 * len(frames[0])
    target = sparse_file(tmp_path / "disk.img", len(image.raw))
    report, source, _, _ = write(image, target, list(stream(frames, index.digest, chunks=2 * len(frames))), FakeApi(),
                                 limits=Limits(bytes=limit))  # fmt: skip
    assert report.ok and source.reassembly is not None and source.reassembly.held == 0  # all released
    transfer = source.report()
    assert transfer.chunks_multicast + transfer.chunks_http == len(frames)
    assert max(pieces_of(len(f)) for f in frames) * MAX_PAYLOAD < limit


def test_a_failed_write_stops_the_listener_and_leaves(tmp_path: Path) -> None:
    image = image_with_repeats()
    index = read_index(image.index)
    order = carousel_order(index.chunks)
    bad = bytearray(image.plain[order[0]])
    bad[5] ^= 1
    d16 = bytes.fromhex(index.digest)[:16]
    datagrams = [encode(p) for p in pieces(frame(bytes(bad)), digest=d16, pass_number=0, chunk=0)]
    receiver = ListReceiver(datagrams)  # then silence: only the write's failure can end the listening
    api = FakeApi()
    source = MulticastSource(plan_of(index), index, run=RUN, token=TOKEN, api=api, open_receiver=lambda p: receiver,
                             timeouts=Timeouts(join=60, idle=60))  # fmt: skip
    session = FakeSession(image)
    session.fault(order[0], "404")  # the HTTP fetch of the wrong frame's chunk is refused: the write fails
    with pytest.raises(HttpRefused):
        write_image(SERVER, index, sparse_file(tmp_path / "disk.img", len(image.raw)), session=session, retry=FAST,
                    source=source)  # fmt: skip
    closer = threading.Thread(target=source.close, daemon=True)
    closer.start()
    closer.join(30.0)  # generous, and half the 60 s a listener not stopped would wait for silence
    assert not closer.is_alive() and receiver.closed
    assert [c.event for c in api.calls] == ["join", "leave"] and api.calls[-1].reason == "stopped"


def test_a_frame_with_many_gaps_is_repaired_by_exactly_its_gaps_in_one_request(tmp_path: Path) -> None:
    """Scattered loss in one frame (every other datagram of its first 40): exactly the missing ranges, all in one
    request (a multipart answer), never one range from the first gap to the last (the whole frame at 5 % loss);
    a frame with one gap: a plain range."""
    image = image_with_repeats()
    index = read_index(image.index)
    frames = frames_of(image)
    order = carousel_order(index.chunks)
    datagrams = list(stream(frames, index.digest, chunks=len(frames)))
    of = [i for i, d in enumerate(datagrams) if decode(d).chunk in (2, 4)]
    lost = {i for i in of if decode(datagrams[i]).chunk == 2 and i % 2 and decode(datagrams[i]).offset < 40 * 1400}
    lost |= {i for i in of if decode(datagrams[i]).chunk == 4 and decode(datagrams[i]).offset == 2 * 1400}
    target = sparse_file(tmp_path / "disk.img", len(image.raw))
    report, source, session, _ = write(image, target, [d for i, d in enumerate(datagrams) if i not in lost], FakeApi())
    assert sha256_file(target, len(image.raw)) == sha(image.raw) and report.ok
    gaps = sorted(decode(datagrams[i]).offset for i in lost if decode(datagrams[i]).chunk == 2)
    assert 16 < len(gaps) <= MAX_RANGES
    asked = [(a, b) for s, a, b in session.ranges if s == order[2]]
    assert asked == [(gap, gap + MAX_PAYLOAD - 1) for gap in gaps]  # each gap alone, nothing between
    assert [(a, b) for s, a, b in session.ranges if s == order[4]] == [(2 * 1400, 3 * 1400 - 1)]
    assert session.range_gets == 2
    transfer = source.report()
    data = len(lost) * MAX_PAYLOAD  # and each multipart part's delimiter and headers, under 128 bytes
    assert transfer.chunks_http == 0 and data < transfer.repair_bytes < data + 128 * len(gaps)


def test_more_gaps_than_one_request_asks_for_take_several() -> None:
    length = (2 * MAX_RANGES + 3) * 2 * MAX_PAYLOAD
    whole = bytes(random.Random(5).randbytes(length))
    pieces = {at: whole[at : at + MAX_PAYLOAD] for at in range(0, length, 2 * MAX_PAYLOAD)}  # every other one
    image = SimpleNamespace(frames={"ab" * 32: whole})
    session = FakeSession(cast(FakeImage, image))
    fetcher = SimpleNamespace(session=session, chunk_url=lambda sha: f"{SERVER}/chunks/{sha}", policy=FAST)
    frame, fetched = fetch_ranges(cast(Fetcher, fetcher), Repair(0, "ab" * 32, length, pieces))
    assert frame == whole and session.range_gets == 3 and len(session.ranges) == 2 * MAX_RANGES + 3
    assert fetched > length // 2  # the multipart answers' bytes: the gaps and each part's headers


class EndlessResponse:
    """A 206 with the right Content-Range whose body never ends (a hostile or broken server)."""

    status_code = 206

    def __init__(self, content_range: str) -> None:
        self.headers = {"Content-Range": content_range}
        self.read = 0

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        while True:
            self.read += chunk_size
            yield bytes(chunk_size)

    def close(self) -> None:
        pass


def test_a_range_body_longer_than_asked_is_not_read_to_its_end() -> None:
    event = Repair(0, "ab" * 32, 3 * MAX_PAYLOAD, {0: b"x" * MAX_PAYLOAD})
    responses: list[EndlessResponse] = []

    class Session:
        def get(self, url: str, **kw: object) -> EndlessResponse:
            responses.append(EndlessResponse(f"bytes {MAX_PAYLOAD}-{3 * MAX_PAYLOAD - 1}/{3 * MAX_PAYLOAD}"))
            return responses[-1]

    fetcher = SimpleNamespace(session=Session(), chunk_url=lambda sha: f"{SERVER}/chunks/{sha}", policy=FAST)
    with pytest.raises(RepairFailed, match="bytes for bytes 1400-4199"):
        fetch_ranges(cast(Fetcher, fetcher), event)
    assert [r.read for r in responses] == [1 << 20]


def test_a_listener_that_cannot_start_stops_the_keepalive_and_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = image_with_repeats()
    start = threading.Thread.start

    def refuse_listener(thread: threading.Thread) -> None:
        if thread.name == "agent-multicast":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_listener)
    target = sparse_file(tmp_path / "disk.img", len(image.raw))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        write(image, target, [], api := FakeApi())
    monkeypatch.undo()
    assert [c.event for c in api.calls] == ["join", "leave"]
    assert not [t for t in threading.enumerate() if t.name == "agent-keepalive"]  # no beat keeps it joined


class BrokenReceiver(ListReceiver):
    """A receiver whose drop count cannot be read (and, with ``close_fails``, whose close fails too)."""

    def __init__(self, datagrams: list[bytes], close_fails: bool) -> None:
        super().__init__(datagrams)
        self.close_fails = close_fails

    def drops(self) -> int | None:
        raise OSError(9, "Bad file descriptor")

    def close(self) -> None:
        super().close()
        if self.close_fails:
            raise OSError(9, "Bad file descriptor")


@pytest.mark.parametrize("close_fails", [False, True])
def test_close_closes_and_leaves_whatever_fails(
    tmp_path: Path, close_fails: bool, caplog: pytest.LogCaptureFixture
) -> None:
    image = image_with_repeats()
    index = read_index(image.index)
    order = carousel_order(index.chunks)
    bad = bytearray(image.plain[order[0]])
    bad[5] ^= 1  # a wrong frame, then silence: only the write's failure ends the listening
    d16 = bytes.fromhex(index.digest)[:16]
    receiver = BrokenReceiver([encode(p) for p in pieces(frame(bytes(bad)), digest=d16, pass_number=0, chunk=0)],
                              close_fails)  # fmt: skip
    api = FakeApi()
    source = MulticastSource(plan_of(index), index, run=RUN, token=TOKEN, api=api, open_receiver=lambda p: receiver,
                             timeouts=Timeouts(join=60, idle=60))  # fmt: skip
    session = FakeSession(image)
    session.fault(order[0], "404")  # the HTTP fetch of the wrong frame's chunk is refused: the write fails
    with pytest.raises(HttpRefused):
        write_image(SERVER, index, sparse_file(tmp_path / "disk.img", len(image.raw)), session=session, retry=FAST,
                    source=source)  # fmt: skip
    source.close()
    assert receiver.closed and [c.event for c in api.calls] == ["join", "leave"]
    assert "cannot read the kernel's drop count: OSError" in caplog.text
    assert ("cannot close the socket" in caplog.text) is close_fails


class OneAnswer:
    """A session that answers every GET with one scripted response."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.response = (status, body, headers)

    def get(self, url: str, **kw: object) -> object:
        status, body, headers = self.response
        return SimpleNamespace(status_code=status, headers=headers, iter_content=lambda n: iter([body]),
                               close=lambda: None)  # fmt: skip


def test_a_server_that_ignores_ranges_sends_the_whole_frame_and_a_short_answer_is_refused() -> None:
    whole = random.Random(3).randbytes(4 * MAX_PAYLOAD)
    event = Repair(
        0, "ab" * 32, len(whole), {0: whole[:MAX_PAYLOAD], 2 * MAX_PAYLOAD: whole[2 * MAX_PAYLOAD : 3 * MAX_PAYLOAD]}
    )

    def fetch(session: OneAnswer) -> tuple[bytes, int]:
        fetcher = SimpleNamespace(session=session, chunk_url=lambda sha: f"{SERVER}/chunks/{sha}", policy=FAST)
        return fetch_ranges(cast(Fetcher, fetcher), event)

    assert fetch(OneAnswer(200, whole, {})) == (whole, len(whole))
    one_part = b"--b\r\nContent-Range: bytes 1400-2799/5600\r\n\r\n" + whole[1400:2800] + b"\r\n--b--\r\n"
    with pytest.raises(RepairFailed, match="lacks bytes 4200-5599"):
        fetch(OneAnswer(206, one_part, {"Content-Type": "multipart/byteranges; boundary=b"}))
    with pytest.raises(RepairFailed, match="HTTP 200"):
        fetch(OneAnswer(200, whole[:-1], {}))
