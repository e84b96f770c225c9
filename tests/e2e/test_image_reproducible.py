"""debian-mini (images/debian-mini.yaml) built twice fresh from the same inputs is the same disk, bit for bit.

The first build is the e2e store's (``PROVISION_E2E_IMAGES``, /var/cache/provision/e2e-images, shared with
tests/e2e/test_hooks_debian.py) when its current version was laid out fresh from these very inputs; otherwise
it is built fresh there and published (so the next run reuses it). The second is always built fresh, into a
temporary store. Both must give the same raw disk (sha256) and the same chunk list; when they do not,
``provision image diff`` of the two, with the second imported beside the first, is in the failure message.

Costs one Debian build (~2 min on 2 CPUs, warm package cache), two when the cache is stale. Needs root,
mmdebstrap and the Debian archive (cached under /var/cache/provision).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from provision.bootfiles import DebCache
from provision.builder import build_image
from provision.builder.build import DEBIAN_TOOLS, DISK_TOOLS
from provision.builder.definition import load_definition
from provision.builder.inputs import resolve_inputs
from provision.images.index import ImageVersion
from provision.images.store import ImageStore
from tests.support.cli import run
from tests.support.paths import DEB_CACHE, IMAGES

pytestmark = pytest.mark.e2e

MINI = IMAGES / "debian-mini.yaml"
E2E_STORE = Path(os.environ.get("PROVISION_E2E_IMAGES", "/var/cache/provision/e2e-images"))


def fresh_from(version: ImageVersion | None, inputs_digest: str) -> bool:
    """Whether ``version`` was laid out fresh from these inputs (not updated in place)."""
    if version is None:
        return False
    prov = version.index.provenance
    build = prov.get("build")
    mode = build.get("mode", "fresh") if isinstance(build, dict) else "fresh"
    return prov.get("inputs") == inputs_digest and mode == "fresh"


def test_debian_mini_built_twice_fresh_is_the_same_disk(tmp_path):
    missing = [t for t in (*DISK_TOOLS, *DEBIAN_TOOLS, "dumpe2fs", "debugfs") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"cannot build debian-mini here: {'; '.join(missing) or 'not root'} (scripts/setup)")
    cache = DebCache(DEB_CACHE)
    loaded = load_definition(MINI)
    inputs = resolve_inputs(loaded, cache)
    E2E_STORE.mkdir(parents=True, exist_ok=True)
    shared = ImageStore(E2E_STORE / "store")
    first = shared.current("debian-mini")
    timings = {}
    if not fresh_from(first, inputs.digest):
        started = time.monotonic()
        built = build_image(
            loaded,
            shared,
            cache=cache,
            inputs=inputs,
            fresh=True,
            workdir=E2E_STORE / "work",
            log_dir=E2E_STORE / "logs",
        )
        timings["first"] = time.monotonic() - started
        first = built.version
        shared.retain("debian-mini", keep=2)
    assert first is not None
    started = time.monotonic()
    store = ImageStore(tmp_path / "store")
    second = build_image(
        loaded, store, cache=cache, inputs=inputs, fresh=True, workdir=tmp_path / "work", log_dir=tmp_path / "logs"
    ).version
    timings["second"] = time.monotonic() - started
    print(f"debian-mini built fresh: {', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}")
    a, b = first.index, second.index
    assert a.provenance["inputs"] == b.provenance["inputs"] == inputs.digest
    if a.chunks != b.chunks:
        imported = shared.import_raw(
            _export_raw(store, second, tmp_path), "debian-mini", publish=False, chunk_size=b.chunk_size
        )
        _, text, _ = run("image", "diff", first.ref, imported.ref, "--store", str(shared.root), "--limit", "40")
        pytest.fail(f"two fresh builds of the same inputs differ:\n{text}")
    assert a.provenance["source"]["sha256"] == b.provenance["source"]["sha256"]


def _export_raw(store: ImageStore, version: ImageVersion, tmp: Path) -> Path:
    """The raw disk of ``version`` (sparse), from its chunks."""
    raw = tmp / "second.raw"
    ix = version.index
    with raw.open("wb") as f:
        for i, c in enumerate(ix.chunks):
            if c.sha256 is not None:
                f.seek(ix.offset(i))
                f.write(store.chunks.read(c.sha256, c.length))
        f.truncate(ix.disk_size)
    return raw
