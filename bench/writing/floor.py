"""The physical floor of writing an image: the work no writer of it can skip, measured on this machine."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import zstandard

from provision.images import ImageStore, ImageVersion


def physical_floor(store: ImageStore, version: ImageVersion) -> dict[str, Any]:
    """CPU seconds of decoding every distinct chunk once and of one sha256 pass over the data; the floor."""
    dctx = zstandard.ZstdDecompressor()
    decode = hashing = 0.0
    plain_bytes = 0
    for sha, length in version.index.unique_chunks().items():
        frame = store.chunks.path(sha).read_bytes()
        started = time.thread_time()
        plain = dctx.decompress(frame, max_output_size=length)
        decode += time.thread_time() - started
        started = time.thread_time()
        hashlib.sha256(plain).digest()
        hashing += time.thread_time() - started
        plain_bytes += len(plain)
    sha_pass = hashing * version.index.mapped_bytes / max(plain_bytes, 1)
    cpus = os.cpu_count() or 1
    return {"decode_cpu_s": decode, "sha256_pass_cpu_s": sha_pass, "cpus": cpus,
            "floor_s": (decode + 2 * sha_pass) / cpus}  # fmt: skip
