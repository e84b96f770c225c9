"""The agent's main loop and its API client with fakes: no sockets, no subprocess."""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.agent.client import ApiRefused, ProgressPoster, ServerApi
from provision.agent.errors import SeedToolFailed, ServerUnreachable, TargetError
from provision.agent.index import canonical_json, read_index
from provision.agent.main import (
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_POWEROFF,
    EXIT_REPAIR,
    EXIT_WAITING,
    Agent,
    AgentConfig,
    args_from_kernel,
    boot_info,
    error_facts,
    missing,
    read_probe_folder,
    run_agent,
    verification,
)
from provision.agent.report import WriteReport
from provision.agent.seed import SeedResult, write_firstboot_secret
from provision.wire.api import Report, RunAnswer
from provision.wire.carousel import MAX_PAYLOAD, MulticastPlan, carousel_order
from tests.support.agent import (
    FAST,
    INDEX_PATH,
    SERVER,
    FakeDebugfs,
    FakeSession,
    build_image,
    frame,
    random_disk,
    sha,
)
from tests.support.carousel import ListReceiver, stream
from tests.support.files import sha256_file, sparse_file
from tests.support.paths import SAMPLE_PROBE

MAC = "52:54:00:12:34:56"


class FakeApi(ServerApi):
    """Answers hello from a script and records every call."""

    def __init__(self, answers: list[dict[str, Any]], report_state: str = "done") -> None:
        super().__init__(SERVER, MAC, "t" * 32, sleep=lambda s: None)
        self.answers = answers
        self.report_state = report_state
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def post(self, path: str, body: Mapping[str, Any], *, retry: bool = True) -> dict[str, Any]:
        with self.lock:
            self.calls.append((path, dict(body)))
        if path == "/api/v1/hello":
            return self.answers.pop(0)
        if path.endswith("/report"):
            return {"run": "r1", "state": self.report_state if body["ok"] else "failed", "reason": body.get("reason")}
        if path.endswith("/multicast"):
            return {"run": "r1", "sending": body["event"] != "leave", "listeners": 1}
        return {"ok": True}

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        return [b for p, b in self.calls if p.endswith(suffix)]


def plan(**over: Any) -> dict[str, Any]:
    return {"action": "image", "run": "r1", "plan": {"image": "educ", "version": "L", "digest": "0" * 64,
            "index_url": INDEX_PATH, "wipe": "zero", "target_disk": {}, "grow_root": True, **over}}  # fmt: skip


def config(tmp_path: Path, **over: Any) -> AgentConfig:
    base: dict[str, Any] = {"server": SERVER, "mac": MAC, "token": "t" * 32, "probe_dir": SAMPLE_PROBE,
                            "disks_from": tmp_path / "disks", "retry": FAST, "once": True}  # fmt: skip
    return AgentConfig(**{**base, **over})


@pytest.fixture
def image_session() -> FakeSession:
    return FakeSession(build_image(random_disk(24 * 65536, [1, 2, 5, 9, 20])))


def disks(tmp_path: Path, *sizes: int) -> None:
    (tmp_path / "disks").mkdir()
    for i, size in enumerate(sizes):
        sparse_file(tmp_path / "disks" / f"vd{'abc'[i]}", size)


