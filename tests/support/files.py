"""Files for tests.

- ``sparse_file(path, size, fill)``: a sparse file of ``size`` bytes (``os.truncate``), optionally starting with
  ``fill``.
- ``sha256_file(path, length)``: the sha256 of a file, or of its first ``length`` bytes, read 1 MiB at a time.
- ``write_tree(root, files, mode)``: files (relative path -> text or bytes) written under ``root``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

BLOCK = 1 << 20


def sparse_file(path: Path, size: int, fill: bytes | None = None) -> Path:
    """A sparse file of ``size`` bytes (``os.truncate``), optionally starting with ``fill``."""
    with path.open("wb") as f:
        if fill:
            f.write(fill)
        f.truncate(size)
    return path


def sha256_file(path: Path, length: int | None = None) -> str:
    """The sha256 of the file's bytes: all of them, or the first ``length`` (fewer if the file is shorter)."""
    h = hashlib.sha256()
    left = length
    with path.open("rb") as f:
        while left is None or left > 0:
            block = f.read(BLOCK if left is None else min(BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def write_tree(root: Path, files: Mapping[str, bytes | str], mode: int = 0o644) -> Path:
    """Write ``files`` (relative path -> content) under ``root`` with ``mode``; returns ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        path.chmod(mode)
    return root
