"""The systemd units of contrib/systemd: ``systemd-analyze verify`` finds nothing to say, the server's hardening
scores as systemd rates it, and ``provision serve`` runs with exactly the capabilities its unit leaves it.

``verify`` checks that ExecStart's program exists; the units name the installed /opt/provision/.venv, so a copy
of each unit is verified with that path pointing at this venv's ``provision`` (the rest of the unit unchanged).
The capability test runs the server as root through ``setpriv`` with the unit's CapabilityBoundingSet and
NoNewPrivileges (what systemd applies), on lo with the real ports 67, 69 and 4011: it must start and answer;
with no capability at all it must refuse, naming CAP_NET_BIND_SERVICE (the set is not larger than needed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.paths import REPO
from tests.support.wait import wait_for

pytestmark = pytest.mark.interop

UNITS = REPO / "contrib" / "systemd"
INSTALLED = "/opt/provision/.venv/bin/provision"
PROVISION = Path(sys.executable).with_name("provision")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (Debian package systemd)")


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer"))


def local_copy(tmp_path: Path) -> list[Path]:
    """The units with ExecStart's program at this venv's ``provision``."""
    assert PROVISION.is_file(), f"{PROVISION}: the venv's entry point (pip install -e .)"
    copies = []
    for unit in unit_files():
        text = unit.read_text()
        copy = tmp_path / unit.name
        copy.write_text(text.replace(INSTALLED, str(PROVISION)))
        copies.append(copy)
    return copies


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    argv = [ANALYZE, "verify", "--man=no", *map(str, units)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def about(output: str, units: list[Path]) -> list[str]:
    """The lines of ``verify`` about our units (systemd may also talk about the host's own units)."""
    return [line for line in output.splitlines() if any(u.name in line for u in units)]


@needs_analyze
def test_every_unit_verifies_clean(tmp_path: Path) -> None:
    copies = local_copy(tmp_path)
    assert {c.name for c in copies} >= {"provision.service", "provision-image-rebuild.service",
                                        "provision-image-rebuild.timer"}  # fmt: skip
    done = verify(*copies)
    assert done.returncode == 0, done.stderr
    assert about(done.stdout + done.stderr, copies) == []
    for unit in unit_files():
        assert INSTALLED in unit.read_text() or unit.suffix == ".timer", f"{unit}: one install path for all units"


@needs_analyze
def test_verify_would_see_a_wrong_key_or_program(tmp_path: Path) -> None:
    [service] = [c for c in local_copy(tmp_path) if c.name == "provision.service"]
    text = service.read_text()
    service.write_text(text.replace("[Service]\n", "[Service]\nRestartEvery=5\n"))
    assert any("RestartEvery" in line for line in about(verify(service).stderr, [service]))
    service.write_text(text.replace(str(PROVISION), "/nonexistent/provision"))
    assert verify(service).returncode != 0


@needs_analyze
def test_the_server_s_hardening_scores_ok(tmp_path: Path) -> None:
    [service] = [c for c in local_copy(tmp_path) if c.name == "provision.service"]
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "security", "--offline=yes", str(service)], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or later")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= 2.5, done.stdout  # systemd's "OK" is below 4.0; the unit scores 2.0


def unit_setting(name: str) -> str:
    values: list[str] = re.findall(rf"^{name}=(.*)$", (UNITS / "provision.service").read_text(), re.M)
    assert len(values) == 1, f"{name}: {values}"
    return values[0].strip()


def setpriv(caps: list[str]) -> list[str]:
    bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    return ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs"]


def ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))  # a test that the port is free, closed at once
            except OSError:
                return False
    return True


@pytest.fixture
def serve_argv(tmp_path: Path) -> Iterator[list[str]]:
    if not ports_free(67, 69, 4011):
        pytest.skip("UDP 67, 69 or 4011 is in use on this machine")
    (tmp_path / "boot").mkdir()
    yield [str(PROVISION), "serve", "--interface", "lo", "--address", "127.0.0.1", "--dhcp", "proxy",
           "--state-dir", str(tmp_path / "state"), "--boot-root", str(tmp_path / "boot"), "--http-port", "0",
           "--ready-file", str(tmp_path / "ready.json")]  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="the unit runs the server as root: needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (Debian package util-linux)")
def test_serve_runs_with_the_unit_s_capabilities_only(serve_argv: list[str], tmp_path: Path) -> None:
    caps = unit_setting("CapabilityBoundingSet").split()
    assert unit_setting("NoNewPrivileges") == "yes"
    proc = subprocess.Popen([*setpriv(caps), *serve_argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = tmp_path / "ready.json"
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 30, interval=0.05)
        assert ready.exists(), proc.communicate(timeout=5)
        ports = json.loads(ready.read_text())
        assert (ports["dhcp"], ports["tftp"], ports["proxy"]) == (67, 69, 4011)
        status = (Path("/proc") / str(ports["pid"]) / "status").read_text()
        assert re.search(r"^CapEff:\s+0+400$", status, re.M), status  # CAP_NET_BIND_SERVICE (bit 10) only
        assert requests.get(f"http://127.0.0.1:{ports['http']}/metrics", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "provision: stopped" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="the unit runs the server as root: needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (Debian package util-linux)")
def test_without_the_capability_serve_refuses_and_says_which(serve_argv: list[str]) -> None:
    done = subprocess.run([*setpriv([]), *serve_argv], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "CAP_NET_BIND_SERVICE" in done.stderr, done.stderr
