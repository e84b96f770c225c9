"""Image serving: what it costs to send only checked chunk frames (issue 12, defect 4), first time and after.

The disk is ``bench/image_import.py``'s (a GPT and ext4 of real files; here 1 GiB holding 512 MiB by default),
imported once into a store in the work folder; its chunk files are then left to age past the record's racy
window (2 s). An aiohttp server of the image routes (``image_app``) runs on 127.0.0.1 in this process and one
``requests`` session fetches, each pass on a fresh ``ImageStore`` and server (an empty record of checked files)
unless it says "again":

- ``chunks first`` / ``chunks again``: ``GET /chunks/<sha>`` of every distinct chunk, in index order;
- ``disk.img.zst first`` / ``again``: the whole image (the first request checks every chunk before its
  headers);
- ``export``: ``ImageStore.export`` on a fresh store, as ``provision image export`` runs it.

Every figure is the best of ``--rounds`` (median in the JSON). MB/s is compressed bytes sent per second (the
chunk files, holes excluded for ``/chunks``). CPU is this process's (server and client). Run it on this tree,
and with ``PYTHONPATH`` on a tree from before the change, to compare; nothing is asserted: figures are
printed, then one JSON line.

    .venv/bin/python bench/image_serving.py [--workdir DIR] [--disk-size 1G] [--content 512M] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.` imports from a clone

from bench.image_import import make_disk, size_arg, stats, timed
from provision.images import ImageStore
from provision.web.images import image_app


@contextmanager
def serve(store: ImageStore) -> Iterator[str]:
    """The image routes of ``store`` on 127.0.0.1, port 0, in an event loop on a thread; the base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(image_app(store), access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, name="bench-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def fetch(session: requests.Session, url: str) -> int:
    with session.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        return sum(len(block) for block in response.iter_content(1 << 20))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-size", type=size_arg, default=1 << 30)
    parser.add_argument("--content", type=size_arg, default=512 << 20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the disk and store here for the next run")
    args = parser.parse_args(argv)
    if shutil.which("mkfs.ext4") is None:
        print("image_serving: mkfs.ext4 is missing", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    raw, disk = make_disk(work, args.disk_size, args.content)
    root = work / "store"
    if not (root / "images" / "bench").is_dir():
        ImageStore(root).import_raw(raw, "bench")
        time.sleep(2.5)  # past the racy window: files changed within 2 s of a check are not recorded
    version = ImageStore(root).resolve("bench")
    shas = list(version.index.unique_chunks())
    chunk_bytes = sum(ImageStore(root).chunks.path(s).stat().st_size for s in shas)
    figures: dict[str, Any] = {"disk": {"size": raw.stat().st_size, **disk}, "distinct_chunks": len(shas),
                               "chunk_bytes": chunk_bytes}  # fmt: skip
    passes: dict[str, list[tuple[float, float]]] = {}
    zst_bytes = 0

    def measure(name: str, action: Callable[[], Any]) -> Any:
        timing, result = timed(action)
        passes.setdefault(name, []).append(timing)
        return result

    for _ in range(args.rounds):
        with serve(ImageStore(root)) as url, requests.Session() as session:
            for name in ("chunks first", "chunks again"):
                measure(name, lambda: [fetch(session, f"{url}/chunks/{s}") for s in shas])
        with serve(ImageStore(root)) as url, requests.Session() as session:
            for name in ("disk.img.zst first", "disk.img.zst again"):
                zst_bytes = measure(name, lambda: fetch(session, f"{url}/images/bench/current/disk.img.zst"))
        shutil.rmtree(work / "export", ignore_errors=True)
        measure("export", lambda: ImageStore(root).export("bench", work / "export"))
    for name, times in passes.items():
        sent = chunk_bytes if name.startswith("chunks") else zst_bytes
        figures[name] = stats(times, sent / 1e6)
        f = figures[name]
        print(f"{name:20} {f['s'] * 1000:8.1f} ms (median {f['median_s'] * 1000:8.1f})  {f['MB/s']:7.0f} MB/s  "
              f"CPU {f['cpu_s'] * 1000:7.1f} ms")  # fmt: skip
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
