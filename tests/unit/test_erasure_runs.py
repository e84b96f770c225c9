"""Erasure in runs: the state moves (``erasing``; an erase-only run ``done`` only with every drive ok; an image
run ``writing`` only after its erasure), the store's erasure records (every field, operator, lot), and
``Erasing``: the report moves the run, its reason in plain words, never ``done`` with a drive not ok."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provision.erasing import Erasing, erasure_reason
from provision.errors import NotFound, RequestError, RunConflict, RunError
from provision.states import MachineState, RunState, check_run_move, erasure_complete, powers_off
from provision.store import Run, Store
from provision.wire.erasure import ErasureProgress, ErasureReport, Skipped
from tests.support.erasures import drive, report

MAC = "52:54:00:12:34:56"
TOKEN = "t" * 32
ERASE = {"erase": {"method": "auto", "verify": "sample", "only": True}}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as s:
        s.seen(MAC)
        yield s


def erase_only(store: Store) -> Run:
    return store.create_run(MAC, recipe="parts", image="", label="", digest="", plan=ERASE, erase_only=True)


def image_run(store: Store, erase: bool = True) -> Run:
    plan = {"image": "tiny", "erase": {"method": "auto"}} if erase else {"image": "tiny"}
    return store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64, plan=plan)


def erasing(store: Store, operator: str | None = None) -> Erasing:
    return Erasing(store, lambda run_id, token, remote: store.run(run_id) or pytest.fail("no run"), operator)


def test_the_rules_in_states() -> None:
    assert erasure_complete([True, True]) and not erasure_complete([]) and not erasure_complete([True, False])
    assert powers_off(MachineState.DONE, True) and not powers_off(MachineState.DONE, False)
    assert not powers_off(MachineState.REPAIR, True)
    move: dict[str, Any] = {"digest": "", "complete_digests": (), "erase": True, "erase_only": True}
    check_run_move("r", RunState.ERASING, RunState.DONE, **move, erasures_ok=[True, True])
    with pytest.raises(RunError, match="no complete erasure"):
        check_run_move("r", RunState.ERASING, RunState.DONE, **move, erasures_ok=[True, False])
    with pytest.raises(RunConflict, match="erase-only"):
        check_run_move("r", RunState.ERASING, RunState.WRITING, **move, erasures_ok=[True])
    with pytest.raises(RunConflict, match="orders no erasure"):
        check_run_move("r", RunState.INVENTORIED, RunState.ERASING, digest="d", complete_digests=())


def test_erase_only_run_is_done_only_with_every_drive_ok(store: Store) -> None:
    run = erase_only(store)
    store.set_run_state(run.id, RunState.ERASING)
    with pytest.raises(RunError, match="no complete erasure"):
        store.set_run_state(run.id, RunState.DONE)
    store.record_erasure(run.id, report(TOKEN, drive("sda"), drive("sdb", ok=False, verified=False)), None)
    with pytest.raises(RunError, match="no complete erasure"):
        store.set_run_state(run.id, RunState.DONE)
    ended = store.set_run_state(run.id, RunState.REPAIR, "sdb not erased")
    assert ended.state is RunState.REPAIR and store.machine(MAC).state is MachineState.REPAIR  # type: ignore[union-attr]


def test_image_run_with_erase_writes_only_after_its_erasure(store: Store) -> None:
    run = image_run(store)
    with pytest.raises(RunError, match="no complete erasure"):
        store.set_run_state(run.id, RunState.WRITING)
    store.record_erasure(run.id, report(TOKEN, drive("sda")), None)
    assert store.set_run_state(run.id, RunState.ERASING).state is RunState.ERASING
    assert store.set_run_state(run.id, RunState.WRITING).state is RunState.WRITING
    plain = image_run(store, erase=False)  # supersedes the first; no erase: writing straight away
    assert store.set_run_state(plain.id, RunState.WRITING).state is RunState.WRITING
    with pytest.raises(RunError, match="orders no erasure"):
        store.record_erasure(plain.id, report(TOKEN, drive("sda")), None)


def test_records_keep_every_field_the_operator_and_the_lot(store: Store) -> None:
    store.set_lot(MAC, "Banque Dupont 2026-12", "recipe-x", source="recipe")
    run = erase_only(store)
    sent = [drive("nvme0n1", method="nvme-sanitize-crypto", serial="S4EWNX0R123"), drive("sda")]
    records = store.record_erasure(run.id, report(TOKEN, *sent), "atelier")
    assert [r.drive for r in records] == sent  # every DriveErasure field, as sent
    assert {(r.run_id, r.mac, r.operator, r.lot) for r in records} == {
        (run.id, MAC, "atelier", "Banque Dupont 2026-12")
    }
    assert records[0].category == "purge" and records[0].verification is not None and records[0].smart.passed
    assert store.erasures(lot="Banque Dupont 2026-12") == records == store.erasures(mac=MAC)
    assert store.erasures(run="other") == [] and store.erasures(lot="other") == []
    assert records[0].to_dict()["serial"] == "S4EWNX0R123" and records[0].to_dict()["operator"] == "atelier"
    with pytest.raises(RunConflict, match="recorded already"):
        store.record_erasure(run.id, report(TOKEN, drive("sdc")), None)
    assert [e.detail["ok"] for e in store.events(MAC, "erasure")] == [True]


def test_operator_is_the_user_who_acted_else_the_config_else_unknown(store: Store) -> None:
    first = erase_only(store)
    assert store.record_erasure(first.id, report(TOKEN, drive()), None)[0].operator == "unknown"
    store.set_run_state(first.id, RunState.ERASING)
    store.set_run_state(first.id, RunState.DONE)
    store.operator_action(MAC, "reimage", "marie")
    assert store.record_erasure(erase_only(store).id, report(TOKEN, drive()), "atelier")[0].operator == "marie"
    store.set_lot(MAC, "Lot 7", "paul")
    records = store.record_erasure(erase_only(store).id, report(TOKEN, drive()), "atelier")
    assert (records[0].operator, records[0].lot) == ("paul", "Lot 7")


def test_a_recipe_never_replaces_a_lot_an_operator_set(store: Store) -> None:
    assert store.set_lot(MAC, " Lot A ", "paul").lot == "Lot A"
    assert store.set_lot(MAC, "Lot B", "parts", source="recipe").lot == "Lot A"
    assert store.set_lot(MAC, None, "paul").lot is None
    assert [e.detail["by"] for e in store.events(MAC, "lot")] == ["paul", "paul"]
    with pytest.raises(RequestError, match="printable"):
        store.set_lot(MAC, "a\nb", "paul")
    with pytest.raises(NotFound):
        store.set_lot("52:54:00:00:00:01", "x", "paul")


def test_erasure_report_ends_an_erase_only_run_done(store: Store) -> None:
    run = erase_only(store)
    answer = erasing(store, "atelier").report(run.id, report(TOKEN, drive("sda"), drive("sdb", serial="Z1")), None)
    assert (answer.state, answer.reason) == ("done", "2 drives erased and verified (sda: purge, sdb: purge)")
    assert store.machine(MAC).state is MachineState.DONE  # type: ignore[union-attr]


def test_a_drive_not_ok_sends_the_run_to_repair_with_its_reason(store: Store) -> None:
    run = erase_only(store)
    bad = drive("sdb", ok=False, verified=False, serial="WD-WCC4N7654321")
    answer = erasing(store).report(run.id, report(TOKEN, drive("sda"), bad), None)
    assert answer.state == "repair"
    assert answer.reason is not None and answer.reason.startswith(
        "1 drive erased and verified; drive sdb (serial WD-WCC4N7654321) failed its verification: 3 of 25600"
    )
    assert answer.reason.endswith("set it aside for a technician (the drive may be faulty: replace or destroy it)")
    assert store.run(run.id).state is RunState.REPAIR  # type: ignore[union-attr]


def test_an_image_run_goes_on_to_writing_and_a_lost_answer_gets_the_same_one(store: Store) -> None:
    run = image_run(store)
    eraser = erasing(store)
    eraser.progress(run.id, ErasureProgress(TOKEN, {"sda": 0.5, "sdb": None}), None)
    assert store.run(run.id).state is RunState.ERASING  # type: ignore[union-attr]
    assert store.events(MAC, "progress")[-1].detail["fraction"] == 0.5
    first = eraser.report(run.id, report(TOKEN, drive("sda")), None)
    again = eraser.report(run.id, report(TOKEN, drive("sda")), None)
    assert (first.state, first.reason) == (again.state, again.reason) == ("writing", None)
    assert len(store.erasures(run=run.id)) == 1
    with pytest.raises(RunConflict, match="not erasing"):
        eraser.progress(run.id, ErasureProgress(TOKEN, {"sda": 1.0}), None)


def test_no_drive_at_all_is_repair_never_done(store: Store) -> None:
    run = erase_only(store)
    answer = erasing(store).report(run.id, report(TOKEN, skipped=(("sdc", "the live medium"),)), None)
    assert answer.state == "repair"
    assert answer.reason == (
        "no drive was erased (sdc skipped: the live medium): check that the PC's disks are connected; "
        "set it aside for a technician"
    )


def test_reason_names_a_method_that_failed_before_any_read_back() -> None:
    failed = drive("nvme0n1", ok=False, method="nvme-format-crypto", reason="nvme format: Invalid Field")
    failed = type(failed).from_dict({**failed.to_dict(), "verification": None})
    assert erasure_reason(report(TOKEN, failed)) == (
        "0 drives erased and verified; drive nvme0n1 (serial WD-WCC4N1234567) was not erased (nvme-format-crypto): "
        "nvme format: Invalid Field; set it aside for a technician (the drive may be faulty: replace or destroy it)"
    )


def test_an_internal_drive_left_out_sends_the_run_to_repair_naming_it(store: Store) -> None:
    run = erase_only(store)
    left = [Skipped("sdb", "held by a mounted file system (/dev/sdb1 on /mnt)", internal=True),
            Skipped("sdc", "removable USB stick")]  # fmt: skip
    sent = ErasureReport(token=TOKEN, drives=[drive("sda")], skipped=left)
    answer = erasing(store).report(run.id, sent, None)
    assert answer.state == "repair" and answer.reason is not None
    assert answer.reason.startswith(
        "1 drive erased and verified (sda: purge); internal drive sdb of the PC was left out, not erased: held by "
        "a mounted file system (/dev/sdb1 on /mnt); sdc skipped: removable USB stick; the PC's erasure is incomplete"
    )
    whole = store.erasure_run(run.id)
    assert whole is not None and not whole.ok and [s["device"] for s in whole.skipped] == ["sdb", "sdc"]
    again = image_run(store)  # the store refuses 'writing' after such an erasure, every drive record ok or not
    store.record_erasure(again.id, sent, None)
    store.set_run_state(again.id, RunState.ERASING)
    with pytest.raises(RunError, match="no complete erasure"):
        store.set_run_state(again.id, RunState.WRITING)


def test_the_skipped_disks_are_kept_with_the_runs_erasure_even_without_a_drive(store: Store) -> None:
    run = erase_only(store)
    erasing(store).report(run.id, report(TOKEN, skipped=(("sdc", "the live medium"),)), None)
    whole = store.erasure_run(run.id)
    assert whole is not None and (whole.ok, whole.skipped, whole.operator) == (
        False, [{"device": "sdc", "reason": "the live medium", "internal": False}], "unknown"
    )  # fmt: skip
    assert store.erasure_run("other") is None


def test_the_operator_is_who_acted_for_this_run_not_in_an_earlier_cycle(store: Store) -> None:
    store.operator_action(MAC, "reimage", "marie")  # marie readies it for its first run
    first = erase_only(store)
    assert store.record_erasure(first.id, report(TOKEN, drive()), "atelier")[0].operator == "marie"
    store.set_run_state(first.id, RunState.ERASING)
    store.set_run_state(first.id, RunState.DONE)
    assert store.operator_of(MAC) is None  # marie acted for the run that ended, not for the next one
    second = erase_only(store)  # back months later: nobody acted since: the configured operator
    assert store.record_erasure(second.id, report(TOKEN, drive()), "atelier")[0].operator == "atelier"
    store.set_run_state(second.id, RunState.ERASING)
    store.set_run_state(second.id, RunState.DONE)
    assert store.record_erasure(erase_only(store).id, report(TOKEN, drive()), None)[0].operator == "unknown"
    erase_only(store)  # a stuck run, superseded by the next run, which paul readied: paul is named
    store.set_lot(MAC, "Lot 9", "paul")
    assert store.operator_of(MAC) == "paul"
    records = store.record_erasure(erase_only(store).id, report(TOKEN, drive()), "atelier")
    assert (records[0].operator, records[0].lot) == ("paul", "Lot 9")
