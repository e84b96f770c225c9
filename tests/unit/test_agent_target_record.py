"""The agent records the disk it imaged (``TARGET_RECORD``, what the hook runner mounts when a job names no
device): only after a verified write, atomically, and a failure to record is logged, never fatal. With fakes:
no sockets, no subprocess."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import provision.agent.__main__ as agent_main
from provision.agent.client import ServerApi
from provision.agent.index import canonical_json, read_index
from provision.agent.main import EXIT_DONE, EXIT_FAILED, Agent, AgentConfig, Outcome, record_target
from provision.wire.hooks import TARGET_RECORD
from tests.support.agent import FAST, INDEX_PATH, SERVER, FakeSession, build_image, random_disk
from tests.support.files import sparse_file
from tests.support.paths import SAMPLE_PROBE

MAC = "52:54:00:12:34:56"


class Api(ServerApi):
    """A plan, then "done" (or "failed") for the report."""

    def __init__(self, digest: str) -> None:
        super().__init__(SERVER, MAC, "t" * 32, sleep=lambda s: None)
        self.plan = {"image": "educ", "version": "L", "digest": digest, "index_url": INDEX_PATH, "wipe": "zero",
                     "target_disk": {}, "grow_root": False}  # fmt: skip

    def post(self, path: str, body: Mapping[str, Any], *, retry: bool = True) -> dict[str, Any]:
        if path == "/api/v1/hello":
            return {"action": "image", "run": "r1", "plan": self.plan}
        if path.endswith("/report"):
            return {"run": "r1", "state": "done" if body["ok"] else "failed", "reason": body.get("reason")}
        return {"ok": True}


def run(tmp_path: Path, digest: str | None = None) -> tuple[Outcome, Path]:
    session = FakeSession(build_image(random_disk(8 * 65536, [1, 3])))
    (tmp_path / "disks").mkdir()
    sparse_file(tmp_path / "disks" / "vda", 16 * 65536)
    record = tmp_path / "run" / "provision" / "target"
    cfg = AgentConfig(SERVER, MAC, "t" * 32, probe_dir=SAMPLE_PROBE, disks_from=tmp_path / "disks", retry=FAST,
                      once=True, target_record=record)  # fmt: skip
    digest = digest or read_index(canonical_json(session.image.index)).digest
    return Agent(cfg, api=Api(digest), chunk_session=lambda n: session).run_once(), record


def test_a_verified_write_records_the_disk(tmp_path: Path) -> None:
    outcome, record = run(tmp_path)
    assert outcome.code == EXIT_DONE
    assert record.read_text() == f"{tmp_path / 'disks' / 'vda'}\n"
    assert [p.name for p in record.parent.iterdir()] == ["target"]  # no temporary file left


def test_a_write_that_fails_records_nothing(tmp_path: Path) -> None:
    outcome, record = run(tmp_path, digest="0" * 64)
    assert outcome.code == EXIT_FAILED and not record.exists()


def test_the_record_is_replaced_and_relative_paths_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "target"
    record.write_text("/dev/old\n")
    monkeypatch.chdir(tmp_path)
    record_target(record, Path("disks/vda"))
    assert record.read_text() == f"{tmp_path / 'disks' / 'vda'}\n"


def test_a_record_that_cannot_be_written_is_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    with caplog.at_level(logging.WARNING):
        record_target(tmp_path / "file" / "target", Path("/dev/sda"))
    assert "cannot record the imaged disk /dev/sda in" in caplog.text


def test_the_agent_command_records_to_target_record(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[AgentConfig] = []

    def fake_run_agent(cfg: AgentConfig, **kwargs: Any) -> Outcome:
        seen.append(cfg)
        return Outcome(EXIT_FAILED, "failed", "test")

    monkeypatch.setattr(agent_main, "run_agent", fake_run_agent)
    argv = ["--server", SERVER, "--mac", MAC, "--token", "t" * 32, "--no-grow", "--no-firstboot-secret"]
    assert agent_main.main(argv) == EXIT_FAILED
    assert seen[0].target_record == Path(TARGET_RECORD) == Path("/run/provision/target")
