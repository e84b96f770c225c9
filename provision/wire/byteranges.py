"""Byte ranges of a chunk's stored frame over HTTP (RFC 9110 section 14), as the multicast agent asks for the
pieces of a frame it missed and ``GET /chunks/<sha256>`` answers: written and read here once, for both sides.

- ``range_header(ranges)``: ``bytes=A-B,C-D,...`` (the agent);
- ``parse_ranges(header, size)``: the ranges a server serves, clipped to the frame, or None for the whole frame:
  no header, a form it does not serve (a suffix ``-N``, a reversed range, anything malformed), more than
  ``MAX_RANGES`` ranges, or ranges out of order, overlapping or touching (RFC 9110's advice: a server may
  ignore ranges that would make the answer larger than the frame, or many small overlapping ones, a known
  denial of service). ``BadRanges`` (416) when a range starts at or past the end;
- one range is a plain 206 with ``Content-Range``; several are ``multipart/byteranges``: ``part_head`` and
  ``CLOSE`` frame each part, ``multipart_length`` is the body's Content-Length (the server);
- ``boundary_of(content_type)`` and ``parse_multipart(body, boundary, size)`` read the answer back (the agent):
  each part's ``Content-Range`` and exactly that many bytes, anything else ``BadRanges``.

Ranges are ``(first, last)`` inclusive, as in the headers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_RANGES = 64  # ranges one request may ask for (more: the whole frame; the agent asks for at most this many)
MULTIPART = "multipart/byteranges"
_SPEC = re.compile(r"([0-9]+)-([0-9]*)", re.ASCII)
_UNIT = re.compile(r"\s*bytes\s*=(.*)", re.ASCII | re.IGNORECASE | re.DOTALL)
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})", re.ASCII)
_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,70})"|([0-9A-Za-z\'()+_,./:=?-]{1,70}))', re.ASCII | re.IGNORECASE)
_FAR = 1 << 63  # a position past every frame: a longer number is not converted (int() refuses 4300 digits)
Ranges = list[tuple[int, int]]


class BadRanges(ValueError):
    """A range past the end (the server's 416), or an answer that is not the ranges asked (the agent)."""


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _FAR


def range_header(ranges: Sequence[tuple[int, int]]) -> str:
    return "bytes=" + ",".join(f"{first}-{last}" for first, last in ranges)


def parse_ranges(header: str | None, size: int) -> Ranges | None:
    """The ranges of ``header`` to serve from a frame of ``size`` bytes (see the module), or None."""
    unit = None if header is None else _UNIT.fullmatch(header)
    if unit is None:
        return None
    specs = unit[1].split(",")
    if len(specs) > MAX_RANGES:
        return None
    ranges: Ranges = []
    for spec in specs:
        found = _SPEC.fullmatch(spec.strip(" \t"))
        if found is None:
            return None
        first, last = _position(found[1]), (_position(found[2]) if found[2] else size - 1)
        if first >= size:
            raise BadRanges(f"range starts at {first}, the frame has {size} bytes")
        if last < first or (ranges and first <= ranges[-1][1] + 1):
            return None
        ranges.append((first, min(last, size - 1)))
    return ranges


def content_range(first: int, last: int, size: int) -> str:
    return f"bytes {first}-{last}/{size}"


def part_head(boundary: str, first: int, last: int, size: int, content_type: str, *, leading: bool) -> bytes:
    """The delimiter and headers before one part's bytes (``leading``: the first part, no CRLF before it)."""
    crlf = "" if leading else "\r\n"
    return (f"{crlf}--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: {content_range(first, last, size)}\r\n\r\n").encode("ascii")  # fmt: skip


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def multipart_length(ranges: Sequence[tuple[int, int]], boundary: str, size: int, content_type: str) -> int:
    heads = sum(len(part_head(boundary, a, b, size, content_type, leading=i == 0)) for i, (a, b) in enumerate(ranges))
    return heads + sum(b - a + 1 for a, b in ranges) + len(closing(boundary))


def boundary_of(content_type: str | None) -> str | None:
    """The boundary of a ``multipart/byteranges`` Content-Type, else None."""
    if content_type is None or content_type.split(";")[0].strip().lower() != MULTIPART:
        return None
    found = _BOUNDARY.search(content_type)
    return None if found is None else (found[1] or found[2])


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """(first, last, size) of ``bytes A-B/N``, or None."""
    found = None if value is None else _CONTENT_RANGE.fullmatch(value.strip())
    if found is None:
        return None
    first, last, size = (int(x) for x in found.groups())
    return (first, last, size) if first <= last < size else None


def parse_multipart(body: bytes, boundary: str, size: int) -> dict[int, bytes]:
    """The parts of a ``multipart/byteranges`` body, ``{first: bytes}``, each of exactly its Content-Range's
    length and for a frame of ``size`` bytes; BadRanges naming what is wrong otherwise. Read by lengths, never
    by searching for the boundary (a frame's bytes may hold it)."""
    delimiter = b"--" + boundary.encode("ascii")
    at = body.find(delimiter)  # a preamble, if any, is skipped
    if at < 0:
        raise BadRanges("multipart answer without its boundary")
    parts: dict[int, bytes] = {}
    while True:
        at += len(delimiter)
        if body[at : at + 2] == b"--":
            return parts
        if body[at : at + 2] != b"\r\n":
            raise BadRanges(f"multipart answer: no line end after the boundary at byte {at}")
        end = body.find(b"\r\n\r\n", at)
        if end < 0 or end - at > 1024:
            raise BadRanges(f"multipart answer: part headers at byte {at} do not end")
        headers = dict(_header(line) for line in body[at + 2 : end].split(b"\r\n") if line)
        found = parse_content_range(headers.get("content-range"))
        if found is None or found[2] != size:
            raise BadRanges(f"multipart answer: part at byte {at} has Content-Range {headers.get('content-range')!r}"
                            f" for a frame of {size} bytes")  # fmt: skip
        first, last, _ = found
        start = end + 4
        data = body[start : start + last - first + 1]
        if len(data) != last - first + 1 or body[start + len(data) : start + len(data) + 2] != b"\r\n":
            raise BadRanges(f"multipart answer: part {first}-{last} is cut short or longer than said")
        parts[first] = data
        at = start + len(data) + 2
        if body[at : at + len(delimiter)] != delimiter:
            raise BadRanges(f"multipart answer: no boundary after part {first}-{last}")


def _header(line: bytes) -> tuple[str, str]:
    name, _, value = line.decode("latin-1").partition(":")
    return name.strip().lower(), value.strip()
