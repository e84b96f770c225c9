"""What the e2e imaging sites (tests/e2e/test_imaging.py, test_erasure.py, test_hooks_debian.py) set up alike.

- ``live_boot_root(netboot_root, live_env, dest)``: a copy of the session's boot root (boot loaders, kernel) at
  ``dest`` whose ``live/`` holds the session's live environment build (tests/conftest.py), so a lab PC boots the
  agent under test.
- ``tiny_export(tmp)``: images/tiny.yaml built into a store under ``tmp`` (cached by its inputs), exported, and
  the export decompressed to a raw disk the tests compare written disks against: a ``TinyExport``.
- ``only_run(server, mac)``: the one run the server recorded for ``mac`` (``GET /api/v1/runs?mac=``), asserting
  there is exactly one.
- ``chunk_mismatches(disk, export_raw, version)``: the image's chunks whose bytes on a written disk differ from
  the export's (sha256 of each); ``root_chunks(version)``: the chunk numbers inside the image's root partition
  (where the agent writes the run's first-boot secret, so they may differ).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.bootfiles import BootRoot, DebCache
from provision.builder import build_image
from provision.builder.progress import BuildResult
from provision.images.index import ImageVersion
from provision.images.store import ImageStore
from provision.lab import LabServer
from tests.support.images import unzstd_file
from tests.support.live import LiveEnv
from tests.support.paths import DEB_CACHE, IMAGES

TINY = IMAGES / "tiny.yaml"
LIVE_FILES = ("vmlinuz", "initrd.img")


def live_boot_root(netboot_root: BootRoot, live_env: LiveEnv, dest: Path) -> Path:
    """The session's boot root copied to ``dest``, its live kernel and initramfs the session's live build."""
    shutil.copytree(netboot_root.dest, dest, symlinks=True)
    for name in LIVE_FILES:
        (dest / "live" / name).unlink(missing_ok=True)
        shutil.copyfile(live_env.out / name, dest / "live" / name)
    return dest


@dataclass(frozen=True)
class TinyExport:
    store: ImageStore
    built: BuildResult
    export_raw: Path  # the current version exported and decompressed: the bytes a written disk must hold


def tiny_export(tmp: Path) -> TinyExport:
    """images/tiny.yaml built into ``tmp/store`` and exported to ``tmp/export.raw`` (work and logs under ``tmp``)."""
    store = ImageStore(tmp / "store")
    built = build_image(TINY, store, cache=DebCache(DEB_CACHE), workdir=tmp / "work", log_dir=tmp / "logs")
    zst, _bmap = store.export("tiny", tmp / "export")
    export_raw = tmp / "export.raw"
    unzstd_file(zst, export_raw)
    return TinyExport(store, built, export_raw)


def only_run(server: LabServer, mac: str) -> dict[str, Any]:
    """The one run ``server`` recorded for ``mac``, as the API lists it."""
    runs = server.api(f"/api/v1/runs?mac={mac}")
    assert len(runs) == 1, runs
    return dict(runs[0])


def chunk_mismatches(disk: Path, export_raw: Path, version: ImageVersion) -> list[int]:
    """Chunks of the image whose bytes on ``disk`` differ from the export's (sha256 of each chunk)."""
    bad = []
    with disk.open("rb") as d, export_raw.open("rb") as e:
        for i, chunk in enumerate(version.index.chunks):
            if hashlib.sha256(d.read(chunk.length)).digest() != hashlib.sha256(e.read(chunk.length)).digest():
                bad.append(i)
    return bad


def root_chunks(version: ImageVersion) -> set[int]:
    """The numbers of the image's chunks that hold part of its root partition (the last one on the disk)."""
    index = version.index
    root = max(index.layout.partitions, key=lambda p: p.start)
    start, end = root.start * index.sector_size, (root.start + root.size) * index.sector_size
    return set(range(start // index.chunk_size, -(-end // index.chunk_size)))
