"""Host names unique in the store, a hook run again by hand, and how runs show their hooks (issue 13).

- ``free_hostname`` / ``Store.claim_hostname``: a name another machine has gets ``-2``, ``-3`` … (case does not
  matter, 63 characters at most); a machine keeps its own; each claim is kept on the machine with an event.
- ``PostInstall``: the ``hostname`` hook gets the unique name; a value that is no host name is passed on as it
  is (the hook refuses it) and claims nothing. ``rerun``: the newest run with a live environment, the plan's
  parameters with ``--param`` values on top, the result kept with the run (``rerun``), its state unchanged;
  refused without a live environment, while the disk is written or the hooks run, for an unknown hook.
- ``provision runs MAC`` (text and JSON) lists each run's hooks and warnings; ``provision hooks run`` misuse.
- ``hooks.ssh_port``, ``hooks.dir`` and ``hooks.workers`` in the server configuration.
The SSH session is a fake (tests/functional/test_hooks_run.py runs the real chain).
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provision.cli import main
from provision.config import load_config
from provision.errors import ConfigError, RunConflict
from provision.hooks import OnFailure, builtin_dir, check_folders
from provision.postinstall import HookCall, PostInstall, RerunRefused
from provision.ssh import HostKey
from provision.states import RunState
from provision.store import Run, Store
from provision.store.runrecords import free_hostname
from provision.wire.api import VerificationReport
from provision.wire.hooks import HookJob, HookResult

MAC, OTHER, THIRD = "52:54:00:12:34:56", "52:54:00:12:34:57", "52:54:00:12:34:58"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@live"


class FakeSession:
    def __init__(self, results: dict[str, HookResult] | None = None) -> None:
        self.results = results or {}
        self.jobs: list[HookJob] = []
        self.closed = 0

    def run_hook(self, job: HookJob) -> HookResult:
        self.jobs.append(job)
        return self.results.get(job.name, HookResult(job.name, 0, False, 0.25, f"{job.name}: fine\n", 10))

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as s:
        for mac in (MAC, OTHER, THIRD):
            s.seen(mac)
        yield s


@pytest.fixture
def hooks(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    path = folder / "motd"
    path.write_text(
        "#!/bin/sh\n# --- provision hook\n# name: motd\n# description: test\n# where: target\n# timeout: 9\n"
        "# params:\n#   text: {type: str, required: true}\n#   count: {type: int, default: 1}\n"
        "#   items: {type: 'list[str]', default: []}\n# ---\nexit 0\n"
    )
    path.chmod(0o755)
    for name in ("hostname", "locale", "identity"):  # built-in ones (hostname: the server treats it apart)
        shutil.copy2(builtin_dir() / name, folder / name)
    return folder


def run_of(store: Store, mac: str = MAC, state: RunState = RunState.HOOKS, plan: dict[str, Any] | None = None) -> Run:
    run = store.create_run(mac, recipe="r", image="tiny", label="L", digest="a" * 64, live_address="198.18.0.50",
                           host_key=KEY, facts={"serial": "S1"}, plan=plan)  # fmt: skip
    store.set_run_state(run.id, RunState.WRITING)
    store.set_run_state(run.id, RunState.VERIFYING)
    store.record_verification(run.id, VerificationReport("a" * 64, 3, 3, True, 1, 1.0, 1.0))
    run = store.set_run_state(run.id, RunState.HOOKS)
    if state is RunState.HOOKS:
        return run
    return store.set_run_state(run.id, state, None if state is RunState.DONE else "why")


def post(store: Store, hooks: Path, session: FakeSession) -> PostInstall:
    catalog, problems = check_folders([hooks])
    assert problems == [], problems
    key = hooks.parent / "id_ed25519"
    key.write_text("a key")

    def connect(address: str, host_key: HostKey, path: Path) -> Any:
        assert (address, host_key.kind, path) == ("198.18.0.50", "ssh-ed25519", key)
        return session

    return PostInstall(store, lambda: catalog, key, connect=connect)


# ------------------------------------------------------------------------------------------- host names
@pytest.mark.parametrize(
    ("wanted", "taken", "given"),
    [
        ("pc", set(), "pc"),
        ("pc", {"pc"}, "pc-2"),
        ("PC", {"pc", "pc-2"}, "PC-3"),
        ("pc-2", {"pc-2"}, "pc-2-2"),
        ("a" * 63, {"a" * 63}, "a" * 61 + "-2"),
        ("a" * 60 + "-bc", {"a" * 60 + "-bc"}, "a" * 60 + "-2"),  # cut, and no "--" left
    ],
)
def test_free_hostname(wanted: str, taken: set[str], given: str) -> None:
    assert free_hostname(wanted, taken) == given and len(given) <= 63


def test_claims_are_unique_and_a_machine_keeps_its_own(store: Store) -> None:
    first, second, third = run_of(store, MAC), run_of(store, OTHER), run_of(store, THIRD)
    assert store.claim_hostname(first.id, "salle-a") == "salle-a"
    assert store.claim_hostname(second.id, "Salle-A") == "Salle-A-2"
    assert store.claim_hostname(third.id, "salle-a") == "salle-a-3"
    again = run_of(store, MAC)  # the first machine imaged again
    assert store.claim_hostname(again.id, "salle-a") == "salle-a"
    assert [store.machine_hostname(m) for m in (MAC, OTHER, THIRD)] == ["salle-a", "Salle-A-2", "salle-a-3"]
    machine = store.machine(OTHER)
    assert machine is not None and machine.hostname == "Salle-A-2" and machine.to_dict()["hostname"] == "Salle-A-2"
    events = [e.detail for e in store.events(MAC, "hostname")]
    assert events == [{"run": first.id, "wanted": "salle-a", "hostname": "salle-a"},
                      {"run": again.id, "wanted": "salle-a", "hostname": "salle-a"}]  # fmt: skip


def test_the_hostname_hook_gets_the_unique_name(store: Store, hooks: Path) -> None:
    store.claim_hostname(run_of(store, OTHER, RunState.DONE).id, "poste-1")
    session = FakeSession()
    calls = [HookCall("hostname", {"hostname": "poste-1"})]
    run = post(store, hooks, session).run_hooks(run_of(store), calls, {})
    assert run.state is RunState.DONE
    assert session.jobs[0].env["PROVISION_PARAM_HOSTNAME"] == "poste-1-2"
    assert store.machine_hostname(MAC) == "poste-1-2"
    [event] = [e.detail for e in store.events(MAC, "hostname")]
    assert event == {"run": run.id, "wanted": "poste-1", "hostname": "poste-1-2"}


@pytest.mark.parametrize("value", ["pc-; rm -rf /", "pc-$(reboot)", "pc\nother", "-pc", "a" * 64, "élève"])
def test_a_value_that_is_no_host_name_is_passed_on_and_claims_nothing(store: Store, hooks: Path, value: str) -> None:
    session = FakeSession()
    post(store, hooks, session).run_hooks(run_of(store), [HookCall("hostname", {"hostname": value})], {})
    assert session.jobs[0].env["PROVISION_PARAM_HOSTNAME"] == value  # the hook refuses it in plain words
    assert store.machine_hostname(MAC) is None and store.events(MAC, "hostname") == []


# ----------------------------------------------------------------------------------------------- rerun
PLAN = {"hooks": [{"name": "motd", "params": {"text": "from the plan", "count": 2}, "timeout": 30,
                   "on_failure": "warn"}]}  # fmt: skip


def test_rerun_uses_the_plan_and_the_given_values_and_keeps_the_result(store: Store, hooks: Path) -> None:
    run = run_of(store, state=RunState.FAILED, plan=PLAN)
    store.record_hook(run_of(store, OTHER).id, 0, "target", "fail", HookResult("motd", 0, False, 1.0))
    session = FakeSession()
    given = [("count", "7"), ("items", "a b"), ("items", "$(reboot)")]
    found, record = post(store, hooks, session).rerun(MAC, "motd", given)
    assert found.id == run.id and session.closed == 1
    [job] = session.jobs
    assert (job.timeout, job.env["PROVISION_PARAM_TEXT"], job.env["PROVISION_PARAM_COUNT"]) == (
        30,
        "from the plan",
        "7",
    )
    assert job.env["PROVISION_PARAM_ITEMS"] == "a b\n$(reboot)" and job.env["PROVISION_RUN"] == run.id
    assert (record.name, record.rerun, record.on_failure, record.position, record.ok) == ("motd", True, "warn", 0, True)
    failing = FakeSession({"motd": HookResult("motd", 3, False, 0.5, "no\n", 3)})
    _, second = post(store, hooks, failing).rerun(MAC, "motd", [("text", "mine")])
    assert (second.position, second.exit_code, second.ok) == (1, 3, False)
    assert failing.jobs[0].env["PROVISION_PARAM_TEXT"] == "mine"
    after = store.run(run.id)
    assert after is not None and (after.state, after.reason) == (RunState.FAILED, "why")  # unchanged
    assert [e.detail["rerun"] for e in store.events(MAC, "hook")] == [True, True]


def test_rerun_of_the_hostname_hook_claims_again(store: Store, hooks: Path) -> None:
    run_of(store, state=RunState.DONE)
    session = FakeSession()
    _, record = post(store, hooks, session).rerun(MAC, "hostname", [("hostname", "atelier")])
    assert record.ok and session.jobs[0].env["PROVISION_PARAM_HOSTNAME"] == "atelier"
    assert store.machine_hostname(MAC) == "atelier"


def test_rerun_refusals(store: Store, hooks: Path) -> None:
    session = FakeSession()
    postinstall = post(store, hooks, session)
    with pytest.raises(RerunRefused, match="no run of this machine reported a live environment"):
        postinstall.rerun(MAC, "motd")
    run = run_of(store)
    with pytest.raises(RunConflict, match=f"run {run.id} is hooks: wait until it ends"):
        postinstall.rerun(MAC, "motd")
    store.set_run_state(run.id, RunState.FAILED, "x")
    with pytest.raises(RerunRefused, match="no hook 'nope'"):
        postinstall.rerun(MAC, "nope")
    with pytest.raises(Exception, match="requires this parameter"):  # motd's text: not in a plan, not given
        postinstall.rerun(MAC, "motd")
    assert session.jobs == [] and store.hook_results(run.id) == []


# ------------------------------------------------------------------------------------------------- CLI
def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_runs_shows_each_hook_and_the_warnings(tmp_path: Path, hooks: Path) -> None:
    with Store(tmp_path / "state" / "provision.db") as store:
        store.seen(MAC)
        session = FakeSession({
            "locale": HookResult("locale", 4, False, 0.5, "locale: no\n", 11),
            "identity": HookResult("identity", None, True, 9.0, "slow\n", 5),
        })  # fmt: skip
        calls = [HookCall("hostname", {"hostname": "pc-1"}), HookCall("locale", {}, None, OnFailure.WARN),
                 HookCall("identity", {}, None, OnFailure.WARN)]  # fmt: skip
        run = post(store, hooks, session).run_hooks(run_of(store), calls, {})
        assert run.state is RunState.DONE
    code, out, _ = cli("runs", MAC, "--state-dir", str(tmp_path / "state"))
    assert code == 0
    hook_lines = [line.split() for line in out.splitlines() if line.strip().startswith("hook ")]
    assert [h[:6] for h in hook_lines] == [
        ["hook", "hostname", "target", "ok", "exit", "0"],
        ["hook", "locale", "target", "failed", "exit", "4"],
        ["hook", "identity", "target", "timed", "out", "exit"],
    ]
    assert "warnings: hook locale failed with exit status 4: locale: no; hook identity timed out: slow" in out
    code, out, _ = cli("runs", MAC, "--json", "--state-dir", str(tmp_path / "state"))
    [row] = json.loads(out)
    assert [(h["name"], h["result"]) for h in row["hooks"]] == [
        ("hostname", "ok"), ("locale", "failed with exit status 4"), ("identity", "timed out")]  # fmt: skip
    assert row["warnings"] == ["hook locale failed with exit status 4", "hook identity timed out"]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["hooks", "run", "not-a-mac", "locale"], 2, "not-a-mac"),
        (["hooks", "run", MAC, "locale", "--param", "novalue"], 2, "expected NAME=VALUE"),
        (["hooks", "run", MAC, "locale", "--state-dir", "/nonexistent"], 1, "no server database at /nonexistent"),
    ],
)
def test_hooks_run_misuse(argv: list[str], code: int, message: str) -> None:
    found, _, err = cli(*argv)
    assert found == code and message in err, err


# ------------------------------------------------------------------------------------------- config
def test_the_hooks_configuration(tmp_path: Path) -> None:
    assert (load_config().hooks.ssh_port, load_config().hooks.dir, load_config().hooks.workers) == (22, None, 8)
    path = tmp_path / "provision.yaml"
    path.write_text(f"hooks:\n  dir: {tmp_path}\n  ssh_port: 2222\n  workers: 2\n")
    config = load_config(path)
    assert (config.hooks.dir, config.hooks.ssh_port, config.hooks.workers) == (tmp_path, 2222, 2)
    assert config.ssh_key_path == config.state_dir / "ssh" / "id_ed25519"
    path.write_text(f"state_dir: {tmp_path}\nhooks:\n  ssh_key: {tmp_path / 'k'}\n")
    assert load_config(path).ssh_key_path == tmp_path / "k"
    path.write_text("hooks:\n  ssh_port: 0\n  colour: red\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert {p.key for p in exc.value.problems} == {"hooks.ssh_port", "hooks.colour"}


def test_the_first_boot_reports_the_host_name_and_a_different_one_is_flagged(store: Store, tmp_path: Path) -> None:
    from provision.credentials import firstboot_secret
    from provision.runs import Runs
    from provision.wire.api import FirstBoot

    key = b"k" * 32
    runs = Runs(store, None, tmp_path / "recipes", tmp_path / "probes", key=key)
    first, second = run_of(store, MAC), run_of(store, OTHER)
    store.claim_hostname(first.id, "salle-a")
    store.claim_hostname(second.id, "salle-a")
    for run, reported in ((first, "salle-a"), (second, "salle-a")):  # the second PC kept the image's name
        call = FirstBoot("firstboot", run.mac, "tiny", "L", secret=firstboot_secret(key, run.id), hostname=reported,
                         packages=["hello=2.10-3"])  # fmt: skip
        runs.firstboot(call)
    [good] = [e.detail for e in store.events(MAC, "firstboot")]
    [bad] = [e.detail for e in store.events(OTHER, "firstboot")]
    assert good["hostname"] == "salle-a" and good["hostname_matches"] is True and good["packages"] == ["hello=2.10-3"]
    assert bad["hostname"] == "salle-a" and bad["hostname_matches"] is False


# ----------------------------------------------------------------------------------------- bundle key
ARMORED = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----"


@pytest.mark.parametrize(
    ("on_disk", "given", "sent"), [(True, "", ARMORED), (False, "", ""), (True, "PINNED", "PINNED")]
)
def test_the_bundle_hook_gets_the_repository_key_over_ssh(
    store: Store, hooks: Path, on_disk: bool, given: str, sent: str
) -> None:
    shutil.copy2(builtin_dir() / "bundle", hooks / "bundle")
    repo_key = hooks.parent / "repo" / "provision.asc"
    if on_disk:
        repo_key.parent.mkdir()
        repo_key.write_text(ARMORED + "\n")
    session = FakeSession()
    installer = post(store, hooks, session)
    installer.repo_key = repo_key
    call = HookCall("bundle", {"bundle": "science", "packages": ["hello"], "key": given})
    assert installer.run_hooks(run_of(store), [call], {}).state is RunState.DONE
    assert session.jobs[0].env["PROVISION_PARAM_KEY"] == sent
