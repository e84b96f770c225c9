"""Delta re-imaging helpers (tests/unit/test_delta_*.py, tests/functional/test_delta_runs.py): a second version
of the test image with a few chunks changed, and a run of a machine recorded done (what makes it hold a version).

- ``CHANGED``: offsets (in the first data extent of tests.support.chunk_server) of the chunks version 2 changes.
- ``changed_disk(raw, out, offsets)``: a copy of ``raw`` with 512 bytes flipped at each offset.
- ``import_v2(store, raw)``: that copy imported as the next version of ``educ`` (current), created a day later.
- ``done_run(store, mac, version, target_disk=...)``: a run of ``version`` verified and ended ``done``.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provision.images import ImageStore, ImageVersion
from provision.states import RunState
from provision.store import Store
from provision.wire.api import VerificationReport
from tests.support.images import CHUNK, MiB

CHANGED = (1 * MiB, 1 * MiB + 3 * CHUNK + 100, 1 * MiB + 7 * CHUNK)  # three data chunks of the first extent


def changed_disk(raw: Path, out: Path, offsets: tuple[int, ...] = CHANGED) -> Path:
    """``raw`` copied to ``out`` with 512 bytes inverted at each of ``offsets``."""
    shutil.copyfile(raw, out)
    with out.open("r+b") as f:
        for offset in offsets:
            f.seek(offset)
            data = f.read(512)
            f.seek(offset)
            f.write(bytes(255 - b for b in data))
    return out


def import_v2(store: ImageStore, raw: Path, offsets: tuple[int, ...] = CHANGED) -> ImageVersion:
    """Version 2 of ``educ``: ``raw`` with the chunks at ``offsets`` changed, imported a day after version 1."""
    disk = changed_disk(raw, raw.with_name("v2.img"), offsets)
    return store.import_raw(disk, "educ", chunk_size=CHUNK, created=datetime(2026, 11, 28, tzinfo=UTC))


def done_run(store: Store, mac: str, version: ImageVersion, target_disk: dict[str, Any] | None = None) -> str:
    """A run of ``version`` on ``mac`` (planned with ``target_disk``), read back complete, ended done."""
    store.seen(mac)
    plan = {"image": version.name, "version": version.label, "digest": version.digest,
            "target_disk": target_disk or {}}  # fmt: skip
    run = store.create_run(mac, recipe="r", image=version.name, label=version.label, digest=version.digest, plan=plan)
    data = len(version.index.chunks) - version.index.holes
    store.record_verification(run.id, VerificationReport(version.digest, data, data, True, 0, 1.0, 0.0))
    for state in (RunState.WRITING, RunState.VERIFYING, RunState.DONE):
        store.set_run_state(run.id, state)
    return run.id
