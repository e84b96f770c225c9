"""Disks, servers and checks for the image store tests (unit, functional, interop, e2e).

- ``KiB``, ``MiB``, ``CHUNK`` (64 KiB: small chunks keep test disks small).
- ``make_disk(path, size, extents)``: a sparse disk (``os.truncate`` semantics) with a partition table written
  by ``provision.builder.layout`` (GPT: ESP 1 MiB + root, or MBR), then seeded random bytes at each
  (offset, length) extent; everything else stays a hole.
- ``serve(app)``: an aiohttp app on 127.0.0.1, port 0, in an event loop on a thread; yields the base URL.
- ``unzstd(data)``: concatenated zstd frames (disk.img.zst) decompressed; ``unzstd_file(zst, out)``: the same
  from file to a sparse file (all-zero blocks are skipped, not written).
- ``check_bmap(text, raw)``: bmaptool 3.x's checks of a bmap 2.0 file against the raw disk; its XML root.
- ``damage(store, sha256, kind, outside)``: one stored chunk file damaged as the probe of issue 12 (defect 4)
  did it, for each of ``DAMAGES``: ``flip`` (one byte in place: same size, same inode), ``truncated`` (half
  the frame), ``emptied``, ``swapped`` (another stored chunk's frame, a valid frame of other bytes, under
  this name), ``symlink`` (a symlink to an exact copy of the frame outside the store: only not following the
  link refuses it). The file's mtime is also set an hour back, so that the change shows in the file's key
  even within one tick of a coarse file system clock (the real key also holds ctime, which moves anyway).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import zstandard
from aiohttp import web

from provision.builder.layout import ESP, NewPartition, write_gpt, write_mbr
from provision.images import ImageStore

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB  # small chunks keep test disks small
DAMAGES = ("flip", "truncated", "emptied", "swapped", "symlink")


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


def unzstd(data: bytes) -> bytes:
    """Concatenated zstd frames (as in disk.img.zst), decompressed."""
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
        return reader.read()


def unzstd_file(zst: Path, out: Path) -> None:
    """disk.img.zst (concatenated frames) -> a sparse raw disk: all-zero blocks are skipped, not written."""
    block = 1 << 20
    with zst.open("rb") as src, out.open("wb") as dst:
        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        while data := reader.read(block):
            if data.count(0) == len(data):
                dst.seek(len(data), os.SEEK_CUR)
            else:
                dst.write(data)
        dst.truncate()


def check_bmap(text: str, raw: bytes) -> ET.Element:
    """bmaptool 3.x's checks: the file checksum (its field zeroed) and each range's sha256."""
    root = ET.fromstring(text)
    assert root.tag == "bmap" and root.attrib["version"] == "2.0"
    field = lambda tag: root.findtext(tag, "").strip()  # noqa: E731
    assert int(field("ImageSize")) == len(raw)
    assert int(field("BlockSize")) == 4096
    assert int(field("BlocksCount")) == -(-len(raw) // 4096)
    assert field("ChecksumType") == "sha256"
    checksum = field("BmapFileChecksum")
    assert hashlib.sha256(text.replace(checksum, "0" * 64, 1).encode()).hexdigest() == checksum
    mapped = 0
    for rng in root.findall("BlockMap/Range"):
        first, _, last = rng.text.strip().partition("-") if rng.text else ("", "", "")
        a, b = int(first), int(last or first)
        mapped += b - a + 1
        assert hashlib.sha256(raw[a * 4096 : (b + 1) * 4096]).hexdigest() == rng.attrib["chksum"]
    assert int(field("MappedBlocksCount")) == mapped
    return root


def damage(store: ImageStore, sha256: str, kind: str, outside: Path) -> None:
    """Damage the stored frame of ``sha256`` (one of ``DAMAGES``, see the module docstring); ``outside`` is a
    folder out of the store for the symlink's target."""
    path = store.chunks.path(sha256)
    frame = path.read_bytes()
    if kind == "flip":
        flipped = bytearray(frame)
        flipped[len(flipped) // 2] ^= 0x20
        with path.open("r+b") as f:  # in place: same inode
            f.write(flipped)
    elif kind == "truncated":
        os.truncate(path, len(frame) // 2)
    elif kind == "emptied":
        os.truncate(path, 0)
    elif kind == "swapped":
        other = next(p for _, p in store.chunks.iter_stored() if p != path)
        path.write_bytes(other.read_bytes())
    elif kind == "symlink":
        outside.mkdir(parents=True, exist_ok=True)
        copy = outside / path.name
        copy.write_bytes(frame)
        path.unlink()
        path.symlink_to(copy)
        return
    else:
        raise ValueError(kind)
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
