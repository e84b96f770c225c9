"""The content-addressed image store: master disks as deduplicated zstd chunks plus immutable indexes.

Entry points: ``ImageStore`` (import, list, resolve, publish, verify, export, retention and gc) and
``provision.web.images`` (HTTP). See docs/images.md.
"""

from __future__ import annotations

from provision.images.chunks import DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL
from provision.images.errors import CorruptImage, ImageError, ImageNotFound, StoreBusy
from provision.images.export import StoredPart
from provision.images.index import ChunkRef, ImageIndex, ImageVersion
from provision.images.partitions import Partition, PartitionTable, read_partition_table
from provision.images.retention import GcReport, RetentionReport
from provision.images.store import ImageInfo, ImageStore
from provision.images.verify import ChunkProblem, VerifyReport

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_LEVEL",
    "ChunkProblem",
    "ChunkRef",
    "CorruptImage",
    "GcReport",
    "ImageError",
    "ImageIndex",
    "ImageInfo",
    "ImageNotFound",
    "ImageStore",
    "ImageVersion",
    "Partition",
    "PartitionTable",
    "RetentionReport",
    "StoreBusy",
    "StoredPart",
    "VerifyReport",
    "read_partition_table",
]
