"""Fixtures shared by the test levels.

- ``live_env`` (session): the live environment (``provision.live.ensure_live``), built once and reused
  across sessions while its inputs do not change (tests/functional/test_live_build.py, tests/e2e). It
  trusts the server's default key (``/var/lib/provision/ssh/id_ed25519``, made on first use), so a plain
  ``ensure_live(dir)`` elsewhere gets the same build, copied from the cache. ``LiveEnv`` and ``LIVE_OUT``:
  tests/support/live.py.
- the terminal summary ends with one line per fuzz target that ran: its cases and failures
  (tests/support/fuzz.py).
"""

from __future__ import annotations

import pytest

from provision.live import ensure_live, live_missing
from provision.live.build import DEFAULT_STATE
from provision.sshkeys import ensure_server_key
from tests.support import fuzz
from tests.support.live import LIVE_OUT, LiveEnv
from tests.support.paths import DEB_CACHE


@pytest.fixture(scope="session")
def live_env() -> LiveEnv:
    """The live environment in $PROVISION_LIVE_OUT (default /var/tmp/provision-live-test/live): vmlinuz,
    initrd.img, live.json. Skips when this machine cannot build it (not root, no mmdebstrap or kmod)."""
    missing = live_missing()
    if missing:
        pytest.skip("live environment cannot be built here: " + "; ".join(missing))
    key = ensure_server_key(DEFAULT_STATE)
    return LiveEnv(ensure_live(LIVE_OUT, deb_cache_dir=DEB_CACHE), key)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzz targets' case counts (tests/support/fuzz.py), so CI logs show what each one ran."""
    lines = fuzz.summary()
    if lines:
        terminalreporter.section("fuzz")
        for line in lines:
            terminalreporter.write_line(line)
