"""Logins and actions of the dashboard at the HTTP level, against a real `provision serve` on 127.0.0.1:
reading needs no login, an action does (401 page); a form without its session's CSRF token, with another
session's or from another site is refused (403 page); a login works only with the login form's own token;
wrong passwords are throttled per address (429); a session ends when idle, at logout and when the password
changes; every action is an event with the user's name; the state of the machine is checked (409 page)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from provision.states import MachineState
from provision.store import Store
from tests.support.serve import Running, start, stop

MAC = "52:54:00:12:34:56"
PASSWORD = "correct horse battery"
IDLE_SECONDS = 3.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Running]:
    state = tmp_path / "state"
    with Store(state / "provision.db") as store:
        store.add_user("alice", PASSWORD)
        store.add_user("bob", "another good password")
        store.seen(MAC)
        store.set_state(MAC, MachineState.DONE)
    config = tmp_path / "provision.yaml"
    config.write_text(f"auth:\n  idle_minutes: {IDLE_SECONDS / 60}\n")
    run = start(tmp_path, "--config", str(config))
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            stop(run)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:2000]
    return found.group(1)


def log_in(url: str, user: str = "alice", password: str = PASSWORD) -> tuple[requests.Session, requests.Response]:
    browser = requests.Session()
    form = browser.get(f"{url}/login", timeout=5)
    assert form.status_code == 200 and "provision_login" in browser.cookies
    answer = browser.post(
        f"{url}/login",
        data={"user": user, "password": password, "csrf": csrf_of(form.text), "next": f"/machines/{MAC}"},
        allow_redirects=False,
        timeout=10,
    )
    return browser, answer


def session_csrf(browser: requests.Session, url: str) -> str:
    return csrf_of(browser.get(f"{url}/machines/{MAC}", timeout=5).text)


def action(browser: requests.Session, url: str, name: str, csrf: str | None, **headers: str) -> requests.Response:
    data = {} if csrf is None else {"csrf": csrf}
    return browser.post(f"{url}/machines/{MAC}/actions/{name}", data=data, headers=headers, allow_redirects=False,
                        timeout=5)  # fmt: skip


def machine_state(run: Running) -> str:
    [machine] = [m for m in requests.get(f"{run.url}/api/v1/machines", timeout=5).json() if m["mac"] == MAC]
    return str(machine["state"])


def test_reading_is_open_and_an_action_needs_a_login(served: Running) -> None:
    assert requests.get(f"{served.url}/", timeout=5).status_code == 200
    assert requests.get(f"{served.url}/machines/{MAC}", timeout=5).status_code == 200
    anonymous = requests.post(f"{served.url}/machines/{MAC}/actions/reimage", data={"csrf": "x" * 43}, timeout=5)
    assert anonymous.status_code == 401 and "text/html" in anonymous.headers["Content-Type"]
    assert 'href="/login' in anonymous.text
    assert machine_state(served) == "done"


def test_login_then_an_action_with_its_csrf_token(served: Running) -> None:
    browser, answer = log_in(served.url)
    assert answer.status_code == 303 and answer.headers["Location"] == f"/machines/{MAC}"
    cookie = answer.headers["Set-Cookie"]
    assert "provision_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    csrf = session_csrf(browser, served.url)
    done = action(browser, served.url, "reimage", csrf, Origin=served.url)
    assert done.status_code == 303 and done.headers["Location"] == f"/machines/{MAC}?done=reimage"
    assert machine_state(served) == "new"
    events = requests.get(f"{served.url}/api/v1/machines/{MAC}/events", timeout=5).json()
    [event] = [e["detail"] for e in events if e["kind"] == "action"]
    assert event == {"action": "reimage", "user": "alice", "state_before": "done"}
    refused = action(browser, served.url, "ready", csrf)  # a new machine is not set aside: nothing to repair
    assert refused.status_code == 409 and "text/html" in refused.headers["Content-Type"]


def test_csrf_refusals(served: Running) -> None:
    browser, _ = log_in(served.url)
    other, _ = log_in(served.url, "bob", "another good password")
    for csrf in (None, "", "x" * 43, session_csrf(other, served.url)):
        refused = action(browser, served.url, "reimage", csrf)
        assert refused.status_code == 403, csrf
    good = session_csrf(browser, served.url)
    assert action(browser, served.url, "reimage", good, Origin="http://evil.example").status_code == 403
    assert action(browser, served.url, "reimage", good, Origin="null").status_code == 403
    assert action(browser, served.url, "reimage", good, Referer="http://evil.example/x").status_code == 403
    assert machine_state(served) == "done"
    # a login form posted without the login form's own token (another site's form) opens no session
    forged = requests.post(f"{served.url}/login", data={"user": "alice", "password": PASSWORD, "csrf": "x" * 43},
                           cookies={"provision_login": "y" * 43}, allow_redirects=False, timeout=10)  # fmt: skip
    assert forged.status_code == 403 and "provision_session" not in forged.headers.get("Set-Cookie", "")


def test_wrong_passwords_are_throttled_and_logged_without_the_password(served: Running) -> None:
    for _ in range(5):
        _, answer = log_in(served.url, password="wrong password 1")
        assert answer.status_code == 303 and "failed=1" in answer.headers["Location"]
    _, answer = log_in(served.url)  # the right password, but the address must wait
    assert answer.status_code == 429 and "text/html" in answer.headers["Content-Type"]
    code, _, err = stop(served)
    assert code == 0 and "login failed for user 'alice'" in err and "wrong password 1" not in err


def test_a_session_ends_when_idle_at_logout_and_with_a_new_password(served: Running) -> None:
    browser, _ = log_in(served.url)
    csrf = session_csrf(browser, served.url)
    time.sleep(IDLE_SECONDS + 1)
    assert action(browser, served.url, "reimage", csrf).status_code == 401
    browser, _ = log_in(served.url)
    csrf = session_csrf(browser, served.url)
    out = browser.post(f"{served.url}/logout", data={"csrf": csrf}, allow_redirects=False, timeout=5)
    assert out.status_code == 303 and out.headers["Location"] == "/"
    assert action(browser, served.url, "reimage", csrf).status_code == 401
    browser, _ = log_in(served.url)
    csrf = session_csrf(browser, served.url)
    with Store(served.state / "provision.db") as store:
        store.set_password("alice", "a brand new password")
    assert action(browser, served.url, "reimage", csrf).status_code == 401
    assert machine_state(served) == "done"


def test_the_lot_action_needs_a_login_and_its_csrf_token_and_names_the_operator(served: Running) -> None:
    url = served.url
    anonymous = requests.post(f"{url}/machines/{MAC}/actions/lot", data={"csrf": "x" * 43, "lot": "L"}, timeout=5)
    assert anonymous.status_code == 401
    browser, _ = log_in(url)
    csrf = session_csrf(browser, url)
    forged = browser.post(f"{url}/machines/{MAC}/actions/lot", data={"csrf": "x" * 43, "lot": "L"},
                          allow_redirects=False, timeout=5)  # fmt: skip
    assert forged.status_code == 403
    done = browser.post(f"{url}/machines/{MAC}/actions/lot", data={"csrf": csrf, "lot": " Banque Dupont 12/2026 "},
                        allow_redirects=False, timeout=5)  # fmt: skip
    assert done.status_code == 303 and done.headers["Location"] == f"/machines/{MAC}?done=lot"
    page = browser.get(f"{url}{done.headers['Location']}", timeout=5).text
    assert "son prochain effacement vous nomme comme opérateur" in page  # the dashboard speaks French first
    [machine] = requests.get(f"{url}/api/v1/machines", timeout=5).json()
    assert machine["lot"] == "Banque Dupont 12/2026" and machine["state"] == "done"  # the state is not touched
    events = requests.get(f"{url}/api/v1/machines/{MAC}/events", timeout=5).json()
    assert [e["detail"] for e in events if e["kind"] == "lot"] == [
        {"lot": "Banque Dupont 12/2026", "by": "alice", "source": "operator", "before": None}
    ]
    with Store(served.state / "provision.db") as store:
        assert store.operator_of(MAC) == "alice"
    bad = browser.post(f"{url}/machines/{MAC}/actions/lot", data={"csrf": csrf, "lot": "x" * 200},
                       allow_redirects=False, timeout=5)  # fmt: skip
    assert bad.status_code == 400 and "text/html" in bad.headers["Content-Type"]
