"""The SQLite store: migrations, machines, per-boot tokens, events."""

from __future__ import annotations

import sqlite3
import time

import pytest

from provision.states import MachineState
from provision.store import MIGRATIONS, Store

MAC = "52:54:00:12:34:56"


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "db.sqlite") as s:
        yield s


def test_schema_is_migrated_once_and_wal(tmp_path):
    path = tmp_path / "db.sqlite"
    with Store(path) as s:
        assert s.schema_version == len(MIGRATIONS)
        s.seen(MAC)
    with Store(path) as s:  # reopening does not migrate again or lose data
        assert s.schema_version == len(MIGRATIONS)
        assert s.machine(MAC) is not None
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_machine_lifecycle(store):
    m = store.seen(MAC)
    assert m.state is MachineState.NEW and m.boots == 0
    store.set_state(MAC, MachineState.FAILED, "target disk too small", vendor="Dell Inc.")
    m = store.machine(MAC)
    assert m is not None and (m.state, m.reason, m.vendor) == (
        MachineState.FAILED,
        "target disk too small",
        "Dell Inc.",
    )
    assert [e.detail["state"] for e in store.events(MAC, kind="state")] == ["failed"]
    with pytest.raises(ValueError, match="unknown machine fields"):
        store.set_state(MAC, MachineState.DONE, colour="red")


def test_tokens_newest_only_and_expiry(store):
    first = store.issue_token(MAC, via="ipxe", ttl=60)
    assert store.check_token(MAC, first)
    second = store.issue_token(MAC, via="grub", ttl=60)
    assert not store.check_token(MAC, first)
    assert store.check_token(MAC, second)
    assert not store.check_token("52:54:00:00:00:00", second)
    assert not store.check_token(MAC, second[:-1] + ("0" if second[-1] != "0" else "1"))
    expired = store.issue_token(MAC, via="ipxe", ttl=0.01)
    time.sleep(0.05)
    assert not store.check_token(MAC, expired)
    m = store.machine(MAC)
    assert m is not None and m.boots == 3
    assert [e.detail["via"] for e in store.events(MAC, kind="boot")] == ["ipxe", "grub", "ipxe"]


def test_hostile_text_is_data(store):
    hostile = "x'); DROP TABLE machines; --\n" + "A" * 10_000
    store.seen(MAC)
    store.set_state(MAC, MachineState.REPAIR, hostile, product=hostile)
    m = store.machine(MAC)
    assert m is not None and m.reason == hostile and m.product == hostile
    assert len(store.machines()) == 1
