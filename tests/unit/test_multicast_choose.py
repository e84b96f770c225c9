"""The transfer decision at hello and the group of a version (provision.multicast.choose), and the pacing
arithmetic of the carousel sender (provision.multicast.pacing) on a fake clock."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from provision.config import MulticastConfig, TransferMode
from provision.multicast import choose, group_for, plan_for
from provision.multicast.pacing import Pacer
from provision.multicast.sender import GSO_MAX_BYTES, batches
from provision.wire.carousel import HEADER, MAX_PAYLOAD

DIGEST = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("recipe", "mode", "wanting", "multicast"),
    [
        (None, TransferMode.AUTO, 1, False),
        (None, TransferMode.AUTO, 2, False),
        (None, TransferMode.AUTO, 3, True),
        (None, TransferMode.AUTO, 40, True),
        (None, TransferMode.UNICAST, 40, False),
        (None, TransferMode.MULTICAST, 1, True),
        ("unicast", TransferMode.MULTICAST, 40, False),  # the recipe wins over the config
        ("multicast", TransferMode.UNICAST, 1, True),
        ("auto", TransferMode.UNICAST, 3, True),
    ],
)
def test_choice(recipe: str | None, mode: TransferMode, wanting: int, multicast: bool) -> None:
    choice = choose(recipe, MulticastConfig(transfer=mode), wanting)
    assert choice.multicast is multicast
    assert ("the recipe" if recipe else "the config") in choice.why or choice.why.startswith("auto")


def test_min_agents_is_configurable() -> None:
    assert not choose(None, MulticastConfig(min_agents=5), 4).multicast
    assert choose(None, MulticastConfig(min_agents=5), 5).multicast


def test_group_is_the_digests_and_inside_the_network() -> None:
    network = ipaddress.IPv4Network("239.255.18.0/24")
    groups = {group_for(hashlib.sha256(str(n).encode()).hexdigest(), network) for n in range(1000)}
    assert all(ipaddress.IPv4Address(g) in network for g in groups) and len(groups) > 100
    assert group_for(DIGEST, network) == group_for(DIGEST, network) == str(network[int(DIGEST[:16], 16) % 256])
    assert group_for(DIGEST, ipaddress.IPv4Network("239.1.2.3/32")) == "239.1.2.3"


def test_plan_carries_the_config() -> None:
    config = MulticastConfig(port=9999, rate=50_000_000, keepalive_seconds=7, max_loss=0.1)
    plan = plan_for(DIGEST, 12, config)
    assert (plan.port, plan.rate, plan.keepalive, plan.max_loss, plan.chunks) == (9999, 50_000_000, 7, 0.1, 12)
    assert plan.digest == DIGEST and plan.group.startswith("239.255.18.")


def test_config_refuses_a_unicast_group() -> None:
    with pytest.raises(ValueError, match=r"not inside 224\.0\.0\.0/4"):
        MulticastConfig(group=ipaddress.IPv4Network("198.18.0.0/24"))  # the tests' addresses only


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacing_holds_the_rate_and_the_peak_over_any_window() -> None:
    fake = FakeTime()
    pacer = Pacer(1_000_000, clock=fake.clock, sleep=fake.sleep)  # 1 MB/s, peak 1.05 MB/s, 50 ms bursts
    sent: list[tuple[float, int]] = []
    for _ in range(2000):
        pacer.wait(1440)
        sent.append((fake.now, 1440))
    assert fake.now == pytest.approx(1999 * 1440 / 1_000_000)  # the first goes at once
    for start in range(0, 1900, 50):  # any 10 ms window on time: the rate, plus one datagram
        t0 = sent[start][0]
        inside = sum(n for t, n in sent if t0 <= t < t0 + 0.010)
        assert inside <= 10_000 + 1440
    assert pacer.behind == 0.0


def test_pacing_makes_up_late_wakeups_at_the_peak_rate() -> None:
    """A busy host wakes the sender 30 ms late on every sleep: the rate holds over the run all the same (the
    single 10 ms bucket this replaced kept 38 % of it here), and never goes above the peak."""
    fake = FakeTime()

    def late_sleep(seconds: float) -> None:
        fake.sleep(seconds + 0.030)

    pacer = Pacer(1_000_000, clock=fake.clock, sleep=late_sleep)
    sent: list[tuple[float, int]] = []
    while fake.now < 10.0:
        pacer.wait(1440)
        sent.append((fake.now, 1440))
    total = sum(n for _, n in sent)
    assert total == pytest.approx(10.0 * 1_000_000, rel=0.02)
    assert pacer.behind == 0.0
    for i in range(0, len(sent), 97):
        t0 = sent[i][0]
        inside = sum(n for t, n in sent[i : i + 1000] if t < t0 + 0.5)
        assert inside <= 1_050_000 * (0.5 + 0.050) + 1440


def test_pacing_makes_up_at_most_its_debt() -> None:
    fake = FakeTime()
    pacer = Pacer(1_000_000, clock=fake.clock, sleep=fake.sleep)
    pacer.wait(1000)
    fake.now += 5.0  # a 5 s stall: 1 s of it is made up, 4 s given up
    begin = fake.now
    sent = 0
    while fake.now < begin + 20.0:
        pacer.wait(1000)
        sent += 1000
    assert sent == pytest.approx(21 * 1_000_000, rel=0.002)  # 20 s at the rate + the 1 s of debt (20 s to repay)
    assert pacer.behind == pytest.approx(5.0 - 1.0 - 0.001)
    free = 0
    pacer.wait(1000)
    fake.now += 0.5
    before = len(fake.sleeps)
    while len(fake.sleeps) == before:  # what goes at once after a late wake-up: the peak's burst
        pacer.wait(1000)
        free += 1000
    assert free == pytest.approx(1_050_000 * 0.050, abs=2000)


def test_pacing_delay_arithmetic() -> None:
    pacer = Pacer(100, peak=100)
    assert pacer.delay(50, now=0.0) == 0.0  # the first at once, paid until 0.5
    assert pacer.delay(50, now=0.1) == pytest.approx(0.4)
    assert pacer.delay(10, now=2.0) == pytest.approx(0.0)  # behind since 1.0: 1 s of debt, nothing given up
    assert pacer.behind == 0.0
    pacer.reset()
    assert pacer.delay(10**6, now=3.0) == 0.0
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)
    with pytest.raises(ValueError, match="at least the rate"):
        Pacer(100, peak=50)


def test_gso_batches_fit_a_udp_send() -> None:
    datagrams = [b"x" * (HEADER.size + MAX_PAYLOAD)] * 100 + [b"y" * 100]
    cut = batches(datagrams)
    assert [d for b in cut for d in b] == datagrams
    assert all(sum(map(len, b)) <= GSO_MAX_BYTES for b in cut)
    assert len(cut[0]) == GSO_MAX_BYTES // (HEADER.size + MAX_PAYLOAD) and batches([]) == []
