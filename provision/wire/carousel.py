"""The rack multicast contract (issue 16): the carousel's datagrams, its chunk order, and the agent API's
multicast messages. Standard library only: the server's sender and the live agent's receiver share it.

A version's carousel multicasts, in a loop, the version's *stored* chunks (each a zstd frame, exactly the bytes
``GET /chunks/<sha256>`` answers), in ``carousel_order``: the distinct data chunks in index order. Each frame is
cut into pieces of at most ``MAX_PAYLOAD`` bytes, each sent as one UDP datagram:

    offset  size  field
    0       4     magic b"PVC1"
    4       1     format version (1)
    5       1     flags (0; reserved)
    6       2     payload length (bytes after the header, <= MAX_PAYLOAD)
    8       16    the version's digest, first 16 bytes (a datagram of another version is dropped)
    24      4     pass number (the carousel's loop counter, from 0; wraps at 2**32)
    28      4     chunk number (position in carousel_order)
    32      4     offset of this piece in the chunk's frame
    36      4     the frame's whole length
    40      ...   payload

Network byte order. The header is not a credential: anyone on the imaging LAN can send a datagram. Nothing
received is trusted until the reassembled frame decodes to bytes whose sha256 is the chunk's in the index the
agent fetched over HTTP; a frame that fails is dropped whole and fetched by HTTP instead.

The API (``POST /api/v1/runs/{run}/multicast``, ``provision.wire.paths.run_multicast``): an agent whose plan has
``multicast`` joins the version's group, says ``join``, then ``keepalive`` at least every
``MulticastPlan.keepalive`` seconds while it listens, and ``leave`` when it stops listening (done, too slow, too
much loss). The sender of a version runs while at least one of its agents is joined and alive, and keeps its
position between listeners, so a newcomer starts mid-loop. The agent's figures come back in the run's
``Report.transfer`` (a ``TransferReport``).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from provision.wire.index import SHA256, Chunk
from provision.wire.schema import Message, rule

MAGIC = b"PVC1"
FORMAT = 1
HEADER = struct.Struct("!4sBBH16sIIII")  # 40 bytes
MAX_PAYLOAD = 1400  # bytes after the header: 40 + 1400 + 28 (IPv4 + UDP) fits a 1500-byte MTU
DIGEST_BYTES = 16
MAX_FRAME = 1 << 30  # a stored frame is at most a 4 MiB chunk, zstd-bounded; anything larger is forged

Transfer = Literal["auto", "multicast", "unicast"]  # a recipe's or the config's choice
TRANSFERS: tuple[Transfer, ...] = ("auto", "multicast", "unicast")


class BadDatagram(ValueError):
    """A datagram that is not one of ours, or not of the version listened to: dropped (and counted)."""


class Piece(NamedTuple):
    """One datagram: ``payload`` is bytes ``offset .. offset + len(payload)`` of chunk ``chunk``'s frame. (A named
    tuple: made for every datagram an agent receives, thousands a second, at a fifth of a frozen dataclass's cost.)"""

    digest16: bytes  # the version digest's first 16 bytes
    pass_number: int
    chunk: int
    offset: int
    frame_length: int
    payload: bytes


def digest16(digest: str) -> bytes:
    """The header's form of a version digest (64 hex characters)."""
    return bytes.fromhex(digest)[:DIGEST_BYTES]


def encode(piece: Piece) -> bytes:
    """The datagram of ``piece`` (checked: the sender never sends what a receiver would drop)."""
    length = len(piece.payload)
    if not 0 < length <= MAX_PAYLOAD or piece.offset + length > piece.frame_length or piece.frame_length > MAX_FRAME:
        raise ValueError(f"piece out of bounds: offset {piece.offset} + {length} of frame {piece.frame_length}")
    header = HEADER.pack(MAGIC, FORMAT, 0, length, piece.digest16, piece.pass_number & 0xFFFFFFFF,
                         piece.chunk, piece.offset, piece.frame_length)  # fmt: skip
    return header + piece.payload


