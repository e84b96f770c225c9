"""``provision serve`` with one image for the functional multicast tests, inside the test's network namespace
(tests/functional/test_multicast.py, test_agent_multicast_server.py).

- ``served_rack(tmp_path, netns, size, multicast)``: a default recipe imaging ``rack`` (wipe zero), a disk of
  ``size`` bytes with two data areas imported and published as ``rack``, a config with the ``multicast``
  section given, the server started in ``netns``; yields a ``RackSite`` and stops the server afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from provision.images import ImageStore
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.netns_thread import Netns
from tests.support.serve import Running, start, stop


@dataclass(frozen=True)
class RackSite:
    run: Running
    images: ImageStore
    digest: str  # the published version's
    disk: Path  # the raw disk it was imported from


@contextmanager
def served_rack(tmp_path: Path, netns: Netns, size: int, multicast: Mapping[str, object]) -> Iterator[RackSite]:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text("name: default\ndefault: true\nimage: rack\nwipe: zero\n")
    images = ImageStore(tmp_path / "images")
    disk = make_disk(tmp_path / "d.raw", size, [(MiB, 1_500_000), (4 * MiB, 300_000)], seed=16)
    version = images.import_raw(disk, "rack", chunk_size=CHUNK)
    images.publish(version)
    config = tmp_path / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(images.root),
                                  "multicast": dict(multicast)}))  # fmt: skip
    run = netns.run(start, tmp_path, "--config", str(config))
    try:
        yield RackSite(run, images, version.digest, disk)
    finally:
        if run.proc.poll() is None:
            stop(run)