def test_a_plan_is_written_verified_grown_and_reported(tmp_path: Path, image_session: FakeSession) -> None:
    disks(tmp_path, 32 * 65536)
    api = FakeApi([{"action": "wait", "reason": "image building", "retry_after": 5}, plan()])
    digest = read_index(canonical_json(image_session.image.index)).digest
    api.answers[1]["plan"]["digest"] = digest
    grown: list[Path] = []
    slept: list[float] = []

    class Grown:
        def to_dict(self) -> dict[str, Any]:
            return {"grown": True}

    def grow(path: Path) -> Grown:
        grown.append(path)
        return Grown()

    agent = Agent(
        config(tmp_path, once=False), api=api, grow=grow, chunk_session=lambda n: image_session, sleep=slept.append
    )
    outcome = agent.run_once()
    assert (outcome.code, outcome.state, outcome.run) == (EXIT_DONE, "done", "r1")
    assert grown == [tmp_path / "disks" / "vda"] and slept == [5.0]
    assert sha256_file(tmp_path / "disks" / "vda", len(image_session.image.raw)) == sha(image_session.image.raw)
    [hello, hello2] = api.bodies("/hello")
    assert hello["mac"] == MAC and "lsblk.json" in hello["probe"] and hello == hello2
    [report] = api.bodies("/report")
    body = report["report"]
    assert report["ok"] is True and report["grow"] == {"grown": True}
    assert (body["chunks"], body["verified"], body["holes"]) == (5, 5, 19)
    assert body["holes_verified"] == 19 and body["digest"] == digest and body["read_back_ok"] is True
    assert report["writer"]["fetched"] == 5 and report["writer"]["skipped"] == 0
    frames = image_session.image.frames.values()
    assert report["transfer"] == {"mode": "unicast", "bytes_http": sum(map(len, frames)), "chunks_http": 5,
                                  "bytes_multicast": 0, "repair_bytes": 0, "chunks_multicast": 0, "datagrams": 0,
                                  "datagrams_lost": 0, "datagrams_dropped": 0, "seconds_listening": 0.0}  # fmt: skip


def test_a_multicast_plan_takes_the_chunks_from_the_carousel(tmp_path: Path, image_session: FakeSession) -> None:
    disks(tmp_path, 32 * 65536)
    index = read_index(canonical_json(image_session.image.index))
    order = carousel_order(index.chunks)
    frames = [image_session.image.frames[s] for s in order]
    carousel = {"group": "239.255.1.1", "port": 9, "digest": index.digest, "chunks": len(order), "rate": 10**7}
    api = FakeApi([plan(digest=index.digest, multicast=carousel)])
    lost = {3, 50}
    datagrams = [d for i, d in enumerate(stream(frames, index.digest, first=(2, 3), chunks=8)) if i not in lost]
    groups: list[MulticastPlan] = []

    def receiver(plan: MulticastPlan) -> ListReceiver:
        groups.append(plan)
        return ListReceiver(datagrams)

    agent = Agent(config(tmp_path), api=api, chunk_session=lambda n: image_session, multicast_receiver=receiver)
    assert agent.run_once().code == EXIT_DONE
    assert sha256_file(tmp_path / "disks" / "vda", len(image_session.image.raw)) == sha(image_session.image.raw)
    assert [g.group for g in groups] == ["239.255.1.1"]
    calls = api.bodies("/multicast")
    assert [c["event"] for c in calls] == ["join", "leave"] and calls[1]["reason"] == "all chunks received"
    assert all(c["token"] == "t" * 32 for c in calls)
    [report] = api.bodies("/report")
    transfer = report["transfer"]
    assert (transfer["mode"], transfer["chunks_multicast"], transfer["chunks_http"]) == ("multicast", 5, 0)
    assert transfer["repair_bytes"] == transfer["bytes_http"] == 2 * MAX_PAYLOAD and transfer["datagrams_lost"] == 2
    assert transfer["left_because"] == "all chunks received"
    assert len(image_session.ranges) == 2 and sum(image_session.chunk_gets.values()) == 2


