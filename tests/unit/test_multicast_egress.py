"""The carousel making room for the link's other traffic (provision.multicast.egress) on a fake counter and
clock, and the pacer taking the new rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.multicast.egress import HEADERS, Egress, tx_counter
from provision.multicast.pacing import Pacer

RATE = 5_000_000  # the carousel's bytes/s


class Link:
    """An interface's tx_bytes: the carousel's datagrams (with their headers) and the other traffic."""

    def __init__(self) -> None:
        self.now = 0.0
        self.tx = 0
        self.own = 0
        self.own_datagrams = 0

    def run(self, seconds: float, carousel: float, other: float, egress: Egress) -> int:
        """``seconds`` in 0.1 s steps at those rates (bytes/s); the pace the last step gave."""
        paced = RATE
        for _ in range(round(seconds / 0.1)):
            self.now += 0.1
            datagrams = int(carousel * 0.1 / 1440)
            self.own += datagrams * 1440
            self.own_datagrams += datagrams
            self.tx += datagrams * (1440 + HEADERS) + int(other * 0.1)
            paced = egress.pace(self.own, self.own_datagrams)
        return paced


def egress_on(link: Link) -> Egress:
    return Egress(RATE, lambda: link.tx, clock=lambda: link.now)


def test_alone_on_the_link_it_keeps_its_rate() -> None:
    link = Link()
    egress = egress_on(link)
    assert link.run(3.0, RATE, 0, egress) == RATE
    assert link.run(3.0, RATE, 0.005 * RATE, egress) == RATE  # ARP, keepalives: under 1 %


def test_it_makes_room_for_other_traffic_and_takes_it_back() -> None:
    link = Link()
    egress = egress_on(link)
    link.run(2.0, RATE, 0, egress)
    paced = link.run(2.0, RATE, 1_000_000, egress)  # an agent fetching by HTTP at 1 MB/s
    assert paced == pytest.approx(RATE - 1_000_000, rel=0.02) and egress.other == pytest.approx(1e6, rel=0.02)
    assert link.run(2.0, RATE, 4_000_000, egress) == RATE // 2  # never below half its rate
    assert link.run(2.0, RATE, 0, egress) == RATE  # the window (1 s) past the traffic


def test_after_a_pause_the_traffic_sent_meanwhile_is_forgotten() -> None:
    link = Link()
    egress = egress_on(link)
    link.run(2.0, RATE, 0, egress)
    unasked = Egress(RATE, lambda: 0)  # the carousel paused: nobody reads the counter
    link.run(9.5, 0, 4_000_000, unasked)  # the link busy with HTTP meanwhile
    link.run(0.5, 0, 0, unasked)  # then quiet
    egress.reset()  # the carousel resumes (Sender.resume)
    assert link.run(0.2, RATE, 0, egress) == RATE  # not the pause's 3.8 MB/s spread over the next second


def test_a_counter_that_fails_or_goes_back_leaves_the_rate() -> None:
    def broken() -> int:
        raise OSError("interface gone")

    assert Egress(RATE, broken, clock=lambda: 1.0).pace(0, 0) == RATE
    link = Link()
    egress = egress_on(link)
    link.run(1.0, RATE, 0, egress)
    link.tx = 0  # the interface came back with a fresh counter
    assert link.run(0.1, RATE, 0, egress) == RATE


def test_tx_counter_reads_sysfs_and_says_none_without_it(tmp_path: Path) -> None:
    stats = tmp_path / "br0" / "statistics"
    stats.mkdir(parents=True)
    (stats / "tx_bytes").write_text("1234\n")
    read = tx_counter("br0", tmp_path)
    assert read is not None and read() == 1234
    assert tx_counter("eth9", tmp_path) is None


def test_the_pacer_takes_a_new_rate_with_its_peak() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    pacer = Pacer(1_000_000, clock=lambda: now[0], sleep=sleep)
    pacer.set_rate(500_000)
    assert pacer.rate == 500_000 and pacer.peak == pytest.approx(525_000)
    for _ in range(1000):
        pacer.wait(1000)
    assert now[0] == pytest.approx(999 * 1000 / 500_000)
    with pytest.raises(ValueError, match="positive"):
        pacer.set_rate(0)
