"""Helpers shared by the image store tests (unit, functional, interop); no tests here.

Disks are sparse files: ``os.truncate`` semantics, a partition table written by
``provision.builder.layout``, then random bytes at chosen extents (everything else stays a hole).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from provision.builder.layout import ESP, NewPartition, write_gpt, write_mbr

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB  # small chunks keep test disks small


def make_disk(
    path: Path,
    size: int,
    extents: Iterable[tuple[int, int]] = (),
    *,
    seed: int = 0,
    label: str = "gpt",
) -> Path:
    """A sparse disk of ``size`` bytes with a GPT (ESP 1 MiB + root) or an MBR, and seeded random bytes at
    each (offset, length) extent."""
    rng = random.Random(seed)
    with path.open("w+b") as f:
        if label == "gpt":
            write_gpt(f, size, [NewPartition(1 * MiB, ESP, "EFI"), NewPartition(0, name="root")], seed=seed)
        else:
            write_mbr(f, size, [NewPartition(1 * MiB, "ef", bootable=True), NewPartition(0, "83")], disk_id=seed)
        for offset, length in extents:
            f.seek(offset)
            f.write(rng.randbytes(length))
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@contextmanager
def serve(app: web.Application) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1, port 0, in an event loop on a thread; yields the base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
