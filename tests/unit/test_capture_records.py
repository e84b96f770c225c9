"""Capture records and rules (docs/capture.md): the request per machine, a capture run's offers (in disk order,
contiguous, a retry the same, never past the disk), what was asked and uploaded, the run's moves (capturing, done
only once a version is named), and a recipe's ``capture: NAME`` (checked with FILE:LINE and key)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.cli import main
from provision.errors import ActionRefused, RunConflict, RunError
from provision.recipes import Action, check_dir, load_dir, select
from provision.states import MachineState, RunState
from provision.store import Store
from tests.unit.test_recipes import facts, write

MAC = "52:54:00:ca:97:10"
CHUNK = 4096
SHAS = [hashlib.sha256(bytes([i])).hexdigest() for i in range(8)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as opened:
        yield opened


def capture_run(store: Store) -> str:
    store.request_capture(MAC, "golden", "alice", {"select": "largest"})
    run = store.create_run(MAC, recipe=None, image="golden", label="", digest="", capture="golden",
                           plan={"capture": {"image": "golden"}})  # fmt: skip
    store.begin_capture(run.id, "golden", CHUNK, "alice")
    return run.id


def test_a_request_makes_the_machine_boot_the_live_environment_and_is_used_up_by_its_run(store: Store) -> None:
    store.seen(MAC)
    store.set_state(MAC, MachineState.DONE)
    token = store.issue_token(MAC, "ipxe", 600)
    request = store.request_capture(MAC, "golden", "alice", {"select": "largest"})
    assert (request.image, request.requested_by, request.target_disk) == ("golden", "alice", {"select": "largest"})
    machine = store.machine(MAC)
    assert machine is not None and machine.state is MachineState.NEW  # its next network boot: the live system
    assert not store.check_token(MAC, token)  # a boot before the request does not capture
    assert store.request_capture(MAC, "other", "bob").image == "other"  # one per machine: replaced
    run_id = capture_run(store)
    assert store.capture_request(MAC) is None
    run = store.run(run_id)
    assert run is not None and (run.kind, run.capture, run.to_dict()["kind"]) == ("capture", "golden", "capture")
    assert [e.kind for e in store.events(MAC)].count("capture-requested") == 3


def test_a_capture_run_that_never_ended_is_pending_again(store: Store) -> None:
    run_id = capture_run(store)  # asked by alice, the request used up
    assert store.capture_request(MAC) is None
    pending = store.pending_capture(MAC)  # the PC rebooted mid-capture: captured again, not imaged
    assert pending is not None and (pending.image, pending.requested_by) == ("golden", "alice")
    store.set_run_state(run_id, RunState.FAILED, "x")
    assert store.pending_capture(MAC) is None  # ended: what keep_request kept, if anything, counts


def test_no_request_while_the_machine_is_being_imaged_and_a_cancel_forgets_it(store: Store) -> None:
    store.seen(MAC)
    store.create_run(MAC, recipe=None, image="educ", label="L", digest="d" * 64)
    with pytest.raises(ActionRefused, match="being imaged"):
        store.request_capture(MAC, "golden", "alice")
    assert store.cancel_capture(MAC, "alice") is None
    other = "52:54:00:ca:97:11"
    store.request_capture(other, "golden", "alice")
    cancelled = store.cancel_capture(other, "alice")
    assert cancelled is not None and cancelled.image == "golden" and store.capture_requests() == []


def test_a_cancel_ends_an_interrupted_capture_run_that_would_start_again(store: Store) -> None:
    run_id = capture_run(store)  # the request is used up by its run; the PC then rebooted mid-capture
    assert store.capture_request(MAC) is None and store.pending_capture(MAC) is not None
    cancelled = store.cancel_capture(MAC, "bob")
    assert cancelled is not None and cancelled.image == "golden"
    run = store.run(run_id)
    assert run is not None and run.state is RunState.FAILED and run.reason == "capture cancelled by bob"
    assert store.pending_capture(MAC) is None and store.cancel_capture(MAC, "bob") is None


def test_offers_come_in_order_with_no_gap_and_a_retry_is_the_same_offer(store: Store) -> None:
    run_id = capture_run(store)
    size = 6 * CHUNK + 512  # 7 positions, the last one 512 bytes
    first = store.record_offer(run_id, size, 0, [SHAS[0], None, SHAS[1], SHAS[0]])
    assert (first.new, first.offered) == ([SHAS[0], SHAS[1]], 4)  # distinct, in disk order
    store.mark_asked(run_id, [SHAS[1]])  # the store held SHAS[0]
    again = store.record_offer(run_id, size, 0, [SHAS[0], None, SHAS[1], SHAS[0]])
    # a retry (its answer lost?) names again what it was asked for and has not uploaded
    assert (again.new, again.offered) == ([SHAS[0], SHAS[1]], 4)
    store.record_upload(run_id, SHAS[1], sent=100, new=True)
    again = store.record_offer(run_id, size, 0, [SHAS[0], None, SHAS[1], SHAS[0]])
    assert (again.new, again.offered) == ([SHAS[0]], 4)  # SHAS[1] was uploaded: never twice
    for offer, words in (
        ((size, 0, [SHAS[2], None, SHAS[1], SHAS[0]]), "position 0 was offered before as"),
        ((size, 5, [SHAS[2]]), "no gap"),
        ((size + 4096, 4, [SHAS[2]]), "the disk is"),
        ((size, 4, [SHAS[2], SHAS[3], SHAS[4], SHAS[5]]), "has 7 chunks"),
    ):
        with pytest.raises(RunConflict, match=words):
            store.record_offer(run_id, *offer)
    last = store.record_offer(run_id, size, 3, [SHAS[0], SHAS[2], None, SHAS[3]])  # overlapping, then new ones
    assert (last.new, last.offered) == ([SHAS[0], SHAS[2], SHAS[3]], 7)
    assert store.capture_chunks(run_id) == [SHAS[0], None, SHAS[1], SHAS[0], SHAS[2], None, SHAS[3]]
    figures = store.capture_run(run_id)
    assert figures is not None and (figures.disk_size, figures.positions, figures.offered) == (size, 7, 7)


def test_an_upload_counts_once_and_only_what_was_asked_for(store: Store) -> None:
    run_id = capture_run(store)
    store.record_offer(run_id, 2 * CHUNK, 0, [SHAS[0], SHAS[1]])
    store.mark_asked(run_id, [SHAS[1]])
    assert store.capture_asked(run_id, SHAS[1]) and not store.capture_asked(run_id, SHAS[0])
    store.record_upload(run_id, SHAS[1], sent=100, new=True)
    figures = store.record_upload(run_id, SHAS[1], sent=100, new=False)  # a retry
    assert (figures.uploaded_chunks, figures.uploaded_bytes, figures.new_chunks, figures.asked) == (1, 100, 1, 1)


def test_the_chunks_of_captures_in_flight_are_pinned_until_the_run_ends(store: Store) -> None:
    run_id = capture_run(store)
    assert store.capture_pins() == set()
    store.record_offer(run_id, 4 * CHUNK, 0, [SHAS[0], None, SHAS[1], SHAS[0]])  # a hole, a chunk twice
    assert store.capture_pins() == {SHAS[0], SHAS[1]}  # uploaded or found in the store: gc must spare both
    store.set_run_state(run_id, RunState.FAILED, "disk unreadable")
    assert store.capture_pins() == set()  # nothing will be published from them: gc may take them


def test_a_capture_run_captures_and_ends_done_only_naming_its_version(store: Store) -> None:
    run_id = capture_run(store)
    with pytest.raises(RunConflict, match="is a capture"):
        store.set_run_state(run_id, RunState.WRITING)
    store.set_run_state(run_id, RunState.CAPTURING)
    with pytest.raises(RunError, match="no captured version"):
        store.set_run_state(run_id, RunState.DONE)
    store.set_captured(run_id, "20261207-101010-abcdefabcdef", "ab" * 32)
    run = store.set_run_state(run_id, RunState.DONE, "captured as golden@20261207-101010-abcdefabcdef")
    assert (run.state, run.digest) == (RunState.DONE, "ab" * 32)
    machine = store.machine(MAC)
    assert machine is not None and machine.state is MachineState.DONE  # it boots its local disk next
    image = store.create_run(MAC, recipe=None, image="educ", label="L", digest="d" * 64)
    with pytest.raises(RunConflict, match="not a capture"):
        store.set_run_state(image.id, RunState.CAPTURING)


def test_a_capture_recipe_captures_the_machines_it_matches(tmp_path: Path) -> None:
    write(tmp_path, "golden.yaml", "name: golden\ncapture: golden-2026\nmatch: {mac: '52:54:00:12:34:56'}\n")
    decision = select(load_dir(tmp_path), facts())
    assert decision.action is Action.IMAGE and decision.plan is not None
    assert (decision.plan.capture, decision.plan.image) == ("golden-2026", None)


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("name: x\ncapture: Golden!\nmatch: {mac: 'a:b'}\n", 2, "capture", "should match pattern"),
        ("name: x\ncapture: g\nimage: educ\nmatch: {mac: 'a:b'}\n", 1, "", "takes no 'image'"),
        ("name: x\ncapture: g\naction: repair\nmatch: {mac: 'a:b'}\n", 1, "", "takes no 'action: repair'"),
        ("name: x\ncapture: g\nhooks: [{name: hostname}]\nmatch: {mac: 'a:b'}\n", 1, "", "takes no 'hooks'"),
    ],
)
def test_a_malformed_capture_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    write(tmp_path, "r.yaml", text)
    _, problems = check_dir(tmp_path)
    found = [(Path(p.file).name, p.line, p.key) for p in problems if message in p.message]
    assert found == [("r.yaml", line, key)], [str(p) for p in problems]


def cli(state: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["image", "capture", *args, "--state-dir", str(state)], out, err)
    return code, out.getvalue(), err.getvalue()


def test_the_cli_records_a_request_and_says_what_to_do(tmp_path: Path) -> None:
    Store(tmp_path / "provision.db").close()
    code, out, _ = cli(tmp_path, "52-54-00-CA-97-12", "--name", "golden", "--disk-rule", "select=largest",
                       "--disk-rule", "transport=nvme,sata", "--by", "alice")  # fmt: skip
    assert code == 0 and "power the PC on with network boot: it will be captured as golden" in out, out
    with Store(tmp_path / "provision.db") as store:
        request = store.capture_request("52:54:00:ca:97:12")
    assert request is not None and request.target_disk == {"select": "largest", "transport": ["nvme", "sata"]}
    assert cli(tmp_path, "52:54:00:ca:97:12", "--cancel")[1] == "52:54:00:ca:97:12: capture as golden cancelled\n"
    for args, words in (
        (("not-a-mac", "--name", "golden"), "not-a-mac"),
        (("52:54:00:ca:97:12", "--name", "Golden!"), "--name: bad image name"),
        (("52:54:00:ca:97:12", "--name", "g", "--disk-rule", "select=biggest"), "--disk-rule: select"),
        (("52:54:00:ca:97:12", "--name", "g", "--disk-rule", "colour=red"), "KEY=VALUE with KEY one of"),
        (("52:54:00:ca:97:12",), "--name NAME is needed"),
        (("52:54:00:ca:97:12", "--wait"), "no capture asked"),
    ):
        code, _, err = cli(tmp_path, *args)
        assert code == 2 and words in err, (args, err)
