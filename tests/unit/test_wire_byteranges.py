"""Byte ranges of a frame (provision.wire.byteranges): what ``GET /chunks/<sha256>`` serves on hostile headers,
and the multipart answer written and read back, also by Python's own MIME parser."""

from __future__ import annotations

import email.parser
import random

import pytest

from provision.wire.byteranges import (
    MAX_RANGES,
    BadRanges,
    boundary_of,
    closing,
    multipart_length,
    parse_content_range,
    parse_multipart,
    parse_ranges,
    part_head,
    range_header,
)

SIZE = 100
MANY = [(i * 3, i * 3 + 1) for i in range(MAX_RANGES)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", [(0, 99)]),
        ("bytes=5-", [(5, 99)]),
        (" BYTES = 1-2 ", [(1, 2)]),
        ("bytes=10-1000", [(10, 99)]),
        ("bytes=0-" + "9" * 5000, [(0, 99)]),  # longer than int() converts: clipped, not an error
        ("bytes=" + "0" * 30 + "7-9", [(7, 9)]),  # leading zeros are still the number
        ("bytes=1-2,4-5", [(1, 2), (4, 5)]),
        ("bytes=0-0, 2-3,\t90-", [(0, 0), (2, 3), (90, 99)]),
        (
            range_header([(i * 3, i * 3 + 1) for i in range(MAX_RANGES)]),
            [(i * 3, i * 3 + 1) for i in range(MAX_RANGES)],
        ),
    ],
)
def test_ranges_are_clipped_to_the_frame(header: str, expected: list[tuple[int, int]]) -> None:
    assert parse_ranges(header, 3 * MAX_RANGES if len(expected) == MAX_RANGES else SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [None, "bytes=-5", "items=0-1", "bytes=9-3", "bytes=1 -2", "bytes=-", "bytes=", "bytes=1-2,",
     "bytes=\xb2-", "bytes=\u0663-5", "bytes=1-\xb2",  # superscript two, Arabic-Indic three: not ASCII digits
     "bytes=4-5,1-2", "bytes=1-5,3-8", "bytes=1-2,3-4",  # out of order, overlapping, touching: one would do
     "bytes=0-0,0-0", range_header([(i * 3, i * 3 + 1) for i in range(MAX_RANGES + 1)])],  # too many
)  # fmt: skip
def test_other_forms_get_the_whole_frame(header: str | None) -> None:
    assert parse_ranges(header, 1000) is None


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=" + "9" * 5000 + "-", "bytes=1-2,100-"])
def test_a_range_past_the_end_is_refused(header: str) -> None:
    with pytest.raises(BadRanges, match="range starts at"):
        parse_ranges(header, SIZE)


def multipart(frame: bytes, ranges: list[tuple[int, int]], boundary: str) -> bytes:
    return b"".join(
        part_head(boundary, a, b, len(frame), "application/zstd", leading=i == 0) + frame[a : b + 1]
        for i, (a, b) in enumerate(ranges)
    ) + closing(boundary)


def test_a_multipart_answer_reads_back_as_written_and_as_mime_says() -> None:
    boundary = "3f9a" * 8
    frame = random.Random(1).randbytes(5000)
    frame = frame[:1000] + f"\r\n--{boundary}--\r\n".encode() + frame[1000:]  # the boundary inside the bytes
    ranges = [(0, 9), (990, 1100), (4000, len(frame) - 1)]
    body = multipart(frame, ranges, boundary)
    assert len(body) == multipart_length(ranges, boundary, len(frame), "application/zstd")
    content_type = f"multipart/byteranges; boundary={boundary}"
    assert boundary_of(content_type) == boundary == boundary_of(f'Multipart/ByteRanges; boundary="{boundary}"')
    assert parse_multipart(body, boundary, len(frame)) == {a: frame[a : b + 1] for a, b in ranges}
    # a MIME parser searches for the boundary (the server's is 128 random bits: never in a frame by chance)
    frame = random.Random(2).randbytes(5000)
    body = multipart(frame, ranges, boundary)
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = message.get_payload()
    assert isinstance(parts, list) and len(parts) == 3
    for (a, b), part in zip(ranges, parts, strict=True):
        assert part["Content-Range"] == f"bytes {a}-{b}/{len(frame)}"
        assert part.get_payload(decode=True) == frame[a : b + 1]


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b.replace(b"--bnd\r\n", b"--bnd  ", 1), "no line end"),
        (lambda b: b.replace(b"/5000", b"/5001", 1), "Content-Range"),
        (lambda b: b.replace(b"bytes 0-9/", b"bytes 0-19/", 1), "cut short or longer"),
        (lambda b: b[:-12], "no boundary after part|cut short"),
        (lambda b: b.replace(b"--bnd", b"--xxx"), "without its boundary"),
        (lambda b: b.replace(b"\r\n\r\n", b"\r\n" + b"X-Pad: y\r\n" * 200 + b"\r\n", 1), "do not end"),
    ],
)
def test_a_damaged_multipart_answer_is_refused(damage: object, match: str) -> None:
    frame = bytes(range(250)) * 20
    body = multipart(frame, [(0, 9), (100, 199)], "bnd")
    with pytest.raises(BadRanges, match=match):
        parse_multipart(damage(body), "bnd", len(frame))  # type: ignore[operator]


def test_content_range_and_boundary_of_other_answers() -> None:
    assert parse_content_range("bytes 1-2/3") == (1, 2, 3)
    assert parse_content_range("bytes 2-1/3") is None and parse_content_range("bytes 1-3/3") is None
    assert parse_content_range("bytes */3") is None and parse_content_range(None) is None
    assert boundary_of("application/zstd") is None and boundary_of("multipart/byteranges") is None
    assert boundary_of(None) is None
