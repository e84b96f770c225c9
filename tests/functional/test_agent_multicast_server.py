"""Rack multicast end to end: ``provision serve`` (config ``transfer: multicast``) and four real agents
(``python -m provision.agent``) inside a network namespace of the test's own; one agent starts late, one is
killed (SIGKILL) while it listens. The three others image their disks from the server's carousel, verified,
and their runs record how the chunks came. Skipped, with the reason, when not root or without ``ip``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from provision.wire import paths
from tests.support.files import sha256_file, sparse_file
from tests.support.images import MiB
from tests.support.netns_thread import Netns, netns, skip_reason
from tests.support.paths import SAMPLE_PROBE
from tests.support.rack_site import served_rack
from tests.support.serve import Running

__all__ = ["netns"]  # the fixture, from tests/support/netns_thread.py

PORT = 18127
RATE = 1_500_000  # bytes a second: a pass of the test image takes about 1.3 s
SIZE = 6 * MiB
MACS = {"pc1": "52:54:00:16:01:01", "pc2": "52:54:00:16:01:02", "late": "52:54:00:16:01:03",
        "killed": "52:54:00:16:01:04"}  # fmt: skip

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture
def served(tmp_path: Path, netns: Netns) -> Iterator[tuple[Running, Path]]:
    multicast = {"port": PORT, "rate": RATE, "keepalive_seconds": 1, "transfer": "multicast"}
    with served_rack(tmp_path, netns, SIZE, multicast) as site:
        yield site.run, site.disk


def token_of(url: str, mac: str) -> str:
    script = requests.get(url + paths.boot_ipxe(mac), timeout=10).text
    found = re.search(r"provision\.token=([0-9a-f]+)", script)
    assert found is not None, script
    return found.group(1)


def spawn(url: str, name: str, token: str, tmp: Path) -> subprocess.Popen[str]:
    disks = tmp / name
    disks.mkdir()
    sparse_file(disks / "vda", SIZE + MiB)
    argv = [sys.executable, "-m", "provision.agent", "--server", url, "--mac", MACS[name], "--token", token,
            "--probe-dir", str(SAMPLE_PROBE), "--disks-from", str(disks), "--once", "--no-grow", "--no-screen",
            "--no-firstboot-secret", "--workers", "2", "--cmdline", "/dev/null", "-v"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class Watch:
    """An agent's stderr read on a thread; ``joined`` is set once it listens to the carousel."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc, self.lines, self.joined = proc, list[str](), threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.lines.append(line)
                if "multicast: joined" in line:
                    self.joined.set()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self.thread.join(timeout=5)
        return code


def test_four_agents_one_late_one_killed_the_others_verified_from_the_carousel(
    served: tuple[Running, Path], netns: Netns, tmp_path: Path
) -> None:
    run, raw = served
    tokens = {name: netns.run(token_of, run.url, mac) for name, mac in MACS.items()}
    watches = {name: Watch(netns.run(spawn, run.url, name, tokens[name], tmp_path)) for name in ("pc1", "pc2")}
    watches["killed"] = Watch(netns.run(spawn, run.url, "killed", tokens["killed"], tmp_path))
    try:
        assert watches["killed"].joined.wait(30), "".join(watches["killed"].lines)
        time.sleep(0.4)  # a third of a pass in
        watches["killed"].proc.kill()
        watches["late"] = Watch(netns.run(spawn, run.url, "late", tokens["late"], tmp_path))
        codes = {name: w.wait(120) for name, w in watches.items()}
    finally:
        for w in watches.values():
            if w.proc.poll() is None:
                w.proc.kill()
    assert codes["killed"] == -9
    for name in ("pc1", "pc2", "late"):
        log = "".join(watches[name].lines)
        assert codes[name] == 0, f"{name}: exit {codes[name]}\n{log[-3000:]}"
        assert "multicast: joined" in log and "multicast: left" in log, log[-3000:]
        assert sha256_file(tmp_path / name / "vda", SIZE) == sha256_file(raw), name
        shown = subprocess.run([sys.executable, "-m", "provision", "runs", MACS[name], "--state-dir", str(run.state)],
                               capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
        assert "transfer multicast:" in shown and "by multicast" in shown, shown
    assert "multicast: left" not in "".join(watches["killed"].lines)
