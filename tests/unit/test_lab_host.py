"""The lab's host side without namespaces: lab names, processes by PID, prerequisites."""

from __future__ import annotations

import os
import subprocess
import sys

from provision.lab.host import NAME_RE, kill_pid, missing_prerequisites, new_lab_name, pid_alive


def test_new_lab_names_carry_our_pid_and_match_what_cleanup_looks_for() -> None:
    first, second = new_lab_name(), new_lab_name()
    assert first != second
    for name in (first, second):
        match = NAME_RE.match(name)
        assert match is not None and int(match.group(1)) == os.getpid()


def test_pid_alive_and_kill_pid() -> None:
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(proc.pid)
        kill_pid(proc.pid, timeout=5.0)
        proc.wait(5)
        assert not pid_alive(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_prerequisites_is_a_list_of_reasons() -> None:
    missing = missing_prerequisites(())
    assert isinstance(missing, list) and all(isinstance(item, str) for item in missing)
