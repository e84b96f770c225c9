"""``disk.img.zst`` + ``disk.bmap`` for ``bmaptool copy``, computed from the chunk store.

Consecutive zstd frames form one valid .zst stream, so the stored frames in disk order, with each hole as
one cached zero frame of its chunk's length, decompress to exactly the raw disk. Nothing is stored twice:
the HTTP route streams the chunk files with sendfile, ``export`` copies them with ``os.sendfile``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from provision.images.chunks import zero_frame
from provision.images.errors import MissingChunk
from provision.images.files import atomic_write, fsync_dir, temp_path
from provision.images.index import ImageVersion
from provision.images.versions import Versions

log = logging.getLogger(__name__)

ZST_NAME = "disk.img.zst"
BMAP_NAME = "disk.bmap"


def iter_zst(store: Versions, version: ImageVersion) -> Iterator[bytes | Path]:
    ix = version.index
    for c in ix.chunks:
        yield zero_frame(c.length) if c.sha256 is None else store.chunks.path(c.sha256)


def zst_parts(store: Versions, version: ImageVersion) -> tuple[list[bytes | tuple[Path, int]], int]:
    """Every part with its size; ImageNotFound (naming the chunk) if a stored frame is missing, so a
    server can refuse before sending a byte."""
    parts: list[bytes | tuple[Path, int]] = []
    total = 0
    sizes: dict[Path, int] = {}
    for i, part in enumerate(iter_zst(store, version)):
        if isinstance(part, bytes):
            parts.append(part)
            total += len(part)
            continue
        size = sizes.get(part)
        if size is None:
            try:
                size = sizes[part] = part.stat().st_size
            except FileNotFoundError:
                offset = version.index.offset(i)
                raise MissingChunk(
                    f"{version.ref}: chunk {i} at offset {offset} ({part.stem}) is missing from the store",
                    chunk=part.stem,
                ) from None
        parts.append((part, size))
        total += size
    return parts, total


def _copy_file(out_fd: int, path: Path, size: int) -> None:
    with path.open("rb") as src:
        offset = 0
        while offset < size:
            sent = os.sendfile(out_fd, src.fileno(), offset, size - offset)
            if sent == 0:
                raise MissingChunk(f"chunk file {path} shrank while exporting")
            offset += sent


def export(store: Versions, version: ImageVersion, outdir: Path) -> tuple[Path, Path]:
    """Write ``outdir/disk.img.zst`` and ``outdir/disk.bmap`` (each atomically). Returns both paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    parts, total = zst_parts(store, version)
    bmap = store.bmap_text(version)
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
                    _copy_file(fd, *part)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(zst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    bmap_path = outdir / BMAP_NAME
    atomic_write(bmap_path, bmap.encode(), sync_dir=False)
    fsync_dir(outdir)
    log.info("image %s: exported %s to %s (%d bytes compressed)", version.name, version.label, outdir, total)
    return zst, bmap_path