def test_a_failed_multicast_write_reports_its_transfer(tmp_path: Path, image_session: FakeSession) -> None:
    """A write that fails on an error not retried (a chunk whose frame came wrong by multicast is refused by
    HTTP) still reports how the chunks came so far."""
    disks(tmp_path, 32 * 65536)
    index = read_index(canonical_json(image_session.image.index))
    order = carousel_order(index.chunks)
    frames = [image_session.image.frames[s] for s in order]
    wrong = bytearray(image_session.image.plain[order[0]])
    wrong[5] ^= 1
    frames[0] = frame(bytes(wrong))  # its sha256 fails: the chunk comes by HTTP, which refuses it
    carousel = {"group": "239.255.1.1", "port": 9, "digest": index.digest, "chunks": len(order), "rate": 10**7}
    api = FakeApi([plan(digest=index.digest, multicast=carousel)])
    datagrams = list(stream(frames, index.digest))
    image_session.fault(order[0], "404")
    agent = Agent(config(tmp_path), api=api, chunk_session=lambda n: image_session,
                  multicast_receiver=lambda p: ListReceiver(datagrams))  # fmt: skip
    outcome = agent.run_once()
    [report] = api.bodies("/report")
    assert (outcome.code, report["ok"]) == (EXIT_FAILED, False) and "HttpRefused" in report["reason"], report
    transfer = report["transfer"]
    assert transfer["mode"] == "multicast" and transfer["datagrams"] > 0  # at least the wrong frame's
    assert [c["event"] for c in api.bodies("/multicast")] == ["join", "leave"]


def test_a_write_failure_is_reported_with_its_facts(tmp_path: Path, image_session: FakeSession) -> None:
    disks(tmp_path, 32 * 65536)
    api = FakeApi([plan(digest="0" * 64)])
    outcome = Agent(config(tmp_path), api=api, chunk_session=lambda n: image_session).run_once()
    assert (outcome.code, outcome.state) == (EXIT_FAILED, "failed")
    [report] = api.bodies("/report")
    assert report["ok"] is False and "IndexInvalid" in report["reason"] and "report" not in report
    assert report["error"]["type"] == "IndexInvalid" and report["error"]["retryable"] is False


def test_a_failed_grow_is_reported_with_the_verification(tmp_path: Path, image_session: FakeSession) -> None:
    disks(tmp_path, 32 * 65536)
    api = FakeApi([plan(digest=read_index(canonical_json(image_session.image.index)).digest)])

    def grow(path: Path) -> Any:
        raise RuntimeError("a bug in grow")  # not a ProvisionError: still reported, the run does not stay open

    outcome = Agent(config(tmp_path), api=api, grow=grow, chunk_session=lambda n: image_session).run_once()
    assert outcome.code == EXIT_FAILED and outcome.reason is not None and "growing" in outcome.reason
    [report] = api.bodies("/report")
    assert report["ok"] is False and report["report"]["verified"] == 5
    assert report["error"]["type"] == "RuntimeError" and "a bug in grow" in report["reason"]


def test_no_grow_unless_the_plan_says(tmp_path: Path, image_session: FakeSession) -> None:
    disks(tmp_path, 32 * 65536)
    digest = read_index(canonical_json(image_session.image.index)).digest
    api = FakeApi([plan(digest=digest, grow_root=False)])
    called: list[Path] = []
    agent = Agent(config(tmp_path), api=api, grow=called.append, chunk_session=lambda n: image_session)
    assert agent.run_once().code == EXIT_DONE and called == []
    assert "grow" not in api.bodies("/report")[0]


@pytest.mark.parametrize(
    ("answer", "code", "state"),
    [
        ({"action": "repair", "reasons": ["SMART failed", "RAM 1 GiB"]}, EXIT_REPAIR, "repair"),
        ({"action": "local", "reason": "recipe says local"}, EXIT_POWEROFF, "local"),
        ({"action": "wait", "reason": "no image", "retry_after": 30}, EXIT_WAITING, "waiting"),
        ({"action": "dance"}, EXIT_FAILED, "failed"),
    ],
)
def test_answers_other_than_a_plan(tmp_path: Path, answer: dict[str, Any], code: int, state: str) -> None:
    outcome = run_agent(config(tmp_path), api=FakeApi([answer]))
    assert (outcome.code, outcome.state) == (code, state)
    if state == "repair":
        assert outcome.reason == "SMART failed; RAM 1 GiB"


