"""The command line: help, exit codes, error format, and the facts/recipes commands end to end (in-process)."""

from __future__ import annotations

import io
import json

import pytest

from provision.cli import main
from tests.support.cli import run
from tests.support.paths import HARDWARE, REPO, SAMPLE_PROBE


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["facts", "--help"],
        ["recipes", "--help"],
        ["recipes", "check", "--help"],
        ["recipes", "explain", "--help"],
    ],
)
def test_help(argv, capsys):
    code, _, _ = run(*argv)
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.startswith("usage: provision")
    assert "show this help message" in printed


def test_no_command_prints_help():
    code, out, _ = run()
    assert code == 2 and "COMMAND" in out


def test_usage_error_exit_2(capsys):
    code, _, _ = run("recipes", "frobnicate")
    assert code == 2
    assert "provision: error:" in capsys.readouterr().err


def test_missing_probe_is_a_clean_error():
    code, out, err = run("facts", "/nonexistent/probe")
    assert code == 1 and out == ""
    assert err.startswith("provision: error: ") and "Traceback" not in err


def test_debug_shows_traceback():
    with pytest.raises(Exception, match="nonexistent"):
        main(["--debug", "facts", "/nonexistent/probe"], out=io.StringIO(), err=io.StringIO())


def test_recipes_check_ok():
    code, out, err = run("recipes", "check", str(REPO / "recipes"))
    assert code == 0, err
    assert "recipes OK (default: default)" in out


def test_recipes_check_lists_every_problem(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nimage: educ\nmatch:\n  maker: dell\nbogus: 1\n")
    (tmp_path / "b.yaml").write_text("name: b\nimage: educ\nmatch:\n  ram_mb: lots\n")
    code, out, err = run("recipes", "check", str(tmp_path))
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == f"{tmp_path / 'a.yaml'}:5: bogus: unknown key"
    assert lines[1].startswith(f"{tmp_path / 'b.yaml'}:4: match.ram_mb: 'lots' is not a number")
    assert lines[-1] == "provision: error: 2 problem(s) found"


@pytest.mark.skipif(not HARDWARE.is_dir(), reason="../shared/hardware is absent")
def test_explain_real_machine_text_and_json():
    probe = str(HARDWARE / "lenovo-thinkcentre-m58-fe8b51aa268c")
    code, out, err = run("recipes", "explain", "--mac", "52:54:00:aa:bb:cc", probe)
    assert code == 0, err
    assert "decision: IMAGE  recipe legacy-bios-desktop" in out
    assert "[yes] uefi_capable is false" in out
    assert "not matching:" in out
    code, out, _ = run("recipes", "explain", "--json", "--mac", "52:54:00:aa:bb:cc", probe)
    data = json.loads(out)
    assert data["recipe"] == "legacy-bios-desktop" and data["action"] == "image"
    assert data["facts"]["model"] == "ThinkCentre M58"
    assert data["plan"]["hostname"] == "ecole-aabbcc"
    assert [c["recipe"] for c in data["runners_up"]] == []
    code, out, _ = run("facts", probe)
    assert code == 0 and "ThinkCentre M58" in out
    code, out, _ = run("facts", "--json", probe)
    assert json.loads(out)["facts"]["uefi_capable"] is False


def test_explain_own_capture():
    if not SAMPLE_PROBE.is_dir():
        pytest.skip("no sample probe")
    code, out, err = run("recipes", "explain", "--json", str(SAMPLE_PROBE))
    assert code == 0, err
    assert json.loads(out)["facts"]["mac"] is not None


def test_explain_facts_json_round_trip(tmp_path):
    if not SAMPLE_PROBE.is_dir():
        pytest.skip("no sample probe")
    _, out, _ = run("facts", "--json", str(SAMPLE_PROBE))
    (tmp_path / "facts.json").write_text(json.dumps(json.loads(out)["probe"]))
    code, again, err = run("recipes", "explain", "--json", str(tmp_path / "facts.json"))
    assert code == 0, err
    code, direct, _ = run("recipes", "explain", "--json", str(SAMPLE_PROBE))
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k != "source"}  # noqa: E731
    assert strip(again) == strip(direct)
