"""A captured disk made a version (docs/capture.md): the chunks a capture run offered, in disk order, read back
from the chunk store (each checked against its name), the whole disk's sha256 compared with the agent's, the
partition table read from the chunks themselves (``ChunkDisk``, a read-only file over them), the bmap built,
and the index written with its provenance and published (``Versions.add_version``). The capture's records and
its run are ``provision.capturing``'s; nothing here knows the state store.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from provision import __version__
from provision.images.bmap import BmapBuilder
from provision.images.chunks import ChunkStore, zeros
from provision.images.errors import ImageError
from provision.images.index import ChunkRef, ImageIndex, ImageVersion, canonical_json, check_name, format_created
from provision.images.partitions import read_partition_table
from provision.images.versions import Versions

log = logging.getLogger(__name__)

READ_WORKERS = 4


class CaptureFailed(ImageError):
    """The captured chunks do not make the disk the agent read: nothing was published (the reason says why)."""


@functools.lru_cache(maxsize=8)
def zero_sha256(length: int) -> str:
    """The sha256 of ``length`` zero bytes: a chunk offered with it is a hole."""
    return hashlib.sha256(zeros(length)).hexdigest()


def chunk_lengths(disk_size: int, chunk_size: int) -> list[int]:
    """Each chunk's plain length: ``chunk_size``, the last one what is left of the disk."""
    count = -(-disk_size // chunk_size)
    return [min(chunk_size, disk_size - i * chunk_size) for i in range(count)]


class ChunkDisk(io.RawIOBase):
    """A read-only, seekable view of the disk the chunks make (holes read as zeros), for the partition table's
    reader; the last chunks read are kept (a GPT's reads stay within a few of them)."""

    def __init__(self, chunks: ChunkStore, shas: Sequence[str | None], chunk_size: int, disk_size: int) -> None:
        super().__init__()
        self.store, self.shas, self.chunk_size, self.size = chunks, shas, chunk_size, disk_size
        self.lengths = chunk_lengths(disk_size, chunk_size)
        self.pos = 0
        self._cache: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _chunk(self, i: int) -> bytes:
        if i not in self._cache:
            sha, length = self.shas[i], self.lengths[i]
            self._cache = {**dict(list(self._cache.items())[-3:]), i: zeros(length) if sha is None else
                           self.store.read(sha, length)}  # fmt: skip
        return self._cache[i]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self.pos < self.size:
            i, within = divmod(self.pos, self.chunk_size)
            data = self._chunk(i)[within : within + len(view) - done]
            view[done : done + len(data)] = data
            done += len(data)
            self.pos += len(data)
        return done


@dataclass(frozen=True)
class Assembled:
    """The version a capture made, and what its chunks hold."""

    version: ImageVersion
    sha256: str  # of the whole disk (holes as zeros)
    chunks: int
    holes: int
    data_chunks: int  # distinct stored chunks the version names


def _read_back(
    chunks: ChunkStore, shas: Sequence[str | None], lengths: list[int], disk_size: int
) -> tuple[str, BmapBuilder]:
    """Every chunk read from the store and checked: the disk's sha256 and its bmap. CaptureFailed naming the
    first chunk that is missing or bad."""
    whole = hashlib.sha256()
    bmap = BmapBuilder(disk_size)
    items = list(zip(shas, lengths, strict=True))
    offset = 0
    for i, ((sha, length), data) in enumerate(zip(items, chunks.read_many(items, workers=READ_WORKERS), strict=True)):
        if isinstance(data, ImageError):
            raise CaptureFailed(f"chunk {i} (offset {offset}, sha256 {sha}) cannot be read back: {data}",
                                index=i, chunk=sha)  # fmt: skip
        whole.update(zeros(length) if data is None else data)
        bmap.add(offset, length, data)
        offset += length
    return whole.hexdigest(), bmap


def assemble(
    store: Versions,
    name: str,
    shas: Sequence[str | None],
    *,
    chunk_size: int,
    disk_size: int,
    sector_size: int,
    sha256: str,
    provenance: Mapping[str, Any],
    publish: bool = True,
    created: datetime | None = None,
) -> Assembled:
    """The offered chunks (sha256 or None for a hole, in disk order) made a new version of ``name``: all read
    back and checked, the disk's sha256 equal to ``sha256``, its partition table read, the index written with
    ``provenance`` (JSON; ``source`` is added: the disk's size and sha256 and this program) and published unless
    ``publish=False``. CaptureFailed (or the ImageError of the store) otherwise: nothing is written."""
    check_name(name)
    lengths = chunk_lengths(disk_size, chunk_size)
    if len(shas) != len(lengths):
        raise CaptureFailed(f"{len(shas)} chunk positions offered, the disk of {disk_size} bytes has {len(lengths)}")
    refs = [None if sha is None or sha == zero_sha256(n) else sha for sha, n in zip(shas, lengths, strict=True)]
    if "source" in provenance:
        raise ImageError("provenance key 'source' is reserved")
    with store.lock.shared(f"capture {name}"):
        found, bmap = _read_back(store.chunks, refs, lengths, disk_size)
        if found != sha256:
            raise CaptureFailed(f"the chunks make a disk whose sha256 is {found}, the agent read {sha256}: the "
                                "disk changed while it was read, or a chunk was offered wrong",
                                found=found)  # fmt: skip
        raw = io.BufferedReader(ChunkDisk(store.chunks, refs, chunk_size, disk_size))
        try:
            layout = read_partition_table(raw, disk_size, sector_size=sector_size, path="the captured disk")
        except ImageError as exc:
            raise CaptureFailed(f"{exc}: a disk without a partition table is not captured") from None
    source = {"size": disk_size, "sha256": sha256, "by": f"provision {__version__}"}
    index = ImageIndex(
        name=name, created=format_created(created or datetime.now(UTC)), disk_size=disk_size,
        sector_size=sector_size, chunk_size=chunk_size, layout=layout,
        chunks=tuple(ChunkRef(sha, n) for sha, n in zip(refs, lengths, strict=True)),
        provenance={**provenance, "source": source},
    )  # fmt: skip
    canonical_json(index.to_dict())  # raises on a provenance that is not JSON, before anything is written
    version = store.add_version(index, bmap.text(), publish=publish)
    holes = sum(1 for sha in refs if sha is None)
    log.info("image %s: captured as %s: %d chunks (%d holes), partition table %s, %s", name, version.label,
             len(refs), holes, layout.label, "published" if publish else "not published")  # fmt: skip
    return Assembled(version, found, len(refs), holes, len(index.unique_chunks()))
