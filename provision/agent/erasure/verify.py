"""NIST SP 800-88's verification after every erasure method: read the drive back, whole or a documented
sample, and check that it holds the pattern the method leaves.

The sample (``sample_blocks``): the first and the last 16 MiB (where partition tables, boot loaders and file
system headers live) and, between them, 1 MiB blocks covering ``percent`` of the drive: the middle is cut
into as many equal stretches as there are blocks, and each block starts at a pseudo-random 4 KiB-aligned
place in its stretch. The draw is seeded by the drive's serial, so the same drive gives the same sample (a
technician can read the same blocks again); the blocks are sorted and never overlap, and the stretches spread
them over the whole drive (no large region unsampled, as a plain random draw may leave).

The patterns (``check``), judged per piece of at most 1 MiB:

- ``zeros`` / ``ones``: every byte read is 0x00 / 0xff (an overwrite, a block erase, a Format NVM).
- ``zeros-or-ones``: every piece reads all 0x00 or all 0xff (an ATA security erase: the vendor chooses).
- ``changed`` (a crypto erase: the drive forgets its media key and the old data reads as noise): a
  ``fingerprint`` of the same pieces taken BEFORE the method (the sha256 of each, and whether it was uniform,
  one byte value throughout) is compared: every piece must now read differently, and no piece may read as any
  informative piece (not uniform) did before (the old data, moved).

Every pattern needs data to remove: a drive whose sampled pieces already read zeros passes ``zeros`` (and a
blank piece reads the same before and after) whether or not it erased (FOG's FOS#125: a do-nothing NVMe
erase of a mostly empty drive reported verified). So the engine writes a random marker at the start of every
piece (``drive_io.write_markers``) BEFORE the method and the fingerprint: every piece then holds data, and a
drive that ignores the command fails every pattern (the marker is not uniform; it reads as before).

``full`` reads every byte; after a crypto erase, the fingerprint is then of the whole drive too (read once
before, once after). Mismatching pieces are counted and the first 16 byte offsets kept (the first byte that
differs for a pattern, the piece's start for ``changed``). Reads use ``O_DIRECT`` where possible
(``DriveReader``), so the drive answers, not the page cache.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from provision.agent.erasure.drive_io import PIECE, DriveReader
from provision.wire.erasure import Pattern, Verification

EDGE = 16 << 20  # the first and last bytes always read
BLOCK = 1 << 20  # one sampled block
ALIGN = 4096
MAX_SHOWN = 16  # mismatch offsets kept
PROGRESS_INTERVAL = 1.0
ZEROS = bytes(PIECE)
ONES = b"\xff" * PIECE

Block = tuple[int, int]  # (offset, length)
Progress = Callable[[int, int], None]  # (bytes read, bytes to read)


def sample_blocks(size: int, percent: float, seed: str) -> list[Block]:
    """The sampled blocks of a drive of ``size`` bytes: sorted, non-overlapping, deterministic from ``seed``.

    A drive of at most 32 MiB is read whole (one block)."""
    if size <= 0:
        return []
    if size <= 2 * EDGE:
        return [(0, size)]
    tail = (size - EDGE) // ALIGN * ALIGN
    units = (tail - EDGE) // ALIGN  # 4 KiB units of the middle
    per_block = BLOCK // ALIGN
    wanted = -(-int(size * max(percent, 0.0)) // (100 * BLOCK))  # ceil(size * percent / 100 / BLOCK)
    count = min(wanted, units // per_block)
    rng = random.Random(f"provision-erasure-sample:{seed}")  # nosec B311  # noqa: S311 - a sample, not a secret
    blocks: list[Block] = [(0, EDGE)]
    for i in range(count):
        first, end = units * i // count, units * (i + 1) // count  # this block's stretch, >= per_block units
        start = rng.randint(first, end - per_block)
        blocks.append((EDGE + start * ALIGN, BLOCK))
    blocks.append((tail, size - tail))
    return blocks


def full_blocks(size: int) -> list[Block]:
    """The whole drive as one block (``full`` verification)."""
    return [(0, size)] if size > 0 else []


def pieces(blocks: Sequence[Block]) -> Iterator[Block]:
    """The blocks cut into pieces of at most ``PIECE`` bytes, in order."""
    for offset, length in blocks:
        for start in range(offset, offset + length, PIECE):
            yield start, min(PIECE, offset + length - start)


def _uniform(data: bytes) -> bool:
    return not data or data == data[:1] * len(data)  # one memset and one memcmp: faster than count()


@dataclass(frozen=True)
class Fingerprint:
    """What the sampled pieces held before the method: one sha256 (32 bytes) and one uniform flag per piece,
    packed (a full fingerprint of a 1 TB drive is 33 MB)."""

    blocks: tuple[Block, ...]
    digests: bytes
    uniform: bytes  # 1: the piece held one byte value throughout

    def __len__(self) -> int:
        return len(self.uniform)

    def digest(self, i: int) -> bytes:
        return self.digests[32 * i : 32 * i + 32]

    @property
    def informative(self) -> int:
        return len(self.uniform) - sum(self.uniform)


class _Meter:
    """Calls ``progress`` at most every PROGRESS_INTERVAL seconds, and at the end."""

    def __init__(self, blocks: Sequence[Block], progress: Progress | None, clock: Callable[[], float]) -> None:
        self.total = sum(n for _, n in blocks)
        self.done = 0
        self.progress, self.clock = progress, clock
        self.told = clock()

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None and (self.done >= self.total or self.clock() - self.told >= PROGRESS_INTERVAL):
            self.told = self.clock()
            self.progress(self.done, self.total)


def fingerprint(
    path: Path,
    blocks: Sequence[Block],
    *,
    direct: bool | None = None,
    log_id: str = "",
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Fingerprint:
    """The sha256 of every piece of ``blocks`` and whether it was uniform (taken before the method)."""
    digests, uniform = bytearray(), bytearray()
    meter = _Meter(blocks, progress, clock)
    with DriveReader(path, direct=direct, log_id=log_id) as reader:
        for offset, length in pieces(blocks):
            data = bytes(reader.read(offset, length))
            digests += hashlib.sha256(data).digest()
            uniform.append(1 if _uniform(data) else 0)
            meter.add(length)
    return Fingerprint(tuple(blocks), bytes(digests), bytes(uniform))


def _first_off(data: bytes, pattern: Pattern) -> int | None:
    """Index of the first byte of ``data`` that breaks ``pattern`` (zeros, ones, zeros-or-ones); None if none."""
    if pattern == "zeros":
        fill = b"\0"
    elif pattern == "ones":
        fill = b"\xff"
    else:  # zeros-or-ones: the piece is all one of them
        fill = data[:1] if data[:1] in (b"\0", b"\xff") else b""
        if not fill:
            return 0 if data else None
    if data == (ZEROS if fill == b"\0" else ONES)[: len(data)]:
        return None
    return len(data) - len(data.lstrip(fill))


def check(
    path: Path,
    blocks: Sequence[Block],
    pattern: Pattern,
    before: Fingerprint | None = None,
    *,
    method: Literal["full", "sample"] = "sample",
    direct: bool | None = None,
    log_id: str = "",
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Verification:
    """Read ``blocks`` back and check ``pattern`` (``changed`` needs the fingerprint ``before`` of the same
    blocks). Raises ``DriveIoError`` when the drive cannot be read (the caller reports it)."""
    if pattern == "changed" and (before is None or tuple(before.blocks) != tuple(blocks)):
        raise ValueError("the 'changed' check needs a fingerprint of the same blocks, taken before the method")
    started = clock()
    meter = _Meter(blocks, progress, clock)
    former: set[bytes] = set()
    if before is not None and pattern == "changed":
        former = {before.digest(i) for i in range(len(before)) if not before.uniform[i]}
    read = mismatches = count = 0
    shown: list[int] = []
    with DriveReader(path, direct=direct, log_id=log_id) as reader:
        for i, (offset, length) in enumerate(pieces(blocks)):
            data = bytes(reader.read(offset, length))
            read += len(data)
            count += 1
            bad: int | None
            if len(data) < length:
                bad = offset + len(data)  # the drive ended early: what it did not give is not verified
            elif pattern == "changed":
                assert before is not None
                now = hashlib.sha256(data).digest()
                same = now == before.digest(i)  # a piece that reads as before was not erased, blank or not
                bad = offset if same or now in former else None
            else:
                off = _first_off(data, pattern)
                bad = None if off is None else offset + off
            if bad is not None:
                mismatches += 1
                if len(shown) < MAX_SHOWN:
                    shown.append(bad)
            meter.add(length)
    return Verification(
        method=method, pattern=pattern, ok=mismatches == 0, bytes_checked=read, samples=count,
        mismatches=mismatches, first_mismatches=shown, seconds=round(max(clock() - started, 0.0), 3),
    )  # fmt: skip
