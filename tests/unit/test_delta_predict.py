"""Delta re-imaging's prediction (provision.wire.delta.predict): a pure function of two indexes' chunks and the
stored sizes; the plan's ``held`` on the wire (left out when None, read back)."""

from __future__ import annotations

from provision.wire.api import Plan
from provision.wire.delta import HeldVersion, predict
from provision.wire.index import Chunk

SIZE = 4096
A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def chunks(*shas: str | None, size: int = SIZE, last: int | None = None) -> list[Chunk]:
    found = [Chunk(i, i * size, size, sha) for i, sha in enumerate(shas)]
    if last is not None:
        found[-1] = Chunk(len(shas) - 1, (len(shas) - 1) * size, last, shas[-1])
    return found


def test_a_blank_disk_needs_the_whole_version_and_a_repeated_chunk_downloads_once() -> None:
    p = predict([], chunks(A, None, B, A), {A: 100, B: 200})
    assert (p.chunks, p.bytes, p.download) == (3, 3 * SIZE, 300)
    assert (p.total_chunks, p.total_bytes, p.total_download) == (3, 3 * SIZE, 300)
    assert p.share == 1.0


def test_only_the_chunks_that_differ_at_the_same_offset_are_predicted() -> None:
    held = chunks(A, B, C, None)
    new = chunks(A, D, C, B)  # chunk 1 changed, chunk 3 was a hole and now holds B (B is stored, but not there)
    p = predict(held, new, {A: 10, B: 20, C: 30, D: 40})
    assert (p.chunks, p.bytes, p.download) == (2, 2 * SIZE, 60)
    assert (p.total_chunks, p.total_download) == (4, 100)
    assert p.share == 0.6


def test_the_same_version_needs_nothing_and_a_moved_chunk_is_fetched() -> None:
    same = chunks(A, B, None)
    assert predict(same, same, {}).chunks == 0 and predict(same, same, {}).download == 0
    moved = predict(chunks(A, B), chunks(B, A), {A: 1, B: 2})  # right bytes, wrong offsets
    assert (moved.chunks, moved.download) == (2, 3)


def test_lengths_and_chunk_sizes_must_match_and_unknown_sizes_count_their_plain_length() -> None:
    held = chunks(A, B, last=1000)  # the held disk was smaller: its last chunk shorter
    new = chunks(A, B, C)
    p = predict(held, new, {})
    assert (p.chunks, p.bytes, p.download) == (2, 2 * SIZE, 2 * SIZE)
    other = predict(chunks(A, A, size=2 * SIZE), chunks(A, A, A, A), {A: 5})  # another chunk size
    assert other.chunks == 4 and other.download == 5


def test_a_version_with_no_data_has_share_zero() -> None:
    assert predict([], chunks(None, None), {}).share == 0.0


def test_the_plan_carries_held_only_when_there_is_one() -> None:
    base = {"image": "educ", "version": "v2", "digest": D}
    assert "held" not in Plan.from_dict(base).to_dict()
    held = HeldVersion("educ", "v1", A, "run1", chunks=2, bytes=8192, download=60, target="/dev/sda")
    plan = Plan.from_dict({**base, "held": held.to_dict()})
    assert plan.held == held and plan.to_dict()["held"]["download"] == 60
    assert "target" not in HeldVersion("educ", "v1", A, "run1", 0, 0, 0).to_dict()
