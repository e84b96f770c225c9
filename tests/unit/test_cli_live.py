"""`provision live build` in-process, with the build itself replaced (the real one: tests/functional)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import provision.live
from provision.cli import main
from provision.live import LiveResult
from provision.sshkeys import ensure_server_key
from tests.support.cli import run
from tests.support.live import live_manifest
from tests.support.sshkeys import authorized_key_line


@pytest.fixture
def builds(monkeypatch, tmp_path) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_build(out: Path, key: str, **options: Any) -> LiveResult:
        calls.append({"out": out, "key": key, **options})
        options["progress"]("step one")
        files = tmp_path / "files"
        files.mkdir(exist_ok=True)
        return LiveResult(out, live_manifest(files), reused=False)

    monkeypatch.setattr(provision.live, "build_live", fake_build)
    return calls


def test_defaults_come_from_the_configuration(tmp_path, builds):
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nboot_root: {tmp_path / 'boot'}\n")
    code, out, err = run("live", "build", "--config", str(config))
    assert code == 0, err
    call = builds[0]
    assert call["out"] == tmp_path / "boot" / "live"
    key = ensure_server_key(tmp_path / "state")
    assert call["key"] == key.public_line  # the server's key, made on first use
    assert call["force"] is False and call["level"] == 19
    assert f"authorized key from {key.public_path}" in out
    assert "step one" in out
    assert "total        0.0 MiB  (goal 120 MiB: met)" in out
    assert "trusts SHA256:abc" in out and "2 modules" in out


def test_explicit_key_out_and_json(tmp_path, builds):
    key_file = tmp_path / "k.pub"
    key_file.write_text(authorized_key_line(comment="admin") + "\n")
    code, out, err = run(
        "live",
        "build",
        "--out",
        str(tmp_path / "o"),
        "--authorized-key",
        str(key_file),
        "--state-dir",
        str(tmp_path / "st"),
        "--force",
        "--level",
        "3",
        "--json",
    )
    assert code == 0, err
    assert (
        builds[0]["key"] == authorized_key_line(comment="admin")
        and builds[0]["force"] is True
        and builds[0]["level"] == 3
    )
    data = json.loads(out)
    assert data["out"] == str(tmp_path / "o") and data["reused"] is False and data["modules"]["count"] == 2
    assert not (tmp_path / "st" / "ssh").exists()  # an explicit key: no server key made


def test_a_bad_key_file_is_an_error(tmp_path, builds):
    key_file = tmp_path / "k.pub"
    key_file.write_text(authorized_key_line() + "\n" + authorized_key_line() + "\n")
    code, _, err = run("live", "build", "--authorized-key", str(key_file), "--state-dir", str(tmp_path))
    assert code == 1 and "expected exactly one public key line, found 2" in err
    assert builds == []


def test_subcommand_is_required():
    with pytest.raises(SystemExit) as exited:
        main(["live"], out=io.StringIO(), err=io.StringIO())
    assert exited.value.code == 2
