"""Post-install hooks through the real chain on 127.0.0.1 (issue 13): ``provision serve`` with a recipe whose plan
has hooks, the agent writing a busybox GPT disk image onto a sparse file and waiting for its hooks, a real
dropbear standing in for the live environment's sshd whose forced command is the real hook runner; ``target``
hooks run in a chroot of the disk's root. Each case reads the disk back (debugfs) and, afterwards, nothing of
the runner stays: no mount under /run/provision (in the live environment's mount namespace or here), no
folder, no loop device over a disk (tests/support/hookruns.py).

Shown: the built-in hooks hostname, identity, locale and account change what they must, a failing ``warn``
hook and a timed-out one end the run ``done`` with warnings (``provision runs``, the API); a failing ``fail``
hook fails the run with its name and last lines, and ``provision hooks run`` runs a hook again on that PC;
facts with hostile values arrive verbatim and execute nothing, an invalid host name fails the run cleanly and
non-UTF-8 bytes are refused at the API; another host key, a missing server key and an unreachable live
environment each fail the run with that reason; two machines whose pattern renders the same host name get
``name`` and ``name-2``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.agent.main import EXIT_DONE, EXIT_FAILED
from provision.images import ImageVersion
from tests.support.hookruns import Chain, build_image, chain, debugfs_cat, hostile_probe, needs_live_chain

pytestmark = needs_live_chain


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ImageVersion, bool]:
    store, version, _, useradd = build_image(tmp_path_factory.mktemp("image"))
    return store, version, useradd


@pytest.fixture
def site(tmp_path: Path, image: tuple[Path, ImageVersion, bool]) -> Iterator[Chain]:
    with chain(tmp_path, image[0], image[1]) as found:
        yield found
        assert found.leftovers() == [], "the hook runner left something behind"
    assert found.leftovers() == []


def text(disk: Path, path: str) -> str | None:
    data = debugfs_cat(disk, path)
    return None if data is None else data.decode()


def hooks_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in run["hooks"]}


# --------------------------------------------------------------------------------------- built-in hooks
def test_builtin_hooks_change_the_disk_and_warnings_end_the_run_done(
    site: Chain, image: tuple[Path, ImageVersion, bool]
) -> None:
    mac = "52:54:00:13:00:01"
    account = [{"name": "account", "params": {"full_name": "Élève Dupont", "autologin": True}}] if image[2] else []
    site.recipe([
        {"name": "hostname", "params": {"hostname": "poste-{{ mac[-5:] | replace(':', '') }}"}},
        {"name": "identity"},
        {"name": "locale"},
        *account,
        {"name": "flaky"},
        {"name": "slow", "timeout": 1},
    ])  # fmt: skip
    outcome, disk = site.agent(mac)
    assert (outcome.code, outcome.state) == (EXIT_DONE, "done"), outcome

    assert text(disk, "/etc/hostname") == "poste-0001\n"
    assert text(disk, "/etc/hosts") == "127.0.0.1\tlocalhost\n127.0.1.1\tposte-0001\n::1\tlocalhost ip6-localhost\n"
    assert text(disk, "/etc/machine-id") == "" and text(disk, "/etc/ssh/ssh_host_ed25519_key") is None
    assert text(disk, "/var/lib/systemd/random-seed") is None
    assert "ssh-keygen -A" in (text(disk, "/etc/systemd/system/provision-ssh-hostkeys.service") or "")
    assert text(disk, "/etc/default/locale") == "LANG=fr_FR.UTF-8\n"
    assert text(disk, "/etc/locale.generated") == "# en_US.UTF-8 UTF-8\nfr_FR.UTF-8 UTF-8\n"  # locale-gen ran
    assert 'XKBLAYOUT="fr"' in (text(disk, "/etc/default/keyboard") or "")
    if image[2]:
        passwd = text(disk, "/etc/passwd") or ""
        assert "\neleve:x:1000:1000:Élève Dupont:/home/eleve:/bin/sh\n" in passwd, passwd
        assert "\naudio:x:29:eleve\n" in (text(disk, "/etc/group") or "")
        assert text(disk, "/home/eleve/.profile") == "# skel\n"
        assert "autologin-user=eleve" in (text(disk, "/etc/lightdm/lightdm.conf.d/50-provision-autologin.conf") or "")
    assert text(disk, "/etc/hostname.provision") is None  # written through a rename
    assert debugfs_cat(disk, "/run/provision-hook") is None  # the scripts were on the target's tmpfs /run

    [run] = site.runs(mac)
    assert run["state"] == "done" and run["reason"].startswith("done with warnings: hook flaky failed with exit ")
    assert (
        "flaky: the portal did not answer" in run["reason"] and "hook slow timed out: slow: starting" in run["reason"]
    )
    hooks = hooks_of(site.run(run["id"]))
    expected = ["hostname", "identity", "locale", *(["account"] if image[2] else []), "flaky", "slow"]
    assert [h["name"] for h in site.run(run["id"])["hooks"]] == expected
    assert all(hooks[n]["ok"] and hooks[n]["exit_code"] == 0 for n in expected[:-2])
    assert hooks["hostname"]["output"] == "hostname: poste-0001\n" and hooks["hostname"]["place"] == "target"
    assert (hooks["flaky"]["exit_code"], hooks["flaky"]["on_failure"], hooks["flaky"]["ok"]) == (4, "warn", False)
    slow = hooks["slow"]
    assert (slow["timed_out"], slow["exit_code"], slow["ok"]) == (True, None, False)
    assert slow["output"].startswith("slow: starting\n[provision-hookrun: timed out after 1 s") and slow["seconds"] < 10
    assert site.machine(mac)["hostname"] == "poste-0001"

    shown = site.cli("runs", mac, "--state-dir", str(site.state))
    assert shown.returncode == 0, shown.stderr
    assert "warnings: hook flaky failed with exit status 4: flaky: the portal did not answer" in shown.stdout
    lines = {
        line.split()[1]: line.split()[2:] for line in shown.stdout.splitlines() if line.strip().startswith("hook ")
    }
    assert lines["hostname"][:4] == ["target", "ok", "exit", "0"]
    assert lines["flaky"][:4] == ["target", "failed", "exit", "4"] and "warn)" in lines["flaky"]
    assert lines["slow"][:5] == ["target", "timed", "out", "exit", "-"]
    as_json = json.loads(site.cli("runs", mac, "--json", "--state-dir", str(site.state)).stdout)
    assert [h["name"] for h in as_json[0]["hooks"]] == expected
    assert as_json[0]["warnings"] == ["hook flaky failed with exit status 4", "hook slow timed out"]


# ------------------------------------------------------------------------------- failure and hooks run
def test_a_failing_hook_fails_the_run_and_hooks_run_runs_one_again(site: Chain) -> None:
    mac = "52:54:00:13:00:02"
    site.recipe([{"name": "broken"}, {"name": "locale"}])
    outcome, disk = site.agent(mac)
    assert (outcome.code, outcome.state) == (EXIT_FAILED, "failed"), outcome
    reason = "hook broken failed with exit status 3: checking /etc / step 2 of 3 / broken: /etc/broken is missing"
    assert outcome.reason == reason
    [run] = site.runs(mac)
    assert (run["state"], run["reason"]) == ("failed", reason) and site.machine(mac)["state"] == "failed"
    [broken] = site.run(run["id"])["hooks"]  # locale never ran
    assert broken["output"] == "checking /etc\nstep 2 of 3\nbroken: /etc/broken is missing\n"
    assert text(disk, "/etc/default/locale") is None

    # the PC is still in its live environment: the operator runs a hook again, with a parameter of its own
    again = site.cli("hooks", "run", mac, "locale", "--param", "lang=de_DE.UTF-8", "--config", str(site.config))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"hook locale on {mac}: ok (exit code 0, ")
    assert f"kept with run {run['id']}" in again.stdout and "--- output (" in again.stdout
    assert text(disk, "/etc/default/locale") == "LANG=de_DE.UTF-8\n"
    failing = site.cli("hooks", "run", mac, "broken", "--config", str(site.config), "--json")
    assert failing.returncode == 1, failing.stderr
    result = json.loads(failing.stdout)
    assert (result["name"], result["exit_code"], result["ok"], result["rerun"]) == ("broken", 3, False, True)
    assert "broken: /etc/broken is missing" in result["output"]
    recorded = site.run(run["id"])
    assert [(h["name"], h["rerun"], h["ok"]) for h in recorded["hooks"]] == [
        ("broken", False, False), ("locale", True, True), ("broken", True, False)]  # fmt: skip
    assert (recorded["state"], recorded["reason"]) == ("failed", reason)  # a hook run by hand changes no state
    unknown = site.cli("hooks", "run", mac, "nope", "--config", str(site.config))
    assert unknown.returncode == 1 and "no hook 'nope'" in unknown.stderr
    stranger = site.cli("hooks", "run", "52:54:00:13:00:99", "locale", "--config", str(site.config))
    assert stranger.returncode == 1 and "no run of this machine reported a live environment" in stranger.stderr


# ---------------------------------------------------------------------------------------- hostile values
HOSTILE_SERIAL = '; rm -rf / # $(touch /pwned) `touch /pwned2` it\'s "quoted" \\ back'
HOSTILE_TRANSPORT = "virtio\n$(reboot)\n; touch /pwned3"


def test_hostile_facts_arrive_verbatim_and_execute_nothing(site: Chain, tmp_path: Path) -> None:
    mac = "52:54:00:13:00:03"
    site.recipe([
        {"name": "envdump", "params": {"label": "pc {{ serial }}", "transport": "{{ disk_transport | join(',') }}"}},
        {"name": "hostname", "params": {"hostname": "pc-{{ serial[:40] }}"}},
    ])  # fmt: skip
    probe = hostile_probe(tmp_path / "probe", HOSTILE_SERIAL, HOSTILE_TRANSPORT)
    outcome, disk = site.agent(mac, probe=probe)
    assert (outcome.code, outcome.state) == (EXIT_FAILED, "failed"), outcome
    assert outcome.reason == "hook hostname failed with exit status 1: hostname: the host name may hold letters, " \
        "digits and '-' only"  # fmt: skip
    assert text(disk, "/root/label") == f"pc {HOSTILE_SERIAL}"
    assert text(disk, "/root/serial") == HOSTILE_SERIAL
    assert text(disk, "/root/transport") == HOSTILE_TRANSPORT
    for name in ("pwned", "pwned2", "pwned3"):
        assert debugfs_cat(disk, f"/{name}") is None and not Path(f"/{name}").exists()
    assert text(disk, "/etc/hostname") == "master\n"  # refused before anything was written
    assert site.machine(mac)["hostname"] is None and site.events(mac, "hostname") == []  # nothing claimed
    [run] = site.runs(mac)
    assert [h["ok"] for h in site.run(run["id"])["hooks"]] == [True, False]

    # bytes that are not UTF-8 never reach a fact: the API refuses the body
    body = b'{"mac": "' + mac.encode() + b'", "token": "x", "boot": {"firmware": "bios"}, "probe": {"dmidecode.txt": '
    body += b'"Serial Number: \xff\xfe"}}'
    refused = requests.post(f"{site.url}/api/v1/hello", data=body, headers={"Content-Type": "application/json"},
                            timeout=10)  # fmt: skip
    assert refused.status_code == 400 and "not JSON" in refused.json()["error"]
    assert len(site.runs(mac)) == 1


# ------------------------------------------------------------------------------------------- refusals
def other_host_key(tmp_path: Path) -> Path:
    import subprocess

    path = tmp_path / "other_ed25519"
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(path)], capture_output=True, check=True)
    return path


@pytest.mark.parametrize("fault", ["wrong-host-key", "missing-server-key", "live-unreachable"])
def test_ssh_refusals_fail_the_run_with_their_reason(site: Chain, tmp_path: Path, fault: str) -> None:
    mac = "52:54:00:13:00:04"
    site.recipe([{"name": "hostname", "params": {"hostname": "poste-x"}}])
    key = site.state / "ssh" / "id_ed25519"
    actions = {
        "wrong-host-key": (None, "host key", "is not the one its hello reported"),
        "missing-server-key": (key.unlink, "the server's SSH key", "is missing: no hook can run"),
        "live-unreachable": (site.live.stop, f"127.0.0.1:{site.live.port}: no SSH answer", ""),
    }
    action, needle, more = actions[fault]
    host_key = other_host_key(tmp_path) if fault == "wrong-host-key" else None
    outcome, disk = site.agent(mac, host_key=host_key, before_report=action)
    assert (outcome.code, outcome.state) == (EXIT_FAILED, "failed"), outcome
    [run] = site.runs(mac)
    assert run["state"] == "failed" and run["reason"].startswith("hook hostname: ")
    assert needle in run["reason"] and more in run["reason"], run["reason"]
    assert site.run(run["id"])["hooks"] == [] and text(disk, "/etc/hostname") == "master\n"
    assert site.machine(mac)["state"] == "failed"


# ----------------------------------------------------------------------------------- unique host names
def test_two_machines_with_the_same_pattern_get_unique_host_names(site: Chain) -> None:
    site.recipe([{"name": "hostname", "params": {"hostname": "salle-{{ form_factor }}"}}])
    first, second = "52:54:00:13:00:05", "52:54:00:13:00:06"
    names = {}
    for mac in (first, second):
        outcome, disk = site.agent(mac)
        assert (outcome.code, outcome.state) == (EXIT_DONE, "done"), outcome
        names[mac] = text(disk, "/etc/hostname")
    assert names == {first: "salle-unknown\n", second: "salle-unknown-2\n"}
    assert (site.machine(first)["hostname"], site.machine(second)["hostname"]) == ("salle-unknown", "salle-unknown-2")
    [event] = site.events(second, "hostname")
    assert (event["wanted"], event["hostname"], event["run"]) == ("salle-unknown", "salle-unknown-2",
                                                                  site.runs(second)[0]["id"])  # fmt: skip
    [hook] = site.run(site.runs(second)[0]["id"])["hooks"]
    assert hook["output"] == "hostname: salle-unknown-2\n"
