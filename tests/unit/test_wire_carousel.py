"""The carousel's datagram framing and chunk order (provision.wire.carousel)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from provision.errors import InvalidPayload
from provision.wire import carousel
from provision.wire.api import ImageAnswer, Plan
from provision.wire.carousel import HEADER, MAX_PAYLOAD, BadDatagram, MulticastPlan, Piece, TransferReport
from provision.wire.index import Chunk

DIGEST = hashlib.sha256(b"version").hexdigest()
OTHER = hashlib.sha256(b"other").hexdigest()


def test_a_frame_round_trips_through_datagrams_of_at_most_1400_bytes() -> None:
    frame = bytes(range(256)) * 20  # 5120 bytes: 4 pieces, the last one short
    d16 = carousel.digest16(DIGEST)
    pieces = carousel.pieces(frame, digest=d16, pass_number=7, chunk=3)
    datagrams = [carousel.encode(p) for p in pieces]
    assert [len(d) - HEADER.size for d in datagrams] == [1400, 1400, 1400, 920]
    assert HEADER.size == 40 and max(len(d) for d in datagrams) + 28 <= 1500
    decoded = [carousel.decode(d, d16) for d in datagrams]
    assert decoded == pieces
    assert b"".join(p.payload for p in sorted(decoded, key=lambda p: p.offset)) == frame
    assert {(p.pass_number, p.chunk, p.frame_length) for p in decoded} == {(7, 3, 5120)}


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d[:39], "shorter than the 40-byte header"),
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: d[:4] + b"\x02" + d[5:], "format 2"),
        (lambda d: d + b"!", "payload length"),
        (lambda d: d[:-1], "payload length"),
        (lambda d: d[:36] + (10).to_bytes(4, "big") + d[40:], "outside frame"),  # frame shorter than the piece
        (lambda d: d[:8] + carousel.digest16(OTHER) + d[24:], "listening for"),  # another version's datagram
    ],
)
def test_a_bad_or_foreign_datagram_is_refused_with_why(mutate, why: str) -> None:
    d16 = carousel.digest16(DIGEST)
    good = carousel.encode(Piece(d16, 0, 0, 0, 100, b"x" * 100))
    with pytest.raises(BadDatagram, match=why):
        carousel.decode(mutate(good), d16)


def test_the_sender_cannot_encode_what_a_receiver_drops() -> None:
    d16 = carousel.digest16(DIGEST)
    for bad in (
        Piece(d16, 0, 0, 0, 10, b""),
        Piece(d16, 0, 0, 5, 10, b"x" * 6),
        Piece(d16, 0, 0, 0, 2000, b"x" * 1401),
    ):
        with pytest.raises(ValueError, match="out of bounds"):
            carousel.encode(bad)
    assert MAX_PAYLOAD == 1400


def test_carousel_order_is_distinct_data_chunks_in_index_order() -> None:
    a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    chunks = [Chunk(0, 0, 4, b), Chunk(1, 4, 4, None), Chunk(2, 8, 4, a), Chunk(3, 12, 4, b)]
    assert carousel.carousel_order(chunks) == [b, a]


def test_the_messages_check_their_fields() -> None:
    plan = MulticastPlan(group="239.255.18.1", port=9000, digest=DIGEST, chunks=2, rate=11_250_000)
    assert MulticastPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(InvalidPayload):
        MulticastPlan.from_dict({**plan.to_dict(), "group": "198.18.0.1"})  # not a multicast address
    report = TransferReport(mode="multicast", bytes_multicast=10, bytes_http=2, repair_bytes=2)
    assert TransferReport.from_dict(report.to_dict()) == report


def test_a_plan_by_http_has_no_multicast_key_an_older_agent_would_refuse() -> None:
    plan = Plan(image="img", version="L", digest=DIGEST, index_url="/images/img/L/index.json", wipe="zero")
    answer = ImageAnswer(run="r1", plan=plan).to_dict()
    assert "multicast" not in answer["plan"] and Plan.from_dict(answer["plan"]) == plan
    with pytest.raises(InvalidPayload):  # what an agent does with a key its Plan does not have
        Plan.from_dict({**answer["plan"], "carousel": None})
    carousel_plan = MulticastPlan(group="239.255.18.1", port=9000, digest=DIGEST, chunks=2, rate=11_250_000)
    with_multicast = replace(plan, multicast=carousel_plan)
    assert Plan.from_dict(ImageAnswer(run="r1", plan=with_multicast).to_dict()["plan"]) == with_multicast
