"""A run's fetched bytes over its write passes (provision.agent.report): a pass that failed still counted what it
received (``PassTally``), so a resumed run reports every byte it fetched and wrote (``over_passes``), and its
transfer report the HTTP of every pass after the carousel's (``transfer_report``): what the run's
``fetched_bytes``, /metrics and ``provision report`` count (docs/delta.md)."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from provision.agent.report import (
    HELD_SLACK,
    PassTally,
    WriteReport,
    held_note,
    held_outcome,
    over_passes,
    transfer_report,
)
from provision.wire.carousel import TransferReport
from provision.wire.delta import HeldVersion


def write_report(downloads: int, fetched: int, written: int) -> WriteReport:
    return WriteReport(
        image="educ", digest="a" * 64, target="/dev/sda", target_kind="block", io_mode="O_DIRECT",
        readback="O_DIRECT", disk_size=100, chunk_size=10, chunks=10, holes=0, fetched=downloads,
        skipped=10 - downloads, downloads=downloads, bytes_fetched=fetched, bytes_written=written, wipe="zero",
        wipe_method="BLKZEROOUT",
        wipe_ranges=(), wiped_bytes=0, verified=10, holes_verified=0, failures=(), failure_count=0, seconds=1.0,
        stage_seconds=(),
    )  # fmt: skip


def tally(downloads: int, received: int, written: int) -> PassTally:
    found = PassTally()
    found.add(downloads, received, written)
    return found


def test_a_tally_counts_from_every_worker() -> None:
    found = PassTally()

    def work() -> None:
        for _ in range(1000):
            found.add(1, 7, 10)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert (found.downloads, found.bytes, found.written) == (4000, 28000, 40000)


def test_one_pass_is_its_own_report() -> None:
    report = write_report(3, 30, 30)
    assert over_passes(report, [tally(3, 30, 30)]) is report
    unicast = transfer_report(report, None, [tally(3, 30, 30)])
    assert (unicast.mode, unicast.bytes_http, unicast.chunks_http) == ("unicast", 30, 3)


def test_a_resumed_unicast_run_counts_the_failed_pass_too() -> None:
    first, last = tally(6, 60, 60), tally(4, 40, 40)  # 6 chunks came before the pass failed; the rest after
    report = over_passes(write_report(4, 40, 40), [first, last])
    assert (report.downloads, report.bytes_fetched, report.bytes_written) == (10, 100, 100)
    assert (report.fetched, report.skipped) == (4, 6)  # the verified pass's own: 6 found right
    found = transfer_report(report, None, [first, last])
    assert (found.bytes_http, found.chunks_http) == (100, 10)


def test_a_multicast_run_adds_the_http_of_every_later_pass() -> None:
    carousel = TransferReport("multicast", bytes_multicast=50, bytes_http=5, chunks_multicast=5, chunks_http=1)
    passes = [tally(6, 55, 60), tally(2, 20, 20), tally(2, 20, 20)]  # the carousel's pass, then two by HTTP
    report = over_passes(write_report(2, 20, 20), passes)
    found = transfer_report(report, carousel, passes)
    assert (found.bytes_multicast, found.bytes_http, found.chunks_http) == (50, 45, 5)
    assert transfer_report(report, carousel, passes[:1]) == carousel


def test_the_held_version_is_logged_and_a_changed_disk_or_another_disk_warned(caplog: pytest.LogCaptureFixture) -> None:
    held = HeldVersion("educ", "v1", "b" * 64, "run1", chunks=2, bytes=20, download=18, target="/dev/sda")
    with caplog.at_level(logging.INFO, logger="provision.agent"):
        held_note("52:54:00:de:17:30", "run2", held, Path("/dev/sda"))
        held_outcome("52:54:00:de:17:30", "run2", held, write_report(2, 18, 20))
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="provision.agent"):
        held_note("52:54:00:de:17:30", "run2", held, Path("/dev/nvme0n1"))
        held_outcome("52:54:00:de:17:30", "run2", held, write_report(4, 36, 40))  # 2 more: the first boot's
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "was written to /dev/sda, this run writes /dev/nvme0n1" in warned[0]
    assert "fetched 4 (36 bytes)" in caplog.records[-1].getMessage()
    assert "2 more than predicted, changed on the disk since it was verified" in caplog.records[-1].getMessage()


def test_a_disk_much_changed_since_it_was_verified_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    held = HeldVersion("educ", "v1", "b" * 64, "run1", chunks=0, bytes=0, download=0, target="/dev/sda")
    many = replace(write_report(10, 100, 100), chunks=40, fetched=9 + 1, skipped=30)  # over 8 and over 40 // 10
    with caplog.at_level(logging.INFO, logger="provision.agent"):
        held_outcome("52:54:00:de:17:30", "run2", held, replace(many, fetched=HELD_SLACK))
        held_outcome("52:54:00:de:17:30", "run2", held, many)
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.WARNING]
    assert "much of the disk" in caplog.records[-1].getMessage()