def test_report_body_counts_data_chunks_and_holes_apart() -> None:
    report = WriteReport(
        image="educ", digest="a" * 64, target="/dev/sda", target_kind="block", io_mode="O_DIRECT",
        readback="O_DIRECT", disk_size=100, chunk_size=10, chunks=10, holes=4, fetched=5, skipped=1,
        downloads=5, bytes_fetched=50, bytes_written=60, wipe="zero", wipe_method="BLKZEROOUT",
        wipe_ranges=((60, 40),), wiped_bytes=40, verified=6, holes_verified=4, failures=(), failure_count=0,
        seconds=2.0, stage_seconds=(),
    )  # fmt: skip
    body = verification(report).to_dict()
    assert (body["chunks"], body["verified"], body["holes"], body["holes_verified"]) == (6, 6, 4, 4)
    assert body["wipe_ranges"] == [[60, 40]] and body["mean_rate"] == 50 and body["read_back_ok"] is True


def test_error_facts_are_json_safe() -> None:
    exc = TargetError("bad", target=Path("/dev/sda"), size=3, nested={"a": object()})
    facts = error_facts(exc)
    assert facts["type"] == "TargetError" and facts["facts"]["target"] == "/dev/sda" and facts["facts"]["size"] == 3
    assert isinstance(facts["facts"]["nested"], str)


def test_probe_folder_limits(tmp_path: Path) -> None:
    (tmp_path / "small").write_text("x")
    (tmp_path / "huge").write_bytes(b"y" * (3 << 20))
    (tmp_path / "smartctl-a:b.json").write_text("{}")  # a name the server would refuse: the hello would fail
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    files, warnings = read_probe_folder(tmp_path)
    assert list(files) == ["small"]
    assert any("huge" in w for w in warnings) and any("a:b" in w and "refuses" in w for w in warnings)


def test_boot_info_reads_secure_boot(tmp_path: Path) -> None:
    assert boot_info(tmp_path).firmware == "bios"
    var = tmp_path / "firmware" / "efi" / "efivars" / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    var.parent.mkdir(parents=True)
    var.write_bytes(b"\x06\x00\x00\x00\x01")
    assert boot_info(tmp_path).secure_boot is True
    var.write_bytes(b"\x06\x00\x00\x00\x00")
    assert boot_info(tmp_path).to_dict() | {"kernel": ""} == {"firmware": "uefi", "secure_boot": False, "kernel": ""}


def test_kernel_args_and_missing() -> None:
    found = args_from_kernel("quiet provision.server=http://x:8080 provision.mac=aa provision.token=tt", {"mac": "bb"})
    assert found == {"server": "http://x:8080", "mac": "bb", "token": "tt"}
    assert missing({"server": "s"}) == ["mac", "token"]


