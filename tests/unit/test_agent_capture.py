"""The agent's capture step against a fake capture server (tests/support/capture_fake.py): no sockets, no
subprocess. A disk file with chunks of data, zeros and free space (the file systems' free ranges given by a fake
layout): holes, offers in batches, free space zeroed and never read, only the missing chunks uploaded, a disk that
changes under the capture, a failed upload, and the disk's sha256 as sent."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path
from typing import Any

import pytest
import zstandard

from provision.agent.capture.freespace import FreeSpace, Read
from provision.agent.capture.reader import ChunkReader, DiskReader, Layout, read_layout
from provision.agent.capture.send import DiskChanged, send_disk
from provision.agent.capture.step import capture_disk
from provision.agent.client import ApiRefused, ServerApi
from provision.agent.errors import TargetError
from provision.agent.main import EXIT_DONE, EXIT_FAILED, Agent, AgentConfig
from provision.agent.screen import Console
from provision.wire.capture import CapturePlan
from tests.support.agent import FAST
from tests.support.capture_fake import MAC, SERVER, TOKEN, CaptureServer
from tests.support.paths import SAMPLE_PROBE

CHUNK = 65536
COUNT = 21  # chunks of the disk (the last one short)
SIZE = COUNT * CHUNK - 4096
DATA = [0, 1, 2, 5, 6, 7, 9, 12, 13, 20]  # chunks holding random bytes (the others zeros)
SAME = (13, 2)  # chunk 13 holds chunk 2's bytes
PART = (CHUNK, 12 * CHUNK)  # partition 1: offset, size
FREE = ((5 * CHUNK, CHUNK), (6 * CHUNK + 4096, 8192), (9 * CHUNK, 2 * CHUNK))  # 5 wholly, 6 partly, 9 wholly


def raw_disk() -> bytearray:
    rng = random.Random(17)
    raw = bytearray(SIZE)
    for i in DATA:
        start = i * CHUNK
        raw[start : min(start + CHUNK, SIZE)] = rng.randbytes(min(CHUNK, SIZE - start))
    raw[SAME[0] * CHUNK : (SAME[0] + 1) * CHUNK] = raw[SAME[1] * CHUNK : (SAME[1] + 1) * CHUNK]
    return raw


def zero_freed(raw: bytearray) -> bytes:
    out = bytearray(raw)
    for start, length in FREE:
        out[start : start + length] = bytes(length)
    return bytes(out)


def chunk_shas(data: bytes) -> list[str | None]:
    pieces = [data[o : o + CHUNK] for o in range(0, len(data), CHUNK)]
    return [None if p.count(0) == len(p) else hashlib.sha256(p).hexdigest() for p in pieces]


def fake_layout(reader: DiskReader, run: str) -> Layout:
    fs = FreeSpace("ext4", PART[0], PART[1], 4096, FREE, label="root")
    return Layout(((1, *PART),), ((1, fs),), FREE)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    folder = tmp_path / "disks"
    folder.mkdir()
    (folder / "vda").write_bytes(raw_disk())
    (folder / "vda.json").write_text('{"model": "QEMU HARDDISK", "serial": "QM0001"}')
    return folder / "vda"


def plan(**over: Any) -> CapturePlan:
    return CapturePlan(**{"image": "educ", "chunk_size": CHUNK, "offer": 4, "level": 3, **over})


def capture(disk: Path, server: CaptureServer, workers: int = 3, **over: Any) -> Any:
    from provision.wire.probe import lsblk_disk

    api = ServerApi(SERVER, MAC, TOKEN, session=server, sleep=lambda s: None, deadline=1.0)
    found = lsblk_disk({"name": "vda", "type": "disk", "size": SIZE, "model": "QEMU HARDDISK", "serial": "QM0001"})
    assert found is not None
    return capture_disk("r1", plan(**over), [(found, disk)], set(), api=api, console=Console(None),
                        workers=workers, layout_of=fake_layout)  # fmt: skip


def test_chunks_are_offered_in_batches_and_holes_are_none(disk: Path) -> None:
    server = CaptureServer(CHUNK)
    answer = capture(disk, server)
    assert (answer.state, answer.reason) == ("done", "captured as 2026-12-07.1")
    expected = chunk_shas(zero_freed(raw_disk()))
    assert [o["first"] for o in server.offers] == [0, 4, 8, 12, 16, 20]
    assert [len(o["chunks"]) for o in server.offers] == [4, 4, 4, 4, 4, 1]
    assert server.positions == expected
    assert expected[5] is None and expected[9] is None and expected[3] is None  # free, free, zeros
    [done] = server.dones
    assert (done["chunks"], done["holes"], done["disk_size"], done["sector_size"]) == (COUNT, 13, SIZE, 512)
    assert (done["disk"], done["model"], done["serial"]) == (str(disk), "QEMU HARDDISK", "QM0001")
    assert done["filesystems"] == [{"partition": 1, "offset": CHUNK, "size": 12 * CHUNK, "fs": "ext4",
                                    "block_size": 4096, "free_bytes": 3 * CHUNK + 8192, "label": "root"}]  # fmt: skip
    assert done["uploaded_chunks"] == 7 and done["uploaded_bytes"] == server.frames > 0
    assert server.progress and server.progress[-1]["bytes_done"] == SIZE == server.progress[-1]["bytes_total"]
    assert {p["stage"] for p in server.progress} == {"capturing"}


def test_the_disk_s_sha256_is_the_disk_with_its_free_space_zeroed(disk: Path) -> None:
    server = CaptureServer(CHUNK)
    capture(disk, server)
    plain = zero_freed(raw_disk())
    assert server.dones[0]["sha256"] == hashlib.sha256(plain).hexdigest() != hashlib.sha256(raw_disk()).hexdigest()
    for i, sha in enumerate(server.positions):  # what the server holds is the zero-freed disk, chunk by chunk
        assert sha is None or server.held[sha] == plain[i * CHUNK : (i + 1) * CHUNK]
    assert plain[6 * CHUNK : 6 * CHUNK + 4096] == bytes(raw_disk()[6 * CHUNK : 6 * CHUNK + 4096])  # used part kept


def test_free_space_is_not_read(disk: Path) -> None:
    reads: list[tuple[int, int]] = []

    class Counting(DiskReader):
        def read_into(self, view: memoryview, offset: int) -> None:
            reads.append((offset, len(view)))
            super().read_into(view, offset)

    with Counting(disk) as reader:
        chunks = ChunkReader(reader, FREE, CHUNK)
        buf = bytearray(CHUNK)
        read = [chunks.chunk(i, buf)[0].read for i in range(chunks.count)]
    assert read[5] == read[9] == read[10] == 0 and read[0] == CHUNK and read[20] == SIZE - 20 * CHUNK
    assert read[6] == CHUNK  # a free gap shorter than GAP is read through (then zeroed)
    assert not [r for r in reads if 5 * CHUNK <= r[0] < 6 * CHUNK or 9 * CHUNK <= r[0] < 11 * CHUNK]
    wide = ((CHUNK * 4 + 4096, CHUNK * 4 - 8192),)  # chunk 4 .. 8 in 256 KiB chunks: a wide gap is not read
    with Counting(disk) as reader:
        reads.clear()
        big = ChunkReader(reader, wide, 4 * CHUNK)
        first, _ = big.chunk(1, bytearray(4 * CHUNK))
    assert reads == [(4 * CHUNK, 4096), (8 * CHUNK - 4096, 4096)] and first.read == 8192


def test_a_free_space_reader_that_fails_leaves_its_partition_whole_and_free_space_stays_inside() -> None:
    def parts(read: Read, size: int, ss: int) -> tuple[tuple[int, int, int], ...]:
        return ((1, 4096, 8192), (2, 16384, 8192))

    def free(read: Read, offset: int, size: int) -> FreeSpace:
        if offset == 16384:
            raise OSError(5, "Input/output error")
        return FreeSpace("vfat", offset, size, 512, ((0, 65536),))  # a wrong reader: beyond its partition

    layout = read_layout(lambda offset, length: bytes(length), 65536, 512, find_partitions=parts, find_free=free)
    assert layout.free == ((4096, 8192),) and layout.partitions == ((1, 4096, 8192), (2, 16384, 8192))
    [_, second] = layout.captured()
    assert (second.partition, second.fs, second.free_bytes) == (2, "unknown", 0)
    assert second.note == "free space not read: OSError: [Errno 5] Input/output error"


def test_only_the_missing_chunks_are_uploaded_once(disk: Path) -> None:
    plain = zero_freed(raw_disk())
    pieces = [plain[i * CHUNK : (i + 1) * CHUNK] for i in (0, 7)]
    held = {hashlib.sha256(piece).hexdigest(): piece for piece in pieces}
    server = CaptureServer(CHUNK, held=dict(held))
    capture(disk, server)
    data = {s for s in chunk_shas(plain) if s is not None}
    assert len(data) == 7  # 10 data chunks, 5 and 9 wholly free, 13 the same as 2
    assert sorted(server.uploads) == sorted(data - set(held)) and len(server.uploads) == len(set(server.uploads))
    assert server.dones[0]["uploaded_chunks"] == len(data) - 2
    again = CaptureServer(CHUNK, held=dict(server.held))  # a second capture of the same disk uploads nothing
    capture(disk, again)
    assert again.uploads == [] and again.dones[0]["uploaded_chunks"] == 0 and again.offers


def test_uploads_are_compressed_at_the_plan_s_level_and_bounded(disk: Path) -> None:
    server = CaptureServer(CHUNK)
    capture(disk, server, workers=2, level=19, offer=32)
    assert len(server.offers) == 1 and server.most_in_flight <= 2
    assert server.frames < sum(len(server.held[s]) for s in server.uploads)
    frame = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(server.held[server.uploads[0]])
    assert zstandard.ZstdDecompressor().decompress(frame) == server.held[server.uploads[0]]


def test_a_chunk_that_changes_between_its_offer_and_its_upload_fails_clearly(disk: Path) -> None:
    def write(body: dict[str, Any]) -> None:
        if body["first"] == 4:  # chunk 7 is rewritten after it was read, before it is read again for the upload
            with disk.open("r+b") as f:
                f.seek(7 * CHUNK + 100)
                f.write(b"changed")

    server = CaptureServer(CHUNK, on_offer=write)
    with pytest.raises(DiskChanged) as caught:
        capture(disk, server)
    assert "chunk 7 at offset 458752 changed since it was offered" in str(caught.value)
    assert caught.value.facts["chunk"] == 7 and not server.dones


def test_a_refused_upload_stops_the_capture(disk: Path) -> None:
    server = CaptureServer(CHUNK, upload_faults=[503, 503, 400])  # two retried, the third refused
    with pytest.raises(ApiRefused) as caught:
        capture(disk, server, workers=1)
    assert caught.value.status == 400 and "scripted 400" in caught.value.reason and not server.dones
    assert len(server.offers) <= 2  # the reader stopped soon after


def test_a_refused_last_upload_fails_the_capture_before_its_end(disk: Path) -> None:
    server = CaptureServer(CHUNK, upload_faults=[0] * 6 + [422])  # the 7th and last upload
    with pytest.raises(ApiRefused) as caught:
        capture(disk, server, workers=3)
    assert caught.value.status == 422 and len(server.uploads) == 6 and not server.dones


def test_a_read_error_stops_the_capture_with_its_facts(disk: Path) -> None:
    class Failing(DiskReader):
        def read_into(self, view: memoryview, offset: int) -> None:
            if offset >= 12 * CHUNK:
                raise TargetError(f"{self.path}: read of {len(view)} bytes at {offset} failed: Input/output error")
            super().read_into(view, offset)

    server = CaptureServer(CHUNK)
    api = ServerApi(SERVER, MAC, TOKEN, session=server, sleep=lambda s: None)
    with Failing(disk) as reader, pytest.raises(TargetError, match="at 786432 failed: Input/output error"):
        send_disk(api, "r1", plan(), ChunkReader(reader, FREE, CHUNK), workers=2)
    assert len(server.positions) <= 12 and not server.dones


def config(disk: Path, **over: Any) -> AgentConfig:
    return AgentConfig(**{"server": SERVER, "mac": MAC, "token": TOKEN, "probe_dir": SAMPLE_PROBE,
                          "disks_from": disk.parent, "retry": FAST, "once": True, "workers": 2, **over})  # fmt: skip


def hello(**over: Any) -> dict[str, Any]:
    return {"action": "capture", "run": "r1", "capture": {"image": "educ", "chunk_size": CHUNK, "offer": 8, **over}}


def test_the_agent_offers_captures_and_reboots_once_done(disk: Path, tmp_path: Path) -> None:
    server = CaptureServer(CHUNK, hello_answer=hello())
    api = ServerApi(SERVER, MAC, TOKEN, session=server, sleep=lambda s: None)
    screen = tmp_path / "tty"
    screen.write_text("")
    outcome = Agent(config(disk, screen=screen), api=api).run_once()
    assert (outcome.code, outcome.state, outcome.run) == (EXIT_DONE, "done", "r1")
    assert server.hellos[0]["capture"] is True and not server.reports
    assert server.dones[0]["sha256"] == hashlib.sha256(raw_disk()).hexdigest()  # no partition table: all sent
    assert server.dones[0]["filesystems"] == []
    assert "terminé" in screen.read_text()


def test_a_failed_upload_reports_the_run_failed(disk: Path) -> None:
    server = CaptureServer(CHUNK, hello_answer=hello(), upload_faults=[413])
    api = ServerApi(SERVER, MAC, TOKEN, session=server, sleep=lambda s: None)
    outcome = Agent(config(disk), api=api).run_once()
    assert (outcome.code, outcome.run) == (EXIT_FAILED, "r1") and not server.dones
    [report] = server.reports
    assert report["ok"] is False and report["reason"].startswith("the capture failed: ApiRefused: PUT ")
    assert "HTTP 413" in report["reason"] and report["error"]["type"] == "ApiRefused"


def test_a_capture_with_no_disk_to_read_reports_the_run_failed(disk: Path) -> None:
    server = CaptureServer(CHUNK, hello_answer=hello(target_disk={"name": "sdz"}))
    api = ServerApi(SERVER, MAC, TOKEN, session=server, sleep=lambda s: None)
    outcome = Agent(config(disk), api=api).run_once()
    assert outcome.code == EXIT_FAILED and not server.offers
    assert "the capture failed: NoTargetDisk: " in server.reports[0]["reason"]


def test_the_server_failing_the_capture_s_end_is_a_failed_outcome(disk: Path) -> None:
    server = CaptureServer(CHUNK, hello_answer=hello(), done_state="failed")
    api = ServerApi(SERVER, MAC, TOKEN, session=server, sleep=lambda s: None)
    outcome = Agent(config(disk), api=api).run_once()
    assert (outcome.code, outcome.state) == (EXIT_FAILED, "failed") and not server.reports


def test_uploads_run_in_parallel_with_the_reader_and_a_few_chunks_in_flight(disk: Path) -> None:
    release = threading.Event()
    waiting: list[int] = []
    seen: dict[str, int] = {}

    class Slow(CaptureServer):
        def put(self, url: str | bytes, data: Any = None, **kw: Any) -> Any:
            with self.lock:
                waiting.append(1)
            if not release.wait(5):
                raise AssertionError("never released")
            return super().put(url, data, **kw)

    server = Slow(CHUNK)

    def look() -> None:
        with server.lock:
            seen.update(waiting=len(waiting), offers=len(server.offers))
        release.set()

    threading.Timer(0.5, look).start()
    capture(disk, server, workers=3, offer=2)
    assert seen["waiting"] == 3  # three uploads at once, while ...
    assert seen["offers"] >= 3  # ... the reader went on, until workers + 2 chunks were in flight
    assert seen["offers"] < len(server.offers) == 11
