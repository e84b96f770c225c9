"""Capture (issue 17): a golden PC's disk read by the agent and stored as a new version of an image, sending only
the chunks the server lacks. Standard library only: the server checks these messages, the agent builds them.

    hello answer  CaptureAnswer (provision.wire.api) with a ``CapturePlan``: the run, the image name, the chunk
                  size, which disk, the upload's zstd level and how many chunks per offer
    offer         POST RUN_CAPTURE_OFFER  CaptureOffer -> CaptureOfferAnswer: the chunks of positions ``first``..
                  in disk order (sha256, or None for a chunk that is all zeros once the file systems' free space
                  is zeroed); the server records them and answers the sha256s it does not hold (each named once
                  per run: one already asked for is not asked again)
    upload        PUT RUN_CAPTURE_CHUNK (``/api/v1/runs/{run}/capture/chunks/{sha256}``), the body one zstd frame of
                  the plain chunk, the boot token in the ``X-Provision-Token`` header -> CaptureUploadAnswer; the
                  server decompresses it (at most the chunk size), checks its sha256 and that the run offered it,
                  and stores it
    done          POST RUN_CAPTURE_DONE  CaptureDone -> RunAnswer (provision.wire.api): every position offered,
                  every chunk stored, the server reads them all back (the disk's sha256 must be the agent's), reads
                  the partition table, writes the index with its provenance and publishes it (atomically); the
                  run ends ``done`` with the new version's label, or ``failed`` with the reason
    failure       POST RUN_REPORT  Report(ok=False, reason) (provision.wire.api): the run ends ``failed``

Free space: for each partition whose file system the agent reads (ext2/3/4, vfat, NTFS) the blocks that the file
system's own allocation bitmap marks free are sent as zeros (``CapturedFs`` says what was found), so a chunk that
holds only free space is a hole and costs nothing; any other partition and the space between partitions is sent
as it is on the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from provision.wire.index import SHA256
from provision.wire.schema import Message, rule

MAX_OFFER = 1024  # chunks in one offer (4 GiB of disk with 4 MiB chunks; ~70 KiB of JSON)
DEFAULT_OFFER = 64
DEFAULT_LEVEL = 3  # zstd level of the uploads (the store's own level)
TOKEN_HEADER = "X-Provision-Token"  # nosec B105  # noqa: S105 - a header name (a chunk upload's boot token)
MAX_FILESYSTEMS = 128
DIGEST = SHA256.pattern

FsKind = Literal["ext2", "ext3", "ext4", "vfat", "ntfs", "unknown"]


@dataclass(frozen=True)
class CapturePlan(Message):
    """What to capture: the disk chosen by ``target_disk`` (the recipe's rule; empty: the one internal disk) is
    read whole and stored as a new version of ``image`` with chunks of ``chunk_size`` bytes (the image's current
    version's, so unchanged chunks are shared). ``offer``: chunks per offer; ``level``: zstd level of uploads."""

    image: str = field(metadata=rule(max_length=64))
    chunk_size: int = field(metadata=rule(ge=4096))
    target_disk: dict[str, Any] = field(default_factory=dict)
    offer: int = field(default=DEFAULT_OFFER, metadata=rule(ge=1))
    level: int = field(default=DEFAULT_LEVEL, metadata=rule(ge=1))
    # the version the image has now (its label), when it has one: said on the PC's screen and in the logs
    current: str | None = field(default=None, metadata=rule(max_length=128))

    def __post_init__(self) -> None:
        if self.offer > MAX_OFFER:
            raise ValueError(f"offer: at most {MAX_OFFER} chunks")
        if self.level > 22:
            raise ValueError("level: zstd levels are 1 to 22")
        if self.chunk_size % 4096:
            raise ValueError("chunk_size: a multiple of 4096")


@dataclass(frozen=True)
class CaptureOffer(Message):
    """Chunks ``first``, ``first + 1`` ... of the disk (of ``disk_size`` bytes), each a sha256 of its plain bytes
    (free space zeroed) or None (all zeros: a hole)."""

    token: str = field(metadata=rule(min_length=8, max_length=128))
    disk_size: int = field(metadata=rule(ge=1))
    first: int = field(metadata=rule(ge=0))
    chunks: list[str | None] = field(metadata=rule(min_length=1, max_length=MAX_OFFER))

    def __post_init__(self) -> None:
        bad = [i for i, sha in enumerate(self.chunks) if sha is not None and not SHA256.fullmatch(sha)]
        if bad:
            raise ValueError(f"chunks: item {bad[0]} is not a sha256 (64 lower-case hex digits) or null")


@dataclass(frozen=True)
class CaptureOfferAnswer(Message):
    """The sha256s of the offer the server wants uploaded (it does not hold them, none asked for before)."""

    missing: list[str]
    offered: int = field(metadata=rule(ge=0))  # positions recorded so far (first + len(chunks) when in order)


@dataclass(frozen=True)
class CaptureUploadAnswer(Message):
    """One chunk stored: ``new`` when the store did not hold it yet (another upload may have raced it)."""

    sha256: str = field(metadata=rule(pattern=DIGEST))
    new: bool
    stored_bytes: int = field(metadata=rule(ge=0))


@dataclass(frozen=True)
class CapturedFs(Message):
    """One partition as the agent read it: its number and place, the file system found, its block size and the
    bytes its allocation bitmap marks free (sent as zeros), or in ``note`` why none was taken as free."""

    omit_none = True

    partition: int = field(metadata=rule(ge=0))
    offset: int = field(metadata=rule(ge=0))
    size: int = field(metadata=rule(ge=0))
    fs: FsKind
    block_size: int = field(default=0, metadata=rule(ge=0))
    free_bytes: int = field(default=0, metadata=rule(ge=0))
    label: str | None = field(default=None, metadata=rule(max_length=128, clean_text=True))
    note: str | None = field(default=None, metadata=rule(max_length=500, clean_text=True))


@dataclass(frozen=True)
class CaptureDone(Message):
    """The end of a capture: the disk's size and sector size, the sha256 of the whole disk as sent (free space as
    zeros), what was read and uploaded, the file systems found, and the disk as the live environment names it."""

    omit_none = True

    token: str = field(metadata=rule(min_length=8, max_length=128))
    disk_size: int = field(metadata=rule(ge=1))
    sector_size: int = field(metadata=rule(ge=512))
    sha256: str = field(metadata=rule(pattern=DIGEST))
    chunks: int = field(metadata=rule(ge=1))  # positions offered (the disk's chunk count)
    holes: int = field(metadata=rule(ge=0))
    read_bytes: int = field(metadata=rule(ge=0))  # bytes read from the disk (free space is not read)
    uploaded_chunks: int = field(metadata=rule(ge=0))
    uploaded_bytes: int = field(metadata=rule(ge=0))  # compressed bytes sent
    seconds: float = field(metadata=rule(ge=0))
    filesystems: list[CapturedFs] = field(default_factory=list, metadata=rule(max_length=MAX_FILESYSTEMS))
    disk: str | None = field(default=None, metadata=rule(max_length=4096, clean_text=True))  # /dev/sda
    model: str | None = field(default=None, metadata=rule(max_length=200, clean_text=True))
    serial: str | None = field(default=None, metadata=rule(max_length=200, clean_text=True))
