"""Frames from the carousel's pieces, in memory, bounded: no sockets, no threads of its own (``Reassembly``).

Each datagram is decoded (``provision.wire.carousel.decode``, of the plan's version only) and checked against
what the sender cuts: a piece starts at a multiple of ``MAX_PAYLOAD`` and is ``MAX_PAYLOAD`` long except the
frame's last; its chunk number is one of the carousel order's; its frame length is at most what zstd can make of
the chunk's plain length and the same for every piece of that frame (a frame whose length changes mid-way is
discarded whole and the chunk is left to HTTP). Anything else is dropped and counted.

Only the chunks the writer needs (``wanted``: not already right on disk) are kept; the others are only counted.
A frame whose pieces are all in is handed out (``Ready``) for a writer worker to decode and check against the
chunk's sha256 (nothing is trusted before that). A frame the carousel has moved past (two chunk numbers on)
with pieces missing is handed out as a ``Repair``: the pieces held and the byte ranges missing, fetched by HTTP
Range. Memory: at most ``Limits.partials`` frames in progress and ``Limits.bytes`` of payload held, counting the
frames handed out until the consumer ``release``s them; a piece over the bound is dropped and counted as lost
(a receiver whose writer falls behind sees its loss rise and leaves).

The frame an agent joins in the middle of (its first piece is not the frame's first) is not repaired: it is
held until the carousel comes round to it again a pass later, when its first pieces come, which one full cycle
waits for anyway. Repairing it at once by HTTP cost every joiner up to a frame of HTTP while the carousel was
sending, and on a link the carousel fills to 90 % a rack joining together overflowed it (measured: 8 agents
repairing at once, then 28 % of the datagrams lost and every agent left for HTTP).

Passes: the first piece kept after joining sets the start (its pass and chunk number); positions are counted
from there (pass wraps at 2**32). One full cycle is done once the position is a whole pass past the start (and
past the start chunk when its held frame is still missing pieces).
A piece more than a pass ahead of the carousel's position (a forged pass number, a piece of the pass before
the start, another server's carousel) is dropped: it would end the cycle and count a pass of loss at once.
Loss: pieces expected (each frame's length says how many; a chunk number skipped entirely counts the mean) vs
received, in all and over the last ``Limits.window`` expected pieces (``window_loss``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from provision.wire.carousel import MAX_PAYLOAD, BadDatagram, Piece, decode

PASS_MOD = 1 << 32
REORDER = 1  # chunk numbers a piece may come late before its frame is given up to repair


def frame_bound(length: int) -> int:
    """The largest frame a chunk of ``length`` plain bytes can be stored as (zstd's bound, with room)."""
    return length + (length >> 7) + 4096


def pieces_of(frame_length: int, offset: int = 0) -> int:
    """How many datagrams carry a frame from ``offset`` on."""
    return -(-(frame_length - offset) // MAX_PAYLOAD)


@dataclass(frozen=True)
class Limits:
    partials: int = 64  # frames in progress at once
    bytes: int = 64 << 20  # payload held: frames in progress, and handed out until released
    window: int = 2000  # expected pieces over which window_loss is measured


@dataclass(frozen=True)
class Ready:
    """Every piece of chunk ``number``'s frame: ``frame`` (not checked yet)."""

    number: int
    sha256: str
    frame: bytes

    @property
    def held(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class Repair:
    """Chunk ``number``'s frame in part: ``pieces`` (offset -> payload) held, ``missing`` to fetch by Range."""

    number: int
    sha256: str
    frame_length: int
    pieces: dict[int, bytes]

    @property
    def held(self) -> int:
        return sum(len(p) for p in self.pieces.values())

    @property
    def missing(self) -> list[tuple[int, int]]:
        """The frame's byte ranges not held, as (first, last) inclusive, adjacent pieces merged."""
        ranges: list[tuple[int, int]] = []
        for offset in range(0, self.frame_length, MAX_PAYLOAD):
            if offset in self.pieces:
                continue
            last = min(offset + MAX_PAYLOAD, self.frame_length) - 1
            if ranges and ranges[-1][1] + 1 == offset:
                ranges[-1] = (ranges[-1][0], last)
            else:
                ranges.append((offset, last))
        return ranges


Event = Ready | Repair


@dataclass
class _Partial:
    frame_length: int
    position: int  # where its last piece came
    pieces: dict[int, bytes] = field(default_factory=dict)
    count: int = 0  # pieces the whole frame has (pieces_of(frame_length))


@dataclass
class Counts:
    datagrams: int = 0  # kept (of the version, well formed, not duplicated)
    payload: int = 0  # their bytes after the header
    dropped: int = 0  # malformed, another version, duplicates, frames discarded
    overflow: int = 0  # pieces not kept for the memory bound (counted as lost too)
    expected: int = 0  # pieces the sender sent while listening (estimated for chunks skipped whole)
    lost: int = 0
    late: int = 0  # pieces of a chunk number already passed
    passes: int = 0  # whole passes listened


class Reassembly:
    """Pieces of one version's carousel in, ``Ready`` and ``Repair`` events out (see the module's docstring).

    ``order``: carousel_order of the index; ``lengths``: each entry's plain length; ``wanted``: the chunk
    numbers to keep; ``digest16``: the version's header digest. Not thread-safe, except ``release``."""

    def __init__(
        self, order: Sequence[str], lengths: Sequence[int], wanted: Iterable[int], digest16: bytes,
        limits: Limits = Limits(),
    ) -> None:  # fmt: skip
        if len(order) != len(lengths) or not order:
            raise ValueError(f"{len(order)} chunk numbers but {len(lengths)} lengths")
        self.order, self.lengths, self.digest16, self.limits = list(order), list(lengths), digest16, limits
        self._bounds = [frame_bound(n) for n in self.lengths]  # per chunk number: checked for every piece
        self.wanted = set(wanted)
        self.counts = Counts()
        self.http_only: set[int] = set()  # discarded frames: left to HTTP
        self._partials: dict[int, _Partial] = {}
        self._held = 0
        self._lock = threading.Lock()
        self.start: tuple[int, int] | None = None  # (pass, chunk number) of the first piece kept
        self._held_start: int | None = None  # the chunk number of the frame joined mid-way, held for a pass
        self._position = -1  # linear position (passes since start * len(order) + chunk) of the current chunk
        self._current: tuple[int, set[int], int] | None = None  # (position, offsets seen, pieces expected)
        self._window: list[tuple[int, int]] = []  # (expected, lost) per finished chunk position
        self._frames_seen = 0
        self._first_position = 0
        self._pieces_seen = 0

    # -- figures ---------------------------------------------------------------------------------------------
    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def release(self, nbytes: int) -> None:
        """A consumer is done with an event's bytes (thread-safe)."""
        with self._lock:
            self._held -= nbytes

    @property
    def cycle_done(self) -> bool:
        if self.start is None:
            return False
        waiting = self._held_start is not None and self._held_start in self._partials
        return self._position >= len(self.order) + self.start[1] + int(waiting)

    @property
    def finished(self) -> bool:
        """Nothing left to take from the carousel (every wanted chunk handed out or left to HTTP)."""
        return not self.wanted

    @property
    def window_loss(self) -> float:
        """The lost share of the last ``Limits.window`` expected pieces (0 until a window is full)."""
        expected = sum(e for e, _ in self._window)
        if expected < self.limits.window:
            return 0.0
        return sum(lost for _, lost in self._window) / expected

    @property
    def loss(self) -> float:
        return self.counts.lost / self.counts.expected if self.counts.expected else 0.0

    # -- pieces ----------------------------------------------------------------------------------------------
    def datagram(self, data: bytes) -> list[Event]:
        try:
            piece = decode(data, self.digest16)
        except BadDatagram:
            self.counts.dropped += 1
            return []
        return self.piece(piece)

    def piece(self, piece: Piece) -> list[Event]:
        """Take one decoded piece; the events it completes."""
        n = piece.chunk
        if (
            n >= len(self.order)
            or piece.offset % MAX_PAYLOAD
            or len(piece.payload) != min(MAX_PAYLOAD, piece.frame_length - piece.offset)
            or piece.frame_length > self._bounds[n]
            or piece.digest16 != self.digest16
        ):
            self.counts.dropped += 1
            return []
        if self.start is None:
            self.start = (piece.pass_number, n)
            if piece.offset and n in self.wanted:
                self._held_start = n
        position = ((piece.pass_number - self.start[0]) % PASS_MOD) * len(self.order) + n
        if self._position >= 0 and position > self._position + len(self.order):
            self.counts.dropped += 1  # more than a pass ahead (or before the start): forged, or another sender's
            return []
        events: list[Event] = []
        if not self._count(position, piece):
            return events
        self.counts.datagrams += 1
        self.counts.payload += len(piece.payload)
        if n in self.wanted:
            events += self._keep(n, position, piece)
        if position > self._position:
            self._position = position
            events += self._passed(position)
        return events

    def _count(self, position: int, piece: Piece) -> bool:
        """Loss accounting; False for a duplicate."""
        if self._current is not None and position == self._current[0]:
            if piece.offset in self._current[1]:
                self.counts.dropped += 1
                return False
            self._current[1].add(piece.offset)
            return True
        if self._current is not None and position < self._current[0]:
            self.counts.late += 1
            self.counts.lost = max(0, self.counts.lost - 1)
            return True
        self._finish(position)
        first = self._current is None
        if first:
            self._first_position = position
        expected = pieces_of(piece.frame_length, piece.offset if first else 0)
        self._current = (position, {piece.offset}, expected)
        self._frames_seen += 1
        self._pieces_seen += pieces_of(piece.frame_length)
        return True

    def _finish(self, position: int) -> None:
        """The current chunk position is over (the carousel is at ``position``): count what it lost, and the
        chunk numbers skipped whole before ``position``."""
        if self._current is None:
            return
        was, seen, expected = self._current
        self._record(expected, expected - len(seen))
        skipped = position - was - 1
        if skipped > 0:
            each = max(1, round(self._pieces_seen / max(self._frames_seen, 1)))
            self._record(skipped * each, skipped * each)
        self.counts.passes = self._position_pass(position)

    def _position_pass(self, position: int) -> int:
        start = self.start[1] if self.start else 0
        return max(0, (position - start) // len(self.order))

    def _record(self, expected: int, lost: int) -> None:
        self.counts.expected += expected
        self.counts.lost += max(lost, 0)
        self._window.append((expected, max(lost, 0)))
        while len(self._window) > 1 and sum(e for e, _ in self._window[1:]) >= self.limits.window:
            self._window.pop(0)

    def _overflow(self) -> None:
        self.counts.overflow += 1
        self.counts.lost += 1
        if self._window:
            expected, lost = self._window[-1]
            self._window[-1] = (expected, lost + 1)

    def _keep(self, n: int, position: int, piece: Piece) -> list[Event]:
        partial = self._partials.get(n)
        if partial is not None and partial.frame_length != piece.frame_length:
            self._discard(n, partial)
            return []
        if partial is None:
            if len(self._partials) >= self.limits.partials:
                self._overflow()
                return []
            partial = self._partials[n] = _Partial(piece.frame_length, position, count=pieces_of(piece.frame_length))
        if piece.offset in partial.pieces:
            self.counts.dropped += 1  # a duplicate of an earlier pass
            return []
        with self._lock:
            if self._held + len(piece.payload) > self.limits.bytes:
                self._overflow()
                return []
            self._held += len(piece.payload)
        partial.pieces[piece.offset] = piece.payload
        partial.position = position
        if len(partial.pieces) < partial.count:
            return []
        del self._partials[n]
        self.wanted.discard(n)
        frame = b"".join(partial.pieces[o] for o in sorted(partial.pieces))
        return [Ready(n, self.order[n], frame)]

    def _discard(self, n: int, partial: _Partial) -> None:
        self.counts.dropped += 1 + len(partial.pieces)
        self.release(sum(len(p) for p in partial.pieces.values()))
        del self._partials[n]
        self.wanted.discard(n)
        self.http_only.add(n)

    def _passed(self, position: int) -> list[Event]:
        """Frames the carousel has moved past, incomplete: to repair."""
        late = [n for n, p in self._partials.items() if position - p.position > REORDER]
        return [self._repair(n) for n in late if not self._waits(n, position)]

    def _waits(self, n: int, position: int) -> bool:
        """Is ``n`` the frame joined mid-way, and the carousel not back at it yet?"""
        return n == self._held_start and self.start is not None and position < self.start[1] + len(self.order)

    def _repair(self, n: int) -> Repair:
        partial = self._partials.pop(n)
        self.wanted.discard(n)
        return Repair(n, self.order[n], partial.frame_length, partial.pieces)

    def leave(self) -> list[Repair]:
        """Stop listening: every frame in progress, to repair."""
        if self._current is not None:  # the pieces sent so far of the chunk in progress
            seen = self._current[1]
            first = 0 if self._current[0] != self._first_position else min(seen)
            sent = (max(seen) - first) // MAX_PAYLOAD + 1
            self._record(sent, sent - len(seen))
            self._current = None
        return [self._repair(n) for n in list(self._partials)]

    def remaining(self) -> list[int]:
        """Chunk numbers never handed out: to fetch whole by HTTP."""
        return sorted(self.wanted | self.http_only)
