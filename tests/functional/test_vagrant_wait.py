"""contrib/vagrant/wait-imaged, the end of the Vagrant lab's `vagrant up` (docs/vagrant.md), against a real server:
`provision serve` on 127.0.0.1 and the agent in this process image one PC (done, verified) and fail another (its
disk too small); the script reads them with `provision machines --json`, as on the lab's server.

Shown: every MAC done and verified -> exit 0 with the image and digest; a failed one -> exit 1 at once; a MAC
never seen -> exit 1 after PROVISION_WAIT_SECONDS.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import MiB
from tests.support.paths import REPO
from tests.support.runs import Site, disks, in_process, make_site

SCRIPT = REPO / "contrib" / "vagrant" / "wait-imaged"
DONE, FAILED, UNSEEN = "52:54:00:de:01:01", "52:54:00:de:01:02", "52:54:00:de:01:03"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Path]]:
    """A server with one PC imaged and one failed, and the configuration naming its state directory."""
    tmp = tmp_path_factory.mktemp("vagrant-wait")
    with make_site(tmp) as site:
        assert in_process(site, tmp / "done", DONE).state == "done"
        small = disks(tmp / "small", ("vda", 2 * MiB, None))
        assert in_process(site, tmp / "failed", FAILED, disks_from=small).state == "failed"
        config = tmp / "provision.yaml"
        config.write_text(f"state_dir: {site.server.state_dir}\n")
        yield site, config


def wait_imaged(config: Path, *macs: str, seconds: int = 30) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PROVISION_BIN": str(Path(sys.executable).with_name("provision")),
        "PROVISION_CONFIG": str(config),
        "PROVISION_WAIT_SECONDS": str(seconds),
    }
    return subprocess.run([str(SCRIPT), *macs], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_every_pc_done_and_verified_ends_the_wait(lab: tuple[Site, Path]) -> None:
    site, config = lab
    done = wait_imaged(config, DONE.upper())
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wait-imaged: {DONE}: done, educ@{site.version.label} verified {site.version.digest[:12]}\n"


def test_a_failed_pc_ends_the_wait_at_once(lab: tuple[Site, Path]) -> None:
    _, config = lab
    done = wait_imaged(config, DONE, FAILED)
    assert done.returncode == 1
    assert f"wait-imaged: {FAILED}: failed\n" in done.stdout
    assert "provision runs MAC" in done.stderr


def test_a_pc_never_seen_times_out(lab: tuple[Site, Path]) -> None:
    _, config = lab
    done = wait_imaged(config, DONE, UNSEEN, seconds=1)
    assert done.returncode == 1
    assert f"wait-imaged: {UNSEEN}: not seen yet\n" in done.stdout
    assert "not all imaged after 1 s" in done.stderr


def test_a_command_that_fails_ends_the_wait_with_its_error(tmp_path: Path) -> None:
    bad = tmp_path / "provision.yaml"
    bad.write_text("adress: 198.18.0.1\n")  # a typo: provision machines refuses the configuration
    done = wait_imaged(bad, DONE)
    assert done.returncode == 1
    assert "machines --config" in done.stderr and "adress: unknown key" in done.stderr, done.stderr
    assert done.stdout == ""


def test_no_mac_is_a_usage_error() -> None:
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 2 and "usage: wait-imaged MAC..." in done.stderr
