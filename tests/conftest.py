"""Fixtures shared by the test levels.

- ``live_env`` (session): the live environment (``provision.live.ensure_live``), built once and reused
  across sessions while its inputs do not change (tests/functional/test_live_build.py, tests/e2e). It
  trusts the server's default key (``/var/lib/provision/ssh/id_ed25519``, made on first use), so a plain
  ``ensure_live(dir)`` elsewhere gets the same build, copied from the cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.bootfiles import DEFAULT_CACHE
from provision.live import LiveResult, ensure_live, live_missing
from provision.live.build import DEFAULT_STATE
from provision.sshkeys import ServerKey, ensure_server_key

LIVE_OUT = Path(os.environ.get("PROVISION_LIVE_OUT", "/var/tmp/provision-live-test/live"))
DEB_CACHE = Path(os.environ.get("PROVISION_DEB_CACHE", DEFAULT_CACHE))


@dataclass(frozen=True)
class LiveEnv:
    result: LiveResult
    key: ServerKey  # the key pair the live environment trusts (log in with key.private_path)

    @property
    def out(self) -> Path:
        return self.result.out


@pytest.fixture(scope="session")
def live_env() -> LiveEnv:
    """The live environment in $PROVISION_LIVE_OUT (default /var/tmp/provision-live-test/live): vmlinuz,
    initrd.img, live.json. Skips when this machine cannot build it (not root, no mmdebstrap or kmod)."""
    missing = live_missing()
    if missing:
        pytest.skip("live environment cannot be built here: " + "; ".join(missing))
    key = ensure_server_key(DEFAULT_STATE)
    return LiveEnv(ensure_live(LIVE_OUT, deb_cache_dir=DEB_CACHE), key)
