"""The server runs a run's hooks after its verified write (issue 13): in order, each result kept; a failing `fail`
hook fails the run with its name and what it said, a failing `warn` hook ends it done with warnings; SSH
refusals, an unknown hook and a missing host key fail it with that reason; `server` hooks run here with the
machine's record on stdin. The SSH session is a fake here (tests/functional/test_ssh.py tries the real one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provision.hooks import check_folders
from provision.postinstall import HookCall, PostInstall
from provision.ssh import HostKey, HostKeyMismatch
from provision.states import RunState
from provision.store import Run, Store
from provision.wire.api import VerificationReport
from provision.wire.hooks import HookJob, HookResult

MAC = "52:54:00:12:34:56"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@live"


def hook_file(folder: Path, name: str, where: str, on_failure: str = "fail", body: str = "exit 0",
              interpreter: str = "/bin/sh", params: str = "") -> None:  # fmt: skip
    path = folder / name
    path.write_text(
        f"#!{interpreter}\n# --- provision hook\n# name: {name}\n# description: test hook {name}\n# where: {where}\n"
        f"# timeout: 5\n# on_failure: {on_failure}\n{params}# ---\n{body}\n"
    )
    path.chmod(0o755)


class FakeSession:
    def __init__(self, results: dict[str, HookResult]) -> None:
        self.results = results
        self.jobs: list[HookJob] = []
        self.closed = False

    def run_hook(self, job: HookJob) -> HookResult:
        self.jobs.append(job)
        return self.results.get(job.name, HookResult(job.name, 0, False, 0.1, "fine\n", 5))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as s:
        s.seen(MAC)
        yield s


@pytest.fixture
def hooks(tmp_path: Path) -> Path:
    folder = tmp_path / "hooks"
    folder.mkdir()
    hook_file(folder, "first", "target", params="# params:\n#   word: {type: str, required: true}\n")
    hook_file(folder, "second", "live", "warn")
    hook_file(folder, "third", "target")
    echo = "import json, os, sys\nrecord = json.load(sys.stdin)\n"
    echo += "print(record['mac'], record['image'], os.environ['PROVISION_HOOK'])"
    hook_file(folder, "label", "server", body=echo, interpreter="/usr/bin/env python3")
    return folder


def verified_run(store: Store, host_key: str | None = KEY) -> Run:
    run = store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64, live_address="198.18.0.50",
                           host_key=host_key, facts={"serial": "S1"})  # fmt: skip
    store.set_run_state(run.id, RunState.WRITING)
    store.set_run_state(run.id, RunState.VERIFYING)
    store.record_verification(run.id, VerificationReport("a" * 64, 3, 3, True, 1, 1.0, 1.0))
    return store.set_run_state(run.id, RunState.HOOKS)


def post(store: Store, hooks: Path, session: FakeSession | Exception) -> PostInstall:
    catalog, problems = check_folders([hooks])
    assert problems == [], problems
    key = hooks / "id_ed25519"
    key.write_text("a key")

    def connect(address: str, host_key: HostKey, path: Path) -> Any:
        assert (address, host_key.kind, path) == ("198.18.0.50", "ssh-ed25519", key)
        if isinstance(session, Exception):
            raise session
        return session

    return PostInstall(store, lambda: catalog, key, connect=connect)


CALLS: list[dict[str, Any]] = [
    {"name": "first", "params": {"word": "; rm -rf / $(reboot)"}},
    {"name": "second"},
    {"name": "third"},
]


def test_hooks_run_in_order_and_the_run_ends_done(store: Store, hooks: Path) -> None:
    session = FakeSession({})
    run = post(store, hooks, session).run_hooks(verified_run(store), [_call(c) for c in CALLS], {"serial": "S1"})
    assert run.state is RunState.DONE and run.reason is None
    assert [j.name for j in session.jobs] == ["first", "second", "third"] and session.closed
    assert session.jobs[0].env["PROVISION_PARAM_WORD"] == "; rm -rf / $(reboot)"  # data, verbatim
    assert [(h.name, h.place, h.ok) for h in store.hook_results(run.id)] == [
        ("first", "target", True), ("second", "live", True), ("third", "target", True)
    ]  # fmt: skip


def test_a_failing_fail_hook_fails_the_run_with_its_words(store: Store, hooks: Path) -> None:
    session = FakeSession({"first": HookResult("first", 3, False, 0.2, "writing /etc/hostname\nno space left\n", 30)})
    run = post(store, hooks, session).run_hooks(verified_run(store), [_call(c) for c in CALLS], {})
    assert run.state is RunState.FAILED
    assert run.reason == "hook first failed with exit status 3: writing /etc/hostname / no space left"
    assert [j.name for j in session.jobs] == ["first"]  # nothing after a failed `fail` hook


def test_a_failing_warn_hook_ends_done_with_warnings(store: Store, hooks: Path) -> None:
    session = FakeSession({"second": HookResult("second", None, True, 5.0, "waiting\n", 8)})
    run = post(store, hooks, session).run_hooks(verified_run(store), [_call(c) for c in CALLS], {})
    assert run.state is RunState.DONE and run.reason == "done with warnings: hook second timed out: waiting"
    assert [j.name for j in session.jobs] == ["first", "second", "third"]


@pytest.mark.parametrize(
    ("session", "host_key", "calls", "reason"),
    [
        (HostKeyMismatch("198.18.0.50: host key X is not the one its hello reported"), KEY, CALLS[1:],
         "hook second: 198.18.0.50: host key X is not the one its hello reported"),
        (FakeSession({}), None, CALLS[1:], "hook second: the live environment reported no SSH host key"),
        (FakeSession({}), KEY, [{"name": "nope"}], "hook 'nope' is not in the server's hooks"),
        (FakeSession({}), KEY, [{"name": "first", "params": {"colour": "red"}}], "hook first: hook 'first': parameter"),
    ],
)  # fmt: skip
def test_what_stops_the_hooks_fails_the_run_with_that_reason(
    store: Store, hooks: Path, session: Any, host_key: str | None, calls: list[dict[str, Any]], reason: str
) -> None:
    run = post(store, hooks, session).run_hooks(verified_run(store, host_key), [_call(c) for c in calls], {})
    assert run.state is RunState.FAILED and (run.reason or "").startswith(reason), run.reason


def test_a_server_hook_reads_the_machine_record(store: Store, hooks: Path) -> None:
    session = FakeSession({})
    run = post(store, hooks, session).run_hooks(verified_run(store), [_call({"name": "label"})], {})
    assert run.state is RunState.DONE and session.jobs == []
    [result] = store.hook_results(run.id)
    assert (result.place, result.ok, result.output.strip()) == ("server", True, f"{MAC} tiny label")
    assert json.loads(json.dumps(result.to_dict()))["ok"] is True


def _call(entry: dict[str, Any]) -> HookCall:
    return HookCall.from_plan(entry)
