"""What a certificate states, from the store's records: the machine's last run with an erasure or an imaging
verification, every drive with its operator and lot, the imaging verification, the hooks; no certificate of
erasure at all when a drive was not erased (the error names it); batch certificates per lot; labels' data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.certificates.errors import CertificateError, NotErased, NothingToCertify
from provision.certificates.gather import gather, gather_lot, lot_macs, record_issued
from provision.certificates.labels import label_of, short_cpu
from provision.store import Store
from provision.wire.erasure import ErasureReport, Skipped
from tests.support.certificates import DIGEST, LABEL, seed
from tests.support.erasures import drive

MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:12:34:57"
LOT = "Banque-2026-12"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as s:
        yield s


def test_a_machine_erased_and_imaged(store: Store) -> None:
    run = seed(store, MAC, drive("nvme0n1", method="nvme-sanitize-crypto", serial="S4EW1"), drive("sda"), lot=LOT,
               hostname="poste-a1")  # fmt: skip
    cert = gather(store, MAC, workshop="Atelier", now=1_796_000_000.0)
    assert cert.run == run.id and cert.lot == LOT and cert.workshop.name == "Atelier"
    assert cert.issued == "2026-11-30T00:53:20Z" and cert.software.startswith("provision ")
    assert [d.erasure.serial for d in cert.drives] == ["S4EW1", "WD-WCC4N1234567"]
    assert [d.erasure.category for d in cert.drives] == ["purge", "purge"] and cert.erased and cert.purged
    assert {d.operator for d in cert.drives} == {"marie"}  # she set the lot: the operator of record
    assert cert.machine.asset_id == "poste-a1" and cert.machine.mac == MAC
    assert (cert.machine.vendor, cert.machine.model, cert.machine.ram_mb) == ("Dell Inc.", "OptiPlex 7050", 8192)
    imaging = cert.imaging
    assert imaging is not None and imaging.complete and imaging.root_digest == DIGEST and imaging.label == LABEL
    assert (imaging.chunks, imaging.verified, imaging.read_back) == (12, 12, "ok")
    assert gather(store, MAC).id != cert.id  # every issue is a new certificate


def test_a_disk_left_out_is_stated(store: Store) -> None:
    seed(store, MAC, drive("sda"), skipped=(("sdb", "the live medium (USB) this PC booted from"),))
    cert = gather(store, MAC)
    assert [(s.device, s.reason) for s in cert.skipped] == [("sdb", "the live medium (USB) this PC booted from")]
    seed(store, OTHER, drive("sda"))
    assert gather(store, OTHER).skipped == []


def test_no_certificate_of_erasure_when_a_drive_failed(store: Store) -> None:
    seed(store, MAC, drive("nvme0n1"), drive("sdb", ok=False, verified=False, serial="BAD-1"), verified=False)
    with pytest.raises(NotErased) as caught:
        gather(store, MAC)
    error = caught.value
    assert "sdb" in error.message and "BAD-1" in error.message and "still hold data" in error.message
    assert error.facts["device"] == "sdb" and error.facts["serial"] == "BAD-1" and error.status_code == 409
    assert "nvme0n1" not in error.message  # only the drive that failed is named


def test_the_last_run_counts_an_earlier_success_does_not_hide_a_failure(store: Store) -> None:
    seed(store, MAC, drive("sda"))
    seed(store, MAC, drive("sda", ok=False, verified=False), verified=False)
    with pytest.raises(NotErased):
        gather(store, MAC)
    first = store.runs(MAC)[0]
    assert gather(store, MAC, run=first.id).run == first.id  # the earlier run, by name


def test_imaging_only_states_no_erasure(store: Store) -> None:
    seed(store, MAC)
    cert = gather(store, MAC)
    assert not cert.erased and not cert.drives and cert.imaging is not None and cert.machine.asset_id == MAC


def test_erase_only_states_no_imaging(store: Store) -> None:
    seed(store, MAC, drive("sda"), image=False)
    cert = gather(store, MAC)
    assert cert.erased and cert.imaging is None


def test_nothing_to_certify(store: Store) -> None:
    with pytest.raises(NothingToCertify, match="no machine"):
        gather(store, MAC)
    store.seen(MAC)
    with pytest.raises(NothingToCertify, match="no run with an erasure"):
        gather(store, MAC)
    with pytest.raises(NothingToCertify, match="has no run 'nope'"):
        gather(store, MAC, run="nope")


def test_a_lot_lists_every_drive_of_every_machine(store: Store) -> None:
    seed(store, MAC, drive("nvme0n1", serial="A1"), drive("sda", serial="A2"), lot=LOT)
    seed(store, OTHER, drive("sda", serial="B1"), lot=LOT, image=False)
    seed(store, "52:54:00:00:00:01", drive("sda", serial="C1"), lot="another")
    assert lot_macs(store, LOT) == [MAC, OTHER]
    lot = gather_lot(store, LOT, workshop="Atelier")
    assert lot.lot == LOT and [m.machine.mac for m in lot.machines] == [MAC, OTHER]
    assert [d.erasure.serial for _m, d in lot.drives] == ["A1", "A2", "B1"]


def test_a_lot_with_a_machine_not_erased_gets_no_batch_certificate(store: Store) -> None:
    seed(store, MAC, drive("sda"), lot=LOT)
    seed(store, OTHER, lot=LOT)  # imaged, never erased
    seed(store, "52:54:00:00:00:02", drive("sda", ok=False, verified=False, serial="BAD"), lot=LOT, verified=False)
    with pytest.raises(NotErased) as caught:
        gather_lot(store, LOT)
    assert "2 of its 3 machine(s)" in caught.value.message and "BAD" in caught.value.message
    assert OTHER in caught.value.message and len(caught.value.facts["problems"]) == 2  # type: ignore[arg-type]
    with pytest.raises(NothingToCertify, match="no machine in lot"):
        gather_lot(store, "empty")


def test_issuing_is_recorded_on_each_machine(store: Store) -> None:
    seed(store, MAC, drive("sda"), lot=LOT)
    cert = gather(store, MAC)
    record_issued(store, cert, "0123456789abcdef")
    (event,) = store.events(MAC, "certificate")
    assert event.detail == {"id": cert.id, "kind": "machine", "run": cert.run, "drives": 1, "key": "0123456789abcdef",
                            "lot": LOT}  # fmt: skip


def test_a_label_says_what_the_machine_is_and_what_it_got(store: Store) -> None:
    seed(store, MAC, drive("sda"), hostname="poste-a1")
    label = label_of(store, MAC)
    assert (label.asset_id, label.mac, label.maker_model) == ("poste-a1", MAC, "Dell Inc. OptiPlex 7050")
    assert label.cpu == "Intel Core i5-7500 3.40GHz" and label.ram_mb == 8192 and label.image == f"tiny {LABEL}"
    assert label.qr_svg().startswith("data:image/svg+xml")
    seed(store, OTHER, verified=False)
    assert label_of(store, OTHER).image is None  # never read back complete: no image on its label
    assert short_cpu("AMD Ryzen 5 PRO 2400G with Radeon Vega Graphics") == "AMD Ryzen 5 PRO 2400G"


def test_the_disks_left_out_come_from_the_store_not_an_event(store: Store) -> None:
    run = seed(store, MAC, drive("sda"), skipped=(("sdc", "removable USB stick"),))
    with store.atomic():  # the event log is for the dashboard: the certificate does not depend on it
        store._db.execute("DELETE FROM events WHERE kind = 'erasure'")
    assert [(s.device, s.reason, s.internal) for s in gather(store, MAC).skipped] == [
        ("sdc", "removable USB stick", False)
    ]
    with store.atomic():  # a list that does not read is refused, never dropped
        store._db.execute("UPDATE erasure_runs SET skipped = ? WHERE run_id = ?", ('[{"device": "SD C!"}]', run.id))
    with pytest.raises(CertificateError, match="left out do not read"):
        gather(store, MAC)


def test_no_certificate_of_erasure_when_an_internal_drive_was_left_out(store: Store) -> None:
    store.seen(MAC)
    run = store.create_run(MAC, recipe="r", image="", label="", digest="", plan={"erase": {"only": True}},
                           erase_only=True)  # fmt: skip
    left = [Skipped("sdb", "held by md0 (a RAID member)", internal=True), Skipped("sdc", "removable")]
    store.record_erasure(run.id, ErasureReport(token="t" * 32, drives=[drive("sda")], skipped=left), "marie")
    with pytest.raises(NotErased) as caught:
        gather(store, MAC)
    assert "internal drive sdb: held by md0 (a RAID member)" in caught.value.message
    assert caught.value.facts["device"] == "sdb" and caught.value.status_code == 409
    store.set_lot(MAC, LOT, "marie")
    with pytest.raises(NotErased, match="internal drive sdb"):
        gather_lot(store, LOT)


def test_erasures_recorded_before_the_migration_keep_their_skipped_disks(tmp_path: Path) -> None:
    import json
    import sqlite3

    from provision.store.schema import MIGRATIONS

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:7], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    db.execute("INSERT INTO machines (mac, state, first_seen, last_seen) VALUES (?, 'done', 1, 1)", (MAC,))
    db.execute("INSERT INTO runs (id, mac, image, label, digest, state, started) VALUES ('r1', ?, '', '', '', "
               "'done', 1)", (MAC,))  # fmt: skip
    detail = {"run": "r1", "ok": True, "operator": "marie", "lot": LOT, "drives": [],
              "skipped": [{"device": "sdc", "reason": "the live medium"}]}  # fmt: skip
    db.execute("INSERT INTO events (mac, at, kind, detail) VALUES (?, 5, 'erasure', ?)", (MAC, json.dumps(detail)))
    db.commit()
    db.close()
    with Store(path) as migrated:
        whole = migrated.erasure_run("r1")
    assert whole is not None and (whole.ok, whole.operator, whole.lot, whole.recorded_at) == (True, "marie", LOT, 5)
    assert whole.skipped == [{"device": "sdc", "reason": "the live medium"}]
