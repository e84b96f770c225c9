"""Full-DHCP leases: allocation, stickiness, holds, exhaustion, decline/release, and the JSON file."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from provision.dhcp.leases import OFFER_HOLD, LeasePool, LeaseStoreError, LeaseTable
from provision.dhcp.policy import DhcpSettingsError
from tests.support.clock import Clock


def ip(last: int) -> IPv4Address:
    return IPv4Address(f"198.18.0.{last}")


def mac(n: int) -> str:
    return f"52:54:00:00:00:{n:02x}"


POOL = LeasePool(start=ip(100), end=ip(103), netmask=IPv4Address("255.255.255.0"), lease_time=600)


@pytest.fixture
def clock():
    return Clock()


def table(clock: Clock, path=None, pool: LeasePool = POOL, **kw) -> LeaseTable:
    return LeaseTable(pool, path, clock=clock, **kw)


def test_first_free_then_sticky(clock):
    t = table(clock)
    assert t.offer(mac(1)) == ip(100)
    assert t.offer(mac(1)) == ip(100)  # the same offer again
    assert t.offer(mac(2)) == ip(101)  # 100 is held for mac 1
    lease = t.commit(mac(1), ip(100))
    assert lease is not None and lease.expires == clock.now + 600
    clock.now += 10_000  # long expired
    assert t.offer(mac(1)) == ip(100)  # sticky after expiry
    assert t.get(mac(1)) == lease


def test_requested_address_is_honoured_when_free(clock):
    t = table(clock)
    assert t.offer(mac(1), ip(102)) == ip(102)
    assert t.offer(mac(2), ip(102)) == ip(100)  # held for mac 1
    assert t.offer(mac(3), IPv4Address("10.0.0.1")) == ip(101)  # outside the range: ignored


def test_offer_hold_expires(clock):
    t = table(clock)
    assert t.offer(mac(1)) == ip(100)
    clock.now += OFFER_HOLD + 1
    assert t.offer(mac(2)) == ip(100)


def test_exhaustion_then_oldest_expired_binding_is_reused(clock):
    t = table(clock)
    for n in range(4):
        address = t.offer(mac(n))
        assert address is not None
        clock.now += 1
        assert t.commit(mac(n), address) is not None
    assert t.offer(mac(9)) is None  # exhausted
    clock.now += 600  # every lease expired; mac 0's first
    assert t.offer(mac(9)) == ip(100)
    assert t.commit(mac(9), ip(100)) is not None
    assert t.get(mac(0)) is None  # mac 0 lost its sticky address
    assert t.offer(mac(0)) == ip(101)  # the next oldest


def test_reserved_addresses_are_never_given(clock):
    t = table(clock, reserved=[ip(100), ip(101)])
    assert t.offer(mac(1)) == ip(102)
    assert t.commit(mac(2), ip(100)) is None
    assert not t.available(ip(101), mac(2))


def test_commit_refuses_a_taken_or_foreign_address(clock):
    t = table(clock)
    assert t.commit(mac(1), ip(100)) is not None
    assert t.commit(mac(2), ip(100)) is None
    assert t.commit(mac(2), IPv4Address("198.18.0.99")) is None
    assert t.commit(mac(1), ip(100)) is not None  # renewal
    assert t.commit(mac(1), ip(101)) is not None  # moving: the old binding goes
    assert [(lease.mac, lease.ip) for lease in t.leases()] == [(mac(1), ip(101))]
    assert t.available(ip(100), mac(2))


def test_release_keeps_the_binding_but_frees_the_address(clock):
    t = table(clock)
    t.commit(mac(1), ip(100))
    assert not t.release(mac(2), ip(100))
    assert not t.release(mac(1), ip(101))
    assert t.release(mac(1), ip(100))
    lease = t.get(mac(1))
    assert lease is not None and not lease.active(clock.now)
    assert t.offer(mac(1)) == ip(100)  # still sticky
    assert t.offer(mac(2)) == ip(101)  # 100 is held by mac 1's new offer


def test_decline_blocks_the_address_for_one_lease_time(clock):
    t = table(clock)
    t.commit(mac(1), ip(100))
    assert t.decline(mac(1), ip(100))
    assert t.get(mac(1)) is None
    assert t.offer(mac(1)) == ip(101)
    assert not t.decline(mac(1), IPv4Address("10.0.0.1"))
    clock.now += 601
    assert t.available(ip(100), mac(2))


def test_persistence_round_trip(clock, tmp_path):
    path = tmp_path / "state" / "dhcp-leases.json"
    t = table(clock, path)
    t.commit(mac(1), ip(101))
    t.commit(mac(2), ip(100))
    t.decline(mac(3), ip(103))
    doc = json.loads(path.read_text())
    assert doc["version"] == 1
    assert doc["leases"] == [
        {"mac": mac(2), "ip": "198.18.0.100", "expires": clock.now + 600},
        {"mac": mac(1), "ip": "198.18.0.101", "expires": clock.now + 600},
    ]
    assert doc["declined"] == [{"ip": "198.18.0.103", "until": clock.now + 600}]
    assert [p.name for p in path.parent.iterdir()] == ["dhcp-leases.json"]  # no temporary file left

    again = table(clock, path)
    assert again.leases() == t.leases()
    assert again.offer(mac(1)) == ip(101)
    assert again.offer(mac(9)) == ip(102)  # 103 is still declined
    assert again.offer(mac(8)) is None


def test_offers_are_not_persisted(clock, tmp_path):
    path = tmp_path / "leases.json"
    t = table(clock, path)
    t.offer(mac(1))
    assert not path.exists()


def test_leases_outside_a_changed_range_are_dropped(clock, tmp_path):
    path = tmp_path / "leases.json"
    table(clock, path).commit(mac(1), ip(103))
    smaller = LeasePool(start=ip(100), end=ip(101), netmask=IPv4Address("255.255.255.0"))
    assert table(clock, path, smaller).leases() == []


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"version": 2, "leases": []}',
        '{"version": 1, "leases": [{"mac": "52:54:00:00:00:01"}]}',
        '{"version": 1, "leases": [{"mac": "zz", "ip": "198.18.0.100", "expires": 1}]}',
        '{"version": 1, "leases": [{"mac": "52:54:00:00:00:01", "ip": "300.1.1.1", "expires": 1}]}',
        '{"version": 1, "leases": 5}',
        '{"version": 1, "leases": [], "declined": [{"ip": "x", "until": 1}]}',
    ],
)
def test_unreadable_lease_file_stops_with_its_path(clock, tmp_path, text):
    path = tmp_path / "leases.json"
    path.write_text(text)
    with pytest.raises(LeaseStoreError) as info:
        table(clock, path)
    assert info.value.path == path and str(path) in str(info.value)


def test_save_failure_is_logged_and_serving_goes_on(clock, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    t = table(clock, blocker / "leases.json")  # parent is a file: cannot be created
    assert t.commit(mac(1), ip(100)) is not None
    assert "cannot save leases" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"start": ip(10), "end": ip(5)}, "range"),
        ({"start": ip(10), "end": IPv4Address("198.18.1.5")}, "range"),
        ({"netmask": IPv4Address("255.0.255.0")}, "netmask"),
        (
            {"start": IPv4Address("10.0.0.0"), "end": IPv4Address("10.2.0.0"), "netmask": IPv4Address("255.0.0.0")},
            "range",
        ),
        ({"lease_time": 0}, "lease_time"),
    ],
)
def test_bad_pool(kwargs, key):
    values = {"start": ip(100), "end": ip(200), "netmask": IPv4Address("255.255.255.0"), **kwargs}
    with pytest.raises(DhcpSettingsError) as info:
        LeasePool(**values)
    assert info.value.key == key


def test_pool_facts():
    pool = LeasePool(start=ip(100), end=ip(102), netmask=IPv4Address("255.255.255.0"), dns=[ip(1)])  # type: ignore[arg-type]
    assert pool.dns == (ip(1),)
    assert str(pool.network) == "198.18.0.0/24"
    assert list(pool.addresses()) == [ip(100), ip(101), ip(102)]
    assert ip(101) in pool and ip(99) not in pool and "198.18.0.101" not in pool


def test_write_behind_saves_on_flush(tmp_path):
    from ipaddress import IPv4Address

    from provision.dhcp import LeasePool, LeaseTable

    pool = LeasePool(IPv4Address("198.18.0.100"), IPv4Address("198.18.0.110"), IPv4Address("255.255.255.0"))
    path = tmp_path / "leases.json"
    table = LeaseTable(pool, path, write_behind=True)
    ip = table.offer("52:54:00:00:00:01", None)
    assert ip is not None and table.commit("52:54:00:00:00:01", ip) is not None
    assert (table.dirty, path.exists()) == (True, False)  # not written on the answering path
    table.flush(force=True)
    assert (table.dirty, path.exists()) == (False, True)
    again = LeaseTable(pool, path)
    assert [lease.ip for lease in again.leases()] == [ip]