def decode(datagram: bytes, expected: bytes | None = None) -> Piece:
    """The piece in ``datagram``; ``BadDatagram`` (with why) for anything malformed, or of another version than
    ``expected`` (a ``digest16``) when given."""
    if len(datagram) < HEADER.size:
        raise BadDatagram(f"{len(datagram)} bytes: shorter than the {HEADER.size}-byte header")
    magic, fmt, _flags, length, d16, pass_number, chunk, offset, frame_length = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise BadDatagram(f"magic {magic!r} is not {MAGIC!r}")
    if fmt != FORMAT:
        raise BadDatagram(f"format {fmt}, this agent reads {FORMAT}")
    if length != len(datagram) - HEADER.size or not 0 < length <= MAX_PAYLOAD:
        raise BadDatagram(f"payload length {length} but {len(datagram) - HEADER.size} bytes follow the header")
    if frame_length > MAX_FRAME or offset + length > frame_length:
        raise BadDatagram(f"piece {offset}+{length} outside frame of {frame_length} bytes")
    if expected is not None and d16 != expected:
        raise BadDatagram(f"version {d16.hex()}..., listening for {expected.hex()}...")
    return Piece(d16, pass_number, chunk, offset, frame_length, datagram[HEADER.size :])


def pieces(frame: bytes, *, digest: bytes, pass_number: int, chunk: int) -> list[Piece]:
    """``frame`` cut into datagram-sized pieces, in order."""
    return [
        Piece(digest, pass_number, chunk, start, len(frame), frame[start : start + MAX_PAYLOAD])
        for start in range(0, len(frame), MAX_PAYLOAD)
    ]


def carousel_order(chunks: Iterable[Chunk]) -> list[str]:
    """The sha256 of each distinct data chunk, in index order: chunk number N of a datagram is entry N here.
    Server and agent compute it from the same index, so the numbers need no table of their own."""
    seen: dict[str, None] = {}
    for chunk in chunks:
        if chunk.sha256 is not None:
            seen.setdefault(chunk.sha256, None)
    return list(seen)


def _multicast_group(value: str) -> str:
    address = ipaddress.IPv4Address(value)
    if not address.is_multicast:
        raise ValueError(f"{value} is not an IPv4 multicast address")
    return str(address)


@dataclass(frozen=True)
class MulticastPlan(Message):
    """Where a version's carousel is: the plan's ``multicast`` when the run's transfer is multicast."""

    group: str = field(metadata=rule(check=_multicast_group))
    port: int = field(metadata=rule(ge=1))
    digest: str = field(metadata=rule(pattern=SHA256.pattern))  # the version the carousel sends
    chunks: int = field(metadata=rule(ge=1))  # len(carousel_order(index)): one pass
    rate: int = field(metadata=rule(ge=1))  # bytes per second the sender paces to
    keepalive: int = field(default=10, metadata=rule(ge=1))  # seconds between the agent's keepalives, at most
    max_loss: float = field(default=0.2, metadata=rule(ge=0))  # lost share of datagrams above which it leaves


@dataclass(frozen=True)
class MulticastCall(Message):
    """An agent's ``join``, ``keepalive`` or ``leave`` for its run's carousel, with what it has so far."""

    omit_none = True

    token: str = field(metadata=rule(min_length=8, max_length=128))
    event: Literal["join", "keepalive", "leave"]
    chunks_done: int = field(default=0, metadata=rule(ge=0))
    bytes_received: int = field(default=0, metadata=rule(ge=0))
    reason: str | None = field(default=None, metadata=rule(max_length=200, clean_text=True))  # why it leaves


@dataclass(frozen=True)
class MulticastAnswer(Message):
    """``sending``: the carousel runs (false after a leave, or when the server stopped it); ``listeners``: agents
    joined now."""

    run: str
    sending: bool
    listeners: int = field(metadata=rule(ge=0))
    keepalive: int = field(default=10, metadata=rule(ge=1))


@dataclass(frozen=True)
class TransferReport(Message):
    """How a run's chunks came: what the report's ``transfer`` holds, recorded and shown per run."""

    omit_none = True

    mode: Literal["unicast", "multicast"]
    bytes_multicast: int = field(default=0, metadata=rule(ge=0))  # frame bytes of chunks taken from the carousel
    bytes_http: int = field(default=0, metadata=rule(ge=0))  # bytes fetched by HTTP (whole chunks and ranges)
    repair_bytes: int = field(default=0, metadata=rule(ge=0))  # of bytes_http: ranges fetched to complete frames
    chunks_multicast: int = field(default=0, metadata=rule(ge=0))
    chunks_http: int = field(default=0, metadata=rule(ge=0))
    datagrams: int = field(default=0, metadata=rule(ge=0))  # received and kept
    datagrams_lost: int = field(default=0, metadata=rule(ge=0))  # pieces never received while listening
    datagrams_dropped: int = field(default=0, metadata=rule(ge=0))  # malformed, other versions, duplicates
    seconds_listening: float = field(default=0.0, metadata=rule(ge=0))
    left_because: str | None = field(default=None, metadata=rule(max_length=200, clean_text=True))
