"""Where the tests find their inputs.

- ``REPO``: the repository's top folder (the working directory of ``python -m provision`` in tests).
- ``SAMPLES``: tests/samples (our captures); ``SAMPLE_PROBE``: the probe folder of a QEMU PC in it.
- ``GOLDEN``: tests/golden (expected boot scripts, GRUB configs, the live /init).
- ``IMAGES``: the repository's image definitions (images/tiny.yaml...).
- ``HARDWARE``: ../shared/hardware, probes of real PCs beside the repository (tests skip when it is absent).
- ``ARTIFACTS``: where tests leave what CI keeps (screenshots, reports): $PROVISION_ARTIFACTS, else tests/artifacts
  (ignored by git).
- ``DEB_CACHE``: the .deb cache shared by the tests that fetch Debian packages: $PROVISION_DEB_CACHE, else
  provision's default.
"""

from __future__ import annotations

import os
from pathlib import Path

from provision.bootfiles import DEFAULT_CACHE

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "samples"
SAMPLE_PROBE = SAMPLES / "probes" / "debian-vm"
GOLDEN = REPO / "tests" / "golden"
IMAGES = REPO / "images"
HARDWARE = REPO.parent / "shared" / "hardware"
ARTIFACTS = Path(os.environ.get("PROVISION_ARTIFACTS", REPO / "tests" / "artifacts"))
DEB_CACHE = Path(os.environ.get("PROVISION_DEB_CACHE", DEFAULT_CACHE))
