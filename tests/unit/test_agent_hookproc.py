"""One hook's process (provision.agent.hookproc): the clean environment, the output kept within bounds and cut
in the middle, stdout and stderr interleaved on one pipe, the timeout that kills the whole process group
(SIGTERM, then SIGKILL), processes left behind stopped, a signal to the runner, a fake clock. The processes are
real and short (``sh -c``); nothing here mounts anything."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from provision.agent.hookproc import (
    BASE_ENV,
    DEFAULT_PATH,
    NOTE_ROOM,
    Finished,
    Output,
    group_running,
    hook_env,
    supervise,
)
from provision.wire.hooks import MAX_OUTPUT
from tests.support.clock import Clock

ENV = {"PATH": "/usr/bin:/bin"}


def sh(command: str, timeout: float = 10, **kwargs: Any) -> tuple[Finished, Output, float]:
    output = Output()
    started = time.monotonic()
    done = supervise(["sh", "-c", command], ENV, timeout, output, **kwargs)
    return done, output, time.monotonic() - started


# ------------------------------------------------------------------------------------------ environment
def test_the_environment_is_clean_and_the_runner_owns_provision_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.1 5 10.0.0.2 22")
    monkeypatch.setenv("PYTHONPATH", "/opt/provision")
    job_env = {"PROVISION_PARAM_HOSTNAME": "poste-01", "LANG": "fr_FR.UTF-8", "PROVISION_ROOT": "/etc"}
    env = hook_env(job_env, "/run/provision/hook-x/root")
    assert env == {
        "PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "fr_FR.UTF-8", "PROVISION_PARAM_HOSTNAME": "poste-01",
        "PROVISION_ROOT": "/run/provision/hook-x/root",
    }  # fmt: skip
    assert DEFAULT_PATH == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert hook_env({}, "/") == {**BASE_ENV, "PROVISION_ROOT": "/"}


def test_the_process_gets_exactly_that_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISION_LEAK", "from the runner")
    output = Output()
    done = supervise(["/usr/bin/env"], {"A": "1", "B": "two words"}, 10, output)
    assert done.exit_code == 0
    assert sorted(output.text().splitlines()) == ["A=1", "B=two words"]


# ----------------------------------------------------------------------------------------------- output
def test_short_output_is_kept_whole() -> None:
    output = Output()
    output.feed(b"hello\n")
    output.feed(b"world\n")
    assert (output.text(), output.total) == ("hello\nworld\n", 12)
    assert output.text(["timed out"]) == "hello\nworld\n[provision-hookrun: timed out]\n"
    assert Output().text(["x"]) == "[provision-hookrun: x]\n"


def test_long_output_keeps_the_first_and_last_halves_with_a_marker() -> None:
    output = Output()
    half = (MAX_OUTPUT - NOTE_ROOM) // 2
    data = b"".join(b"%07d\n" % i for i in range(40_000))  # 320,000 bytes
    for start in range(0, len(data), 1000):  # fed in pieces, as the pipe gives them
        output.feed(data[start : start + 1000])
    text = output.text(["a note"])
    cut = len(data) - 2 * half
    assert output.total == len(data) and len(text) <= MAX_OUTPUT
    assert text.startswith(data[:half].decode()) and text.endswith(
        data[-half:].decode() + "[provision-hookrun: a note]\n"
    )
    assert f"[provision-hookrun: {cut} bytes of output cut here: {len(data)} bytes in all, the first {half} and " \
        f"the last {half} kept]" in text  # fmt: skip
    smaller = output.text(keep=100)
    assert smaller.startswith(data[:100].decode()) and smaller.endswith(data[-100:].decode())
    assert f"{len(data) - 200} bytes of output cut here" in smaller


def test_invalid_utf8_and_a_character_cut_in_two_are_replaced() -> None:
    output = Output(limit=NOTE_ROOM + 8)  # 4 bytes kept at each end
    output.feed("aaaé".encode() + b"\xff" * 10 + "éé!".encode())
    text = output.text()
    assert text.startswith("aaa\ufffd\n[provision-hookrun: 12 bytes")  # "é" cut after its first byte
    assert text.endswith("]\n\ufffdé!")  # and the other before its last
    other = Output()
    other.feed(b"ok \xff\xfe done")
    assert other.text() == "ok \ufffd\ufffd done" and other.total == 10


# ---------------------------------------------------------------------------------------------- process
def test_stdout_and_stderr_are_interleaved_and_the_exit_code_kept() -> None:
    done, output, _ = sh("echo one; echo two >&2; echo three; echo four >&2; exit 3")
    assert done.exit_code == 3 and not done.timed_out and done.notes == []
    assert output.text() == "one\ntwo\nthree\nfour\n"


def test_a_timeout_kills_the_process_group() -> None:
    done, output, elapsed = sh("echo before; sleep 30; echo never", timeout=1)
    assert (done.exit_code, done.timed_out) == (None, True)
    assert done.notes == ["timed out after 1 s: SIGTERM to the hook's process group"]
    assert output.text() == "before\n" and 1 <= elapsed < 5


def test_a_hook_ignoring_sigterm_gets_sigkill_after_the_grace() -> None:
    done, output, elapsed = sh("trap '' TERM; echo stubborn; sleep 20", timeout=1, grace=0.3)
    assert (done.exit_code, done.timed_out) == (None, True)
    assert done.notes[-1] == "still running 0.3 s after SIGTERM: SIGKILL to the process group"
    assert output.text() == "stubborn\n" and elapsed < 5


def test_the_timeout_with_a_fake_clock() -> None:
    clock = Clock(0.0)
    calls = []

    def ticking() -> float:
        calls.append(clock.now)
        clock.now += 40.0  # each look at the clock: 40 s later
        return clock.now

    done = supervise(["sleep", "30"], ENV, 100, Output(), clock=ticking, grace=1000)
    assert (done.exit_code, done.timed_out) == (None, True)
    assert done.notes[0] == "timed out after 100 s: SIGTERM to the hook's process group"
    assert len(calls) < 20  # a few real polls: SIGTERM ended it, no SIGKILL needed


def test_processes_left_behind_are_stopped(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    done, output, elapsed = sh(f"sleep 60 & echo $! > {pidfile}; echo main done")
    assert done.exit_code == 0 and output.text() == "main done\n" and elapsed < 5
    assert done.notes == ["processes the hook started were still running when it exited: SIGTERM to them"]
    assert not running(int(pidfile.read_text()))


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_group_running_ignores_zombies_and_sees_a_live_member() -> None:
    assert not group_running(999_999_999 % (1 << 22) + 4_000_000)  # no such group
    assert group_running(os.getpgid(0))  # this test's own group


def test_a_signal_to_the_runner_stops_the_hook() -> None:
    asked = []

    def stopped() -> int | None:
        asked.append(1)
        return signal.SIGTERM if len(asked) > 3 else None

    done, _, elapsed = sh("echo started; sleep 30", stopped=stopped)
    assert (done.exit_code, done.timed_out, done.stopped_by) == (None, False, signal.SIGTERM)
    assert done.notes == ["the runner got SIGTERM: SIGTERM to the hook's process group"]
    assert elapsed < 5


def test_a_hook_killed_by_a_signal_has_no_exit_code() -> None:
    done, output, _ = sh("echo bye; kill -9 $$")
    assert (done.exit_code, done.timed_out) == (None, False)
    assert done.notes == ["killed by SIGKILL"] and output.text() == "bye\n"


def test_a_flood_of_output_is_counted_and_cut() -> None:
    done, output, _ = sh("head -c 1000000 /dev/zero | tr '\\0' a; echo; echo end")
    assert done.exit_code == 0 and output.total == 1_000_005
    text = output.text()
    assert text.startswith("aaaa") and text.endswith("a\nend\n") and len(text) <= MAX_OUTPUT


def test_a_program_that_cannot_start_raises() -> None:
    with pytest.raises(FileNotFoundError):
        supervise(["/nonexistent/hook"], ENV, 10, Output())
