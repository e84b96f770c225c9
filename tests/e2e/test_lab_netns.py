"""The lab's namespace, bridge, taps and process tracking, without QEMU (needs root; ~2 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from provision.lab import Lab, LabError, LabTimeout, cleanup_stale_labs, missing_prerequisites

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(missing_prerequisites(())), reason="lab unavailable: " + "; ".join(missing_prerequisites(()))
    ),
]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_lab_creates_and_removes_everything():
    with Lab("198.18.5.0/24") as lab:
        assert lab.name in namespaces()
        assert lab.name.startswith(f"prov-{os.getpid()}-")
        workdir = lab.workdir
        addr = lab.ip("-4", "-o", "addr", "show", "dev", "br0").stdout
        assert "198.18.5.1/24" in addr
        assert lab.run(["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]).stdout.strip() == "1"
        assert "<LOOPBACK,UP" in lab.ip("link", "show", "lo").stdout
        tap = lab.add_tap()
        assert tap == "tap0"
        assert "master br0" in lab.ip("link", "show", tap).stdout
        sleeper = lab.popen(["sleep", "600"], log_name="sleeper")
        assert alive(sleeper.pid)
    assert lab.name not in namespaces()
    assert sleeper.returncode is not None
    assert not workdir.exists()


def test_cleanup_on_exception():
    with pytest.raises(RuntimeError, match="boom"), Lab() as lab:
        proc = lab.popen(["sleep", "600"])
        raise RuntimeError("boom")
    assert lab.name not in namespaces()
    assert proc.returncode is not None


def test_run_reports_failures():
    with Lab() as lab:
        with pytest.raises(LabError, match=r"false failed \(1\)"):
            lab.run(["false"])
        assert lab.run(["false"], check=False).returncode == 1
        with pytest.raises(LabTimeout, match="timed out"):
            lab.run(["sleep", "5"], timeout=0.2)


def test_wait_tcp(tmp_path):
    with Lab() as lab:
        with pytest.raises(LabTimeout, match="nothing listens"):
            lab.wait_tcp(8080, timeout=0.3)
        server = [sys.executable, "-m", "http.server", "--bind", str(lab.address), "--directory", str(tmp_path)]
        lab.popen([*server, "8080"], log_name="http")
        lab.wait_tcp(8080, timeout=10)
        assert lab.log_path("http").exists()


def test_two_labs_side_by_side():
    with Lab() as first, Lab() as second:
        assert first.name != second.name
        assert {first.name, second.name} <= namespaces()


def test_stale_lab_of_a_dead_process_is_removed():
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"prov-{dead.pid}-1"
    subprocess.run(["ip", "netns", "add", name], check=True)
    orphan = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"], start_new_session=True)
    try:
        time.sleep(0.2)
        assert name in cleanup_stale_labs()
        assert name not in namespaces()
        assert orphan.wait(5) is not None
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
