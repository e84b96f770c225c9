"""The hook catalog (provision.hooks.catalog), a hook's environment and job (provision.hooks.env), and
`provision hooks check|list`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.errors import ConfigError
from provision.facts.derive import FACT_NAMES, FactValue
from provision.hooks import HookEnvError, builtin_dir, check_folders, hook_env, hook_job, load_catalog
from provision.wire.hooks import ENV_NAME, HookJob
from tests.support.cli import run
from tests.support.hooks import HOSTILE, write_hook
from tests.support.paths import REPO

BUILTIN = {
    "account",
    "bundle",
    "firmware",
    "hostname",
    "identity",
    "label",
    "laptop-power",
    "locale",
    "portal",
    "zram-swap",
}
HEADER = """
description: a test hook
where: target
params:
  text: {type: str, required: true}
  count: {type: int, default: 3}
  flag: {type: bool, default: false}
  items: {type: "list[str]", default: [a, b]}
  maybe: {type: str}
needs: [serial, ram_mb, pci_ids, uefi_capable, model]
"""


def machine(**values: FactValue) -> dict[str, FactValue]:
    facts: dict[str, FactValue] = dict.fromkeys(FACT_NAMES)
    facts.update(serial="CZC1234", ram_mb=4096, pci_ids=["8086:10de", "10ec:8168"], uefi_capable=True)
    facts.update(values)
    return facts


# ------------------------------------------------------------------------------------------ the catalog
def test_the_builtin_hooks_are_all_valid() -> None:
    assert builtin_dir() == REPO / "hooks"
    catalog, problems = check_folders([builtin_dir()])
    assert problems == []
    assert set(catalog.names) == BUILTIN  # README.md is not a hook
    assert {h.name: h.header.where.value for h in catalog.hooks if h.header.where.value != "target"} == {
        "firmware": "live",
        "label": "server",
    }


def test_folder_rules_every_problem_at_once(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_hook(site, "good", "description: d\nwhere: target\n")
    write_hook(site, "plain", "description: d\nwhere: target\n", mode=0o644)
    write_hook(site, "hostname", "description: mine\nwhere: target\n")  # a built-in's name
    (site / "renamed.sh").write_text((site / "good").read_text())
    (site / "renamed.sh").chmod(0o755)
    (site / "binary").write_bytes(b"#!/bin/sh\n\xff\xfe\n")
    (site / "binary").chmod(0o755)
    (site / "notes.md").write_text("not a hook")
    (site / "good~").write_text("an editor's backup")
    (site / ".hidden").write_text("x")
    (site / "data").mkdir()
    catalog, problems = check_folders([builtin_dir(), site, tmp_path / "absent"])
    assert [str(p) for p in problems] == [
        f"{site / 'binary'}:2: not UTF-8 text (byte 10)",
        f"{site / 'hostname'}:3: name: hook 'hostname' is already defined in {REPO / 'hooks' / 'hostname'}:3",
        f"{site / 'plain'}: not executable (chmod +x {site / 'plain'})",
        f"{site / 'renamed.sh'}:3: name: 'good' differs from the file's name 'renamed.sh': "
        "a hook is named after its file",
        f"{tmp_path / 'absent'}: not a directory",
    ]
    assert set(catalog.names) == BUILTIN | {"good"}
    assert catalog.folders == (str(builtin_dir()), str(site), str(tmp_path / "absent"))
    with pytest.raises(ConfigError) as caught:
        load_catalog([site])
    assert len(caught.value.problems) == 3


def test_a_hook_named_after_its_file_with_an_extension(tmp_path: Path) -> None:
    path = write_hook(tmp_path, "tool", "description: d\nwhere: server\n")
    path.rename(tmp_path / "tool.py")
    catalog = load_catalog([tmp_path])
    hook = catalog.get("tool")
    assert hook is not None and hook.path == tmp_path / "tool.py" and "tool" in catalog
    assert hook.script == (tmp_path / "tool.py").read_text() and hook.line_of("where") == 5


# ---------------------------------------------------------------------------------------- the environment
def test_environment_rules(tmp_path: Path) -> None:
    write_hook(tmp_path, "t", HEADER)
    header = load_catalog([tmp_path]).hooks[0].header
    params = {"text": HOSTILE[0] + "\n" + HOSTILE[1], "count": "12", "flag": "True", "items": list(HOSTILE[:3])}
    env = hook_env(header, params, machine(model=None), mac="52-54-00-AA-BB-CC", run="r-1")
    assert env == {
        "PROVISION_HOOK": "t",
        "PROVISION_MAC": "52:54:00:aa:bb:cc",
        "PROVISION_RUN": "r-1",
        "PROVISION_PARAM_TEXT": "; rm -rf / #\n$(reboot)",  # verbatim
        "PROVISION_PARAM_COUNT": "12",
        "PROVISION_PARAM_FLAG": "true",
        "PROVISION_PARAM_ITEMS": "; rm -rf / #\n$(reboot)\n`reboot`",  # one item per line
        "PROVISION_FACT_SERIAL": "CZC1234",
        "PROVISION_FACT_RAM_MB": "4096",
        "PROVISION_FACT_PCI_IDS": "8086:10de\n10ec:8168",
        "PROVISION_FACT_UEFI_CAPABLE": "true",
    }  # no PROVISION_PARAM_MAYBE (no value, no default), no PROVISION_FACT_MODEL (unknown)
    assert all(ENV_NAME.fullmatch(name) for name in env)
    defaults = hook_env(header, {"text": ""}, {}, mac="52:54:00:aa:bb:cc", run=7)
    assert (defaults["PROVISION_PARAM_COUNT"], defaults["PROVISION_PARAM_ITEMS"], defaults["PROVISION_RUN"]) == (
        "3",
        "a\nb",
        "7",
    )


@pytest.mark.parametrize(
    ("params", "facts", "message"),
    [
        ({}, {}, "hook 't': parameter text: hook 't' requires this parameter"),
        ({"text": "x", "other": "y"}, {}, "hook 't': parameter other: hook 't' takes no such parameter"),
        ({"text": "x", "count": "many"}, {}, "hook 't': parameter count: expected an integer, got 'many'"),
        ({"text": "a\0b"}, {}, "hook 't': parameter text: the text holds a NUL character"),
        ({"text": "x"}, {"serial": "a\0b"}, "hook 't': PROVISION_FACT_SERIAL holds a NUL character"),
        ({"text": "x"}, {"model": "\udcff"}, "hook 't': PROVISION_FACT_MODEL is not valid text"),
    ],
)
def test_environment_refusals_name_the_hook_and_the_key(
    tmp_path: Path, params: dict[str, object], facts: dict[str, FactValue], message: str
) -> None:
    write_hook(tmp_path, "t", HEADER)
    header = load_catalog([tmp_path]).hooks[0].header
    with pytest.raises(HookEnvError) as caught:
        hook_env(header, params, facts, mac="52:54:00:aa:bb:cc", run="r")
    assert str(caught.value).startswith(message) and caught.value.facts["hook"] == "t"


def test_a_job_carries_the_checked_script_and_travels(tmp_path: Path) -> None:
    write_hook(tmp_path, "t", HEADER, body='echo "$PROVISION_PARAM_TEXT"\n')
    write_hook(tmp_path, "s", "description: d\nwhere: server\n")
    catalog = load_catalog([tmp_path])
    hook = catalog.get("t")
    assert hook is not None
    env = hook_env(hook.header, {"text": HOSTILE[4]}, {}, mac="52:54:00:aa:bb:cc", run="r")
    job = hook_job(hook, env, timeout=30)
    assert (job.name, job.where, job.timeout, job.script) == ("t", "target", 30, hook.script)
    assert HookJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    assert hook_job(hook, env).timeout == 600
    server = catalog.get("s")
    assert server is not None
    with pytest.raises(HookEnvError, match="runs on the server"):
        hook_job(server, {})


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_hooks_check_lists_the_builtins() -> None:
    code, out, err = run("hooks", "check")
    assert code == 0, err
    assert out.startswith(f"{len(BUILTIN)} hooks OK in {REPO / 'hooks'}\n")
    assert "  firmware       live    fail     600s  Copy the non-free firmware" in out
    assert "  label          server  warn      30s  " in out


def test_cli_hooks_check_reports_a_site_folder_problem_by_line(tmp_path: Path) -> None:
    write_hook(tmp_path, "mine", "description: d\nwhere: here\n")
    code, out, err = run("hooks", "check", str(tmp_path))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{tmp_path / 'mine'}:5: where: Input should be 'target', 'live' or 'server'",
        "provision: error: 1 problem(s) found",
    ]
    code, out, err = run("hooks", "check", str(REPO / "hooks"))  # the built-in folder once, not twice
    assert code == 0, err


def test_cli_hooks_list_text_and_json(tmp_path: Path) -> None:
    write_hook(tmp_path, "mine", "description: mine\nwhere: live\nparams:\n  n: {type: int, default: 2}\n")
    code, out, err = run("hooks", "list", str(tmp_path))
    assert code == 0, err
    assert "hostname  (target, on_failure fail, timeout 60 s)" in out
    assert "  param hostname: str (required)  the machine's name" in out
    assert '  param groups: list[str] = ["audio",' in out
    assert f"mine  (live, on_failure fail, timeout 600 s)  {tmp_path / 'mine'}\n  mine\n  param n: int = 2\n" in out
    code, out, err = run("hooks", "list", "--json")
    listed = {h["name"]: h for h in json.loads(out)}
    assert set(listed) == BUILTIN
    assert listed["firmware"]["params"]["files"] == {
        "type": "list[str]",
        "required": True,
        "default": None,
        "description": listed["firmware"]["params"]["files"]["description"],
    }
