"""The server's SSH client against a real dropbear on 127.0.0.1 (issue 13): the server's key logs in, the host key
the hello reported is pinned (another key, no answer, a refused key: each fails with that reason), the job
travels as JSON on stdin of the one fixed command and hostile parameter values arrive verbatim."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.ssh import HostKey, HostKeyMismatch, LiveRefusedKey, LiveSession, LiveUnreachable
from provision.sshkeys import ensure_server_key
from provision.wire.hooks import HookJob
from tests.support.dropbear import Dropbear, dropbear_missing, free_port

pytestmark = pytest.mark.skipif(dropbear_missing() is not None, reason=str(dropbear_missing()))

# What the live environment's hook runner does, in miniature: read the job, answer a result whose output is the
# job's environment as the runner received it (so the test sees what arrived).
ECHO_RUNNER = r"""
import json, sys
job = json.loads(sys.stdin.read())
out = "".join(f"{k}={v}\n" for k, v in sorted(job["env"].items()))
print(json.dumps({"name": job["name"], "exit_code": 0, "timed_out": False, "seconds": 0.01,
                  "output": out, "output_bytes": len(out.encode())}))
"""
HOSTILE = ["; rm -rf /", "$(reboot)", "`id`", "'\"", "two\nlines", "é ß ✓"]


@pytest.fixture
def server_key(tmp_path: Path) -> Path:
    return ensure_server_key(tmp_path / "state").private_path


@pytest.fixture
def live(tmp_path: Path, server_key: Path) -> Iterator[Dropbear]:
    public = server_key.with_suffix(".pub").read_text()
    daemon = Dropbear(tmp_path / "live", public, [sys.executable, "-c", ECHO_RUNNER])
    try:
        yield daemon
    finally:
        daemon.stop()


def job(**env: str) -> HookJob:
    return HookJob("hostname", "target", "#!/bin/sh\nexit 0\n", 30, dict(env))


def test_the_job_arrives_as_data_and_the_result_comes_back(live: Dropbear, server_key: Path) -> None:
    env = {f"PROVISION_PARAM_V{i}": value for i, value in enumerate(HOSTILE)}
    with LiveSession("127.0.0.1", HostKey.parse(live.host_key_line), server_key, port=live.port) as session:
        result = session.run_hook(job(**env))
    assert result.ok and result.name == "hostname"
    lines = result.output.split("PROVISION_PARAM_")[1:]
    assert {line.split("=", 1)[0]: line.split("=", 1)[1].rstrip("\n") for line in lines} == {
        f"V{i}": value for i, value in enumerate(HOSTILE)
    }


def test_another_host_key_is_refused(live: Dropbear, server_key: Path, tmp_path: Path) -> None:
    other = Dropbear(tmp_path / "other", server_key.with_suffix(".pub").read_text(), [sys.executable, "-c", "0"])
    other.stop()
    with pytest.raises(HostKeyMismatch, match="not the one its hello reported"):
        LiveSession("127.0.0.1", HostKey.parse(other.host_key_line), server_key, port=live.port)


def test_a_key_the_live_environment_does_not_trust_is_refused(live: Dropbear, tmp_path: Path) -> None:
    stranger = ensure_server_key(tmp_path / "stranger").private_path
    with pytest.raises(LiveRefusedKey, match="refused the server's key"):
        LiveSession("127.0.0.1", HostKey.parse(live.host_key_line), stranger, port=live.port)


def test_no_answer_is_unreachable(server_key: Path, tmp_path: Path) -> None:
    key = HostKey.parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x")
    with pytest.raises(LiveUnreachable, match="no SSH answer") as exc:
        LiveSession("127.0.0.1", key, server_key, port=free_port())
    assert exc.value.retryable


def test_a_runner_that_answers_nothing_usable_is_a_result_with_the_reason(tmp_path: Path, server_key: Path) -> None:
    broken = Dropbear(
        tmp_path / "broken", server_key.with_suffix(".pub").read_text(), ["sh", "-c", "echo oops >&2; exit 7"]
    )
    try:
        with LiveSession("127.0.0.1", HostKey.parse(broken.host_key_line), server_key, port=broken.port) as session:
            result = session.run_hook(job())
    finally:
        broken.stop()
    assert not result.ok and result.error is not None and "exit status 7" in result.error and "oops" in result.error
