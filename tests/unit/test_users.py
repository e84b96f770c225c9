"""The dashboard's users without a server: password hashes, users and sessions in the store (expiry, idle time,
a new password ending sessions), operators' actions checked against the machine's state, `provision users`."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.cli import main
from provision.errors import ActionRefused, NotFound
from provision.passwords import check_password, hash_password, needs_rehash, password_problem
from provision.states import MachineState
from provision.store import Store
from provision.store.users import UserError
from provision.web.auth import FAILURE_WINDOW, FAILURES, LoginThrottle, safe_next

MAC = "52:54:00:12:34:56"
PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "provision.db") as s:
        yield s


# ---------------------------------------------------------------------------------------------- passwords
def test_hashes_check_and_never_hold_the_password() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$32768$8$1$") and PASSWORD not in stored
    assert check_password(PASSWORD, stored) and not check_password(PASSWORD + " ", stored)
    assert hash_password(PASSWORD) != stored  # a fresh salt each time
    assert not needs_rehash(stored) and needs_rehash("scrypt$16384$8$1$c2FsdA$" + "A" * 43)


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "scrypt$1$8$1$c2FsdA$AAAA", "scrypt$99999999$8$1$c2FsdA$" + "A" * 43, "scrypt$x$8$1$a$b",
     "scrypt$16384$8$1$$" + "A" * 43, "md5$abc"],
)  # fmt: skip
def test_a_hash_that_is_not_ours_never_checks(stored: str) -> None:
    assert not check_password("", stored) and not check_password(PASSWORD, stored)


@pytest.mark.parametrize(
    ("password", "problem"),
    [("short", "at least 10"), ("a" * 12, "repeat"), ("Alice.Martin", "user's name"), ("x" * 1025, "at most")],
)
def test_password_rules(password: str, problem: str) -> None:
    found = password_problem(password, "alice.martin")
    assert found is not None and problem in found
    assert password_problem(PASSWORD, "alice.martin") is None


# ---------------------------------------------------------------------------------------- users, sessions
def test_users_and_sessions(store: Store) -> None:
    store.add_user("alice", PASSWORD)
    with pytest.raises(UserError, match="exists"):
        store.add_user("alice", PASSWORD)
    for bad in ("Alice", "1x", "a b", "a" * 33, "", "al;ice"):
        with pytest.raises(UserError, match="not a user name"):
            store.add_user(bad, PASSWORD)
    assert store.authenticate("alice", PASSWORD) and not store.authenticate("alice", "wrong password")
    assert not store.authenticate("bob", PASSWORD)
    token, session = store.open_session("alice", lifetime=3600, remote="198.18.0.7")
    assert session.user == "alice" and len(session.csrf) >= 40 and token != session.csrf
    found = store.session(token, idle=60)
    assert found is not None and (found.user, found.csrf) == ("alice", session.csrf)
    assert store.session("x" * 43, idle=60) is None
    store.close_session(token)
    assert store.session(token, idle=60) is None
    kinds = [(e.kind, e.detail.get("user")) for e in store.events(mac="")]
    assert kinds == [("user", "alice"), ("login", "alice"), ("logout", "alice")]


def test_sessions_end_when_idle_expired_or_the_password_changes(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.add_user("alice", PASSWORD)
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    idle, expired, changed = (store.open_session("alice", lifetime=3600)[0] for _ in range(3))
    now[0] += 100
    assert store.session(expired, idle=200) is not None and store.session(changed, idle=200) is not None
    now[0] += 150  # idle: 250 s since its last use; the others were used 150 s ago
    assert store.session(idle, idle=200) is None
    assert store.session(expired, idle=200) is not None
    now[0] += 3600  # past the lifetime
    assert store.session(expired, idle=10_000) is None
    token, _ = store.open_session("alice", lifetime=3600)
    store.set_password("alice", "another long password")
    assert store.session(token, idle=10_000) is None
    assert store.authenticate("alice", "another long password")
    token, _ = store.open_session("alice", lifetime=3600)
    store.remove_user("alice")
    assert store.session(token, idle=10_000) is None and store.users() == []
    with pytest.raises(UserError, match="no user"):
        store.remove_user("alice")


def test_the_session_cookie_is_not_kept_in_the_store(store: Store, tmp_path: Path) -> None:
    store.add_user("alice", PASSWORD)
    token, session = store.open_session("alice", lifetime=3600)
    data = (tmp_path / "provision.db").read_bytes() + (tmp_path / "provision.db-wal").read_bytes()
    assert token.encode() not in data and session.csrf.encode() in data


# ------------------------------------------------------------------------------------------------ actions
@pytest.mark.parametrize(
    ("state", "action", "allowed"),
    [
        (MachineState.DONE, "reimage", True),
        (MachineState.IMAGING, "reimage", False),
        (MachineState.REPAIR, "ready", True),
        (MachineState.FAILED, "ready", True),
        (MachineState.DONE, "ready", False),
        (MachineState.NEW, "ready", False),
        (MachineState.FAILED, "forget", True),
        (MachineState.IMAGING, "forget", False),
    ],
)
def test_actions_follow_the_machine_state(store: Store, state: MachineState, action: str, allowed: bool) -> None:
    store.seen(MAC)
    store.set_state(MAC, state, "why" if state is MachineState.REPAIR else None)
    if not allowed:
        with pytest.raises(ActionRefused, match=f"{MAC} is {state.value}") as exc:
            store.operator_action(MAC, action, "alice")
        assert exc.value.status_code == 409 and exc.value.http_body()["action"] == action
        machine = store.machine(MAC)
        assert machine is not None and machine.state is state
        return
    machine = store.operator_action(MAC, action, "alice")
    assert machine.state is MachineState.NEW and machine.reason is None
    assert (machine.forgotten_at is not None) is (action == "forget")
    [event] = [e.detail for e in store.events(MAC, "action")]
    assert event == {"action": action, "user": "alice", "state_before": state.value}
    if action == "forget":
        store.seen(MAC)  # it network-boots again: it shows again
        again = store.machine(MAC)
        assert again is not None and again.forgotten_at is None


def test_an_action_on_an_unknown_machine(store: Store) -> None:
    with pytest.raises(NotFound):
        store.operator_action(MAC, "reimage", "alice")


def test_reimage_ends_the_machines_boot_tokens(store: Store) -> None:
    token = store.issue_token(MAC, "ipxe", 600)
    store.set_state(MAC, MachineState.DONE)
    store.operator_action(MAC, "reimage", "alice")
    assert not store.check_token(MAC, token)


# ------------------------------------------------------------------------------------------ login helpers
def test_login_throttle() -> None:
    throttle = LoginThrottle()
    for i in range(FAILURES - 1):
        throttle.failed("198.18.0.7", now=100.0 + i)
    assert throttle.blocked("198.18.0.7", now=110.0) == 0
    throttle.failed("198.18.0.7", now=110.0)
    assert throttle.blocked("198.18.0.7", now=111.0) == pytest.approx(100.0 + FAILURE_WINDOW - 111.0)
    assert throttle.blocked("198.18.0.8", now=111.0) == 0
    assert throttle.blocked("198.18.0.7", now=100.0 + FAILURE_WINDOW + 1) == 0
    throttle.succeeded("198.18.0.7")
    assert throttle.failures == {}


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/machines/52:54:00:12:34:56", "/machines/52:54:00:12:34:56"), ("//evil.example/", "/"),
     ("https://evil.example/", "/"), ("/\\evil.example", "/"), (None, "/"), ("", "/"), ("javascript:alert(1)", "/")],
)  # fmt: skip
def test_only_local_paths_after_login(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


# ---------------------------------------------------------------------------------------------------- CLI
def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_users_cli(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    assert cli("users", "list", *state)[1].startswith("no users")
    code, out, _ = cli("users", "add", "alice", "--password-stdin", *state, stdin=PASSWORD + "\n")
    assert code == 0 and "user alice added" in out
    code, _, err = cli("users", "add", "bob", "--password-stdin", *state, stdin="short\n")
    assert code == 2 and "at least 10 characters: nothing changed" in err
    code, _, err = cli("users", "add", "bob", *state)  # no terminal, no --password-stdin
    assert code == 2 and "--password-stdin" in err
    code, out, _ = cli("users", "passwd", "alice", "--password-stdin", *state, stdin="another long one\n")
    assert code == 0 and "sessions ended" in out
    code, _, err = cli("users", "passwd", "carol", "--password-stdin", *state, stdin="another long one\n")
    assert code == 1 and "no user 'carol'" in err
    code, out, _ = cli("users", "list", "--json", *state)
    assert code == 0 and '"name": "alice"' in out and "another long one" not in out
    with Store(tmp_path / "state" / "provision.db") as store:
        assert store.authenticate("alice", "another long one")
    assert cli("users", "remove", "alice", *state)[0] == 0
    assert cli("users", "list", *state)[1].startswith("no users")
