"""e2e fixtures: boot timings shown at the end of the run and the shared boot root (the harness itself:
tests/support/e2e.py).

- ``timing`` (fixture): record one boot milestone of the current test; a table is printed at the end.
- ``netboot_root`` (session fixture): ``provision.lab.prepare_netboot_root``, a boot root from Debian packages
  plus the test initramfs (TEST_INIT) at ``live/initrd.img``; ``trixie_rom``: Debian 13's iPXE ROM.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.bootfiles import BootRoot, qemu_roms
from provision.lab import prepare_netboot_root
from tests.support.e2e import Timing, require_lab
from tests.support.paths import DEB_CACHE

TIMINGS: list[tuple[str, str, float]] = []  # (test, milestone, seconds since QEMU start)


@pytest.fixture
def timing(request: pytest.FixtureRequest) -> Timing:
    """``timing(milestone, seconds)`` records one boot milestone of the current test."""

    def record(milestone: str, seconds: float) -> None:
        TIMINGS.append((request.node.name, milestone, seconds))
        request.node.user_properties.append((milestone, round(seconds, 1)))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("lab boot timings (seconds since QEMU start)")
    for test, milestone, seconds in TIMINGS:
        terminalreporter.write_line(f"{test:<45} {milestone:<38} {seconds:6.1f}")


@pytest.fixture(scope="session")
def netboot_root(tmp_path_factory: pytest.TempPathFactory) -> BootRoot:
    """One boot root for the session: iPXE, shim, signed GRUB, Debian's signed kernel (from the .deb cache,
    downloaded on first use) and the test initramfs (virtio NIC + disk) at ``live/initrd.img``."""
    require_lab()
    return prepare_netboot_root(tmp_path_factory.mktemp("netboot-root"), cache_dir=DEB_CACHE)


@pytest.fixture(scope="session")
def trixie_rom(netboot_root: BootRoot) -> Path:
    """Debian 13's iPXE ROM for a virtio NIC (iPXE 2025: no ~13 s wait after DHCP like QEMU's 2019 ROM)."""
    return qemu_roms(cache_dir=DEB_CACHE) / "pxe-virtio.rom"
