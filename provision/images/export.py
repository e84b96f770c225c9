"""``disk.img.zst`` + ``disk.bmap`` for ``bmaptool copy``, computed from the chunk store.

Consecutive zstd frames form one valid .zst stream, so the stored frames in disk order, with each hole as
one cached zero frame of its chunk's length, decompress to exactly the raw disk. Nothing is stored twice:
the HTTP route streams the chunk files with sendfile, ``export`` copies them with ``os.sendfile``.

Only checked frames go out (``provision.images.verified``): ``zst_parts`` opens and checks every distinct
chunk of the version before the first byte (a bad or missing one refuses the whole image, naming its
position), and each frame is then sent from a descriptor opened without following a symlink and found in the
record (or checked again, if its file changed in between).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from provision.images.chunks import zero_frame
from provision.images.errors import CorruptImage, ImageError, ImageNotFound, MissingChunk
from provision.images.files import atomic_write, fsync_dir, temp_path
from provision.images.index import ImageVersion
from provision.images.verified import Frame
from provision.images.verify import ChunkProblem
from provision.images.versions import Versions

log = logging.getLogger(__name__)

ZST_NAME = "disk.img.zst"
BMAP_NAME = "disk.bmap"
CHECK_WORKERS = 4  # threads checking the chunks of a version before it is sent


def iter_zst(store: Versions, version: ImageVersion) -> Iterator[bytes | Path]:
    ix = version.index
    for c in ix.chunks:
        yield zero_frame(c.length) if c.sha256 is None else store.chunks.path(c.sha256)


@dataclass(frozen=True)
class StoredPart:
    """A stored frame of ``disk.img.zst``: the chunk at position ``index`` (``offset`` on the disk), its
    sha256 and the size of its frame file as checked before sending (the Content-Length counts on it)."""

    index: int
    offset: int
    length: int
    sha256: str
    size: int


def zst_parts(
    store: Versions, version: ImageVersion, *, workers: int = CHECK_WORKERS, action: str = "sent"
) -> tuple[list[bytes | StoredPart], int]:
    """Every part with its size, and the total. Every distinct chunk is opened and checked first
    (``VerifiedFrames.check_all``), so a server or an export refuses before sending a byte: MissingChunk or
    CorruptImage naming the first bad position (index, offset, sha256) and how many are bad."""
    ix = version.index
    found = store.frames.check_all((c.sha256 for c in ix.chunks if c.sha256 is not None), workers=workers)
    parts: list[bytes | StoredPart] = []
    total = 0
    bad: list[tuple[ChunkProblem, ImageError]] = []
    for i, c in enumerate(ix.chunks):
        if c.sha256 is None:
            frame = zero_frame(c.length)
            parts.append(frame)
            total += len(frame)
            continue
        size = found[c.sha256]
        if isinstance(size, ImageError):
            bad.append((ChunkProblem.of(i, ix.offset(i), c.length, c.sha256, size), size))
            continue
        parts.append(StoredPart(i, ix.offset(i), c.length, c.sha256, size))
        total += size
    if bad:
        problem, exc = bad[0]
        more = f" (and {len(bad) - 1} more bad positions: see provision image verify)" if len(bad) > 1 else ""
        error = MissingChunk if isinstance(exc, ImageNotFound) else CorruptImage
        raise error(
            f"{version.ref}: {problem}{more}; nothing {action}", name=version.name, digest=version.digest,
            index=problem.index, offset=problem.offset, chunk=problem.expected, path=exc.facts.get("path"),
        )  # fmt: skip
    return parts, total


def open_part(store: Versions, version: ImageVersion, part: StoredPart, *, check: bool = True) -> Frame:
    """The frame of ``part``, open, from the record or checked again if its file changed since
    ``zst_parts``; CorruptImage naming the position if it became missing, bad or another size. With
    ``check=False`` a frame the record does not know is returned unchecked: the caller checks it (off the
    event loop) before sending."""
    try:
        frame = store.frames.open_checked(part.sha256) if check else store.frames.open(part.sha256)
    except ImageError as exc:
        raise CorruptImage(
            f"{version.ref}: {ChunkProblem.of(part.index, part.offset, part.length, part.sha256, exc)}",
            name=version.name, index=part.index, offset=part.offset, chunk=part.sha256, path=exc.facts.get("path"),
        ) from None  # fmt: skip
    if frame.size != part.size:
        frame.close()
        raise CorruptImage(
            f"{version.ref}: chunk {part.index} at offset {part.offset} ({part.sha256}): its frame file is now "
            f"{frame.size} bytes, was {part.size}", name=version.name, index=part.index, offset=part.offset,
            chunk=part.sha256, path=str(store.chunks.path(part.sha256)),
        )  # fmt: skip
    return frame


def _copy_frame(out_fd: int, frame: Frame) -> None:
    offset = 0
    while offset < frame.size:
        sent = os.sendfile(out_fd, frame.fd, offset, frame.size - offset)
        if sent == 0:
            raise CorruptImage(f"chunk {frame.sha256}: its frame file shrank while exporting", chunk=frame.sha256)
        offset += sent


def export(store: Versions, version: ImageVersion, outdir: Path) -> tuple[Path, Path]:
    """Write ``outdir/disk.img.zst`` and ``outdir/disk.bmap`` (each atomically). Returns both paths. Every
    chunk is checked before the first byte is written (``zst_parts``) and each frame is copied from the
    descriptor that was checked; on any error nothing is left in ``outdir`` (not even ``outdir``, if the
    checks fail)."""
    parts, total = zst_parts(store, version, action="exported")
    bmap = store.bmap_text(version)
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    zst = outdir / ZST_NAME
    tmp = temp_path(zst)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            for part in parts:
                if isinstance(part, bytes):
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view) :]
                else:
                    with open_part(store, version, part) as frame:
                        _copy_frame(fd, frame)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(zst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                outdir.rmdir()
        raise
    bmap_path = outdir / BMAP_NAME
    atomic_write(bmap_path, bmap.encode(), sync_dir=False)
    fsync_dir(outdir)
    log.info("image %s: exported %s to %s (%d bytes compressed)", version.name, version.label, outdir, total)
    return zst, bmap_path