# ------------------------------------------------------------------------------------------- the client
class ScriptedSession(requests.Session):
    def __init__(self, script: list[int | Exception], run: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.script = script
        self.posts = 0
        self.run = run

    def get(self, url: str | bytes, **kw: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200 if self.run is not None else 404
        response._content = json.dumps(self.run or {"error": "no such run"}).encode()
        return response

    def post(self, url: str | bytes, data: Any = None, json: Any = None, **kw: Any) -> requests.Response:
        self.posts += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        response = requests.Response()
        response.status_code = step
        response._content = b'{"error": "nope", "problems": [{"field": "mac"}]}' if step >= 400 else b'{"ok": 1}'
        return response


def test_client_retries_transient_failures_then_succeeds() -> None:
    session = ScriptedSession([requests.ConnectionError("refused"), 503, 200])
    api = ServerApi(SERVER, MAC, "t" * 32, session=session, sleep=lambda s: None)
    assert api.post("/api/v1/hello", {}) == {"ok": 1} and session.posts == 3


def test_client_4xx_is_final_with_the_reason() -> None:
    api = ServerApi(SERVER, MAC, "t" * 32, session=ScriptedSession([422]), sleep=lambda s: None)
    with pytest.raises(ApiRefused) as exc:
        api.post("/api/v1/hello", {})
    assert exc.value.status == 422 and "nope" in exc.value.reason and "mac" in exc.value.reason


def test_a_report_whose_answer_was_lost_reads_the_recorded_state() -> None:
    """The first report got through but its answer did not: the retry gets 409, the run's state is read."""
    session = ScriptedSession([requests.ReadTimeout("read timed out"), 409], run={"state": "done", "reason": None})
    api = ServerApi(SERVER, MAC, "t" * 32, session=session, sleep=lambda s: None)
    failed = Report("t" * 32, False, "disk vanished")
    assert api.report("r1", failed) == RunAnswer("r1", "done", None)
    with pytest.raises(ApiRefused):
        ServerApi(SERVER, MAC, "t" * 32, session=ScriptedSession([422]), sleep=lambda s: None).report("r1", failed)


def test_client_gives_up_at_the_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    session = ScriptedSession([500] * 100)
    api = ServerApi(SERVER, MAC, "t" * 32, session=session, deadline=20, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(ServerUnreachable) as exc:
        api.post("/api/v1/hello", {})
    assert exc.value.retryable and exc.value.attempts == session.posts and now[0] >= 20


def test_progress_poster_posts_the_latest_and_survives_failures() -> None:
    api = FakeApi([])
    poster = ProgressPoster(api, "r1")
    for i in range(50):
        poster.submit("writing", i, 49, 1.0)
    poster.close()
    posted = api.bodies("/progress")
    assert posted and posted[-1]["bytes_done"] == 49 and len(posted) <= 50

    class Down(FakeApi):
        def post(self, path: str, body: Mapping[str, Any], *, retry: bool = True) -> dict[str, Any]:
            raise ServerUnreachable(path, 1, 0.0, "refused")

    down = ProgressPoster(Down([]), "r2")
    down.submit("writing", 1, 2, 0.0)
    down.close()
    assert down.failed == 1 and down.posted == 0


# ------------------------------------------------------------------------------ the first-boot credential
SECRET = "c0ffee" * 10 + "beef"  # 64 hex digits


def seeded(path: Path, **over: Any) -> SeedResult:
    base: dict[str, Any] = {"device": str(path), "written": True, "reason": None, "partition": 3,
                            "fs_type": "ext4", "fs_device": "/dev/loop9", "created": ("/var",)}  # fmt: skip
    return SeedResult(**{**base, **over})


def test_a_plan_with_a_secret_has_it_written_after_grow_and_the_report_says_so(
    tmp_path: Path, image_session: FakeSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    disks(tmp_path, 32 * 65536)
    api = FakeApi([plan(digest=read_index(canonical_json(image_session.image.index)).digest, firstboot_secret=SECRET)])
    steps: list[tuple[str, Path]] = []

    class Grown:
        def to_dict(self) -> dict[str, Any]:
            return {"grown": True}

    def grow(path: Path) -> Grown:
        steps.append(("grow", path))
        return Grown()

    def seed(path: Path, secret: str) -> SeedResult:
        assert secret == SECRET
        steps.append(("seed", path))
        return seeded(path)

    agent = Agent(config(tmp_path), api=api, grow=grow, seed=seed, chunk_session=lambda n: image_session)
    outcome = agent.run_once()
    assert (outcome.code, outcome.state) == (EXIT_DONE, "done")
    vda = tmp_path / "disks" / "vda"
    assert steps == [("grow", vda), ("seed", vda)]
    [report] = api.bodies("/report")
    assert report["ok"] is True and report["grow"] == {"grown": True}
    assert report["writer"]["firstboot_secret"] == "written"
    assert report["writer"]["firstboot_seed"] == seeded(vda).to_dict() and report["writer"]["fetched"] == 5
    assert SECRET not in json.dumps(api.calls) and SECRET not in caplog.text
    assert "first-boot credential written" in caplog.text


def test_a_skipped_seed_is_said_and_the_run_is_done(tmp_path: Path, image_session: FakeSession) -> None:
    """The real seed step on this image (random chunks, no GPT) skips; an agent without the step says so too."""
    disks(tmp_path, 32 * 65536)
    digest = read_index(canonical_json(image_session.image.index)).digest
    run = FakeDebugfs()
    seed = functools.partial(write_firstboot_secret, run=run)
    api = FakeApi([plan(digest=digest, firstboot_secret=SECRET, grow_root=False)])
    assert Agent(config(tmp_path), api=api, seed=seed, chunk_session=lambda n: image_session).run_once().code == 0
    writer = api.bodies("/report")[0]["writer"]
    assert (
        writer["firstboot_secret"].startswith("skipped: no usable GPT: no GPT signature at LBA 1") and run.calls == []
    )
    assert writer["firstboot_seed"]["written"] is False and writer["firstboot_seed"]["partition"] is None

    api = FakeApi([plan(digest=digest, firstboot_secret=SECRET)])
    assert Agent(config(tmp_path), api=api, chunk_session=lambda n: image_session).run_once().code == EXIT_DONE
    writer = api.bodies("/report")[0]["writer"]
    assert writer["firstboot_secret"] == "skipped: this agent was started without the seed step"
    assert writer["firstboot_seed"] is None

    called: list[Path] = []

    def never(path: Path, secret: str) -> SeedResult:
        called.append(path)
        return seeded(path)

    api = FakeApi([plan(digest=digest)])  # no secret in the plan: no seed step, nothing said
    agent = Agent(config(tmp_path), api=api, seed=never, chunk_session=lambda n: image_session)
    assert agent.run_once().code == EXIT_DONE and called == []
    assert "firstboot_secret" not in api.bodies("/report")[0]["writer"]


def test_a_failed_seed_fails_the_run_with_the_facts(
    tmp_path: Path, image_session: FakeSession, caplog: pytest.LogCaptureFixture
) -> None:
    disks(tmp_path, 32 * 65536)
    api = FakeApi([plan(digest=read_index(canonical_json(image_session.image.index)).digest, firstboot_secret=SECRET)])
    argv = ["debugfs", "-w", "-f", "/tmp/provision-seed-x/write", "/dev/loop9"]

    def seed(path: Path, secret: str) -> SeedResult:
        raise SeedToolFailed(str(path), argv, 0, "write: Could not allocate block\n", "debugfs reported an error",
                             partition=3, fs_device="/dev/loop9")  # fmt: skip

    outcome = Agent(config(tmp_path), api=api, seed=seed, chunk_session=lambda n: image_session).run_once()
    assert outcome.code == EXIT_FAILED and outcome.reason is not None
    assert outcome.reason.startswith("writing the first-boot credential failed: SeedToolFailed: ")
    [report] = api.bodies("/report")
    assert report["ok"] is False and report["report"]["verified"] == 5 and report["reason"] == outcome.reason
    facts = report["error"]["facts"]
    assert report["error"]["type"] == "SeedToolFailed" and facts["returncode"] == 0 and facts["partition"] == 3
    assert facts["argv"] == str(argv) and "Could not allocate" in facts["stderr"]
    assert facts["device"] == str(tmp_path / "disks" / "vda")
    assert SECRET not in json.dumps(api.calls) and SECRET not in caplog.text


def test_the_hello_carries_the_live_environments_ssh_host_key(tmp_path: Path) -> None:
    from provision.agent.main import ssh_host_key

    key = tmp_path / "dropbear_ed25519_host_key"
    key.write_bytes(b"binary key")
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@live"
    shown = f"Public key portion is:\n{line}\nFingerprint: SHA256:xyz\n".encode()

    def run(argv: list[str], **kw: Any) -> Any:
        assert argv == ["dropbearkey", "-y", "-f", str(key)]
        return subprocess.CompletedProcess(argv, 0, shown, b"")

    assert ssh_host_key(key, run) == line
    assert ssh_host_key(tmp_path / "absent", run) is None
