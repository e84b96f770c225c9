"""``mode.decide``: in place or fresh, every reason; the parsers of e2fsck's summary and dumpe2fs's free ranges;
the tree's times clamped, holes punched."""

from __future__ import annotations

import dataclasses
import os

import pytest

from provision.builder.disk import DiskLayout
from provision.builder.inplace import free_ranges, punch, unable
from provision.builder.mode import (
    FRAGMENTED_PERCENT,
    MAX_GENERATIONS,
    FsFigures,
    LayoutRecord,
    Previous,
    Request,
    decide,
    layout_record,
    parse_e2fsck_summary,
)
from provision.builder.reproducible import clamp_tree
from provision.builder.runner import RecordingRunner

MiB = 1 << 20
GiB = 1 << 30
LAYOUT = layout_record(DiskLayout("educ", 4 * GiB, 64 * MiB), 4 * MiB, 1)
CLEAN = FsFigures(clean=True, files=60000, noncontiguous_percent=0.4, blocks_used=600_000, blocks_total=1_000_000)


def request(**changes: object) -> Request:
    base = Request(
        planned=LAYOUT,
        auto_free_space=None,
        content_bytes=2 * GiB,
        previous=Previous("educ@20261201-000000-aaaaaaaaaaaa", LAYOUT, 0),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_unchanged_layout_is_in_place_with_the_current_size_and_next_generation():
    decision = decide(request(fs=CLEAN))
    assert decision.mode == "in_place"
    assert decision.rebuilt_from == "educ@20261201-000000-aaaaaaaaaaaa"
    assert (decision.generation, decision.disk_size) == (1, 4 * GiB)
    assert decision.reason.startswith("in place: the layout is unchanged")
    assert decide(request()).mode == "in_place"  # before the current disk's figures are known


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"fresh_requested": True}, "fresh: requested"),
        ({"previous": None}, "fresh: there is no current version to start from"),
        ({"previous": Previous("educ@x", None, 0)}, "has no layout record"),
        ({"unable": "they need root (mount, loop devices)"}, "cannot run here: they need root"),
        ({"planned": dataclasses.replace(LAYOUT, disk_size=6 * GiB)}, "disk size changed from 4096 to 6144 MiB"),
        ({"planned": dataclasses.replace(LAYOUT, esp_size=128 * MiB)}, "the ESP size changed"),
        ({"planned": dataclasses.replace(LAYOUT, chunk_size=MiB)}, "the chunk size changed"),
        ({"planned": dataclasses.replace(LAYOUT, root_fs="other")}, "the root file system's options changed"),
        ({"planned": dataclasses.replace(LAYOUT, identifiers="other")}, "the image's identifiers changed"),
        ({"planned": dataclasses.replace(LAYOUT, builder_version=2)}, "the builder version (1 -> 2) changed"),
        ({"previous": Previous("educ@x", LAYOUT, MAX_GENERATIONS)}, f"{MAX_GENERATIONS} in-place rebuilds since"),
        ({"fs": dataclasses.replace(CLEAN, clean=False)}, "does not pass e2fsck -f -n"),
        ({"fs": dataclasses.replace(CLEAN, noncontiguous_percent=FRAGMENTED_PERCENT + 1)}, "are fragmented"),
        ({"fs": CLEAN, "content_bytes": int(3.5 * GiB)}, "would fill 92 % of the root file system"),
    ],
)
def test_each_reason_for_a_fresh_layout(changes, reason):
    decision = decide(request(**changes))
    assert decision.mode == "fresh"
    assert decision.reason.startswith("fresh: ") and reason in decision.reason
    assert decision.disk_size == request(**changes).planned.disk_size
    assert decision.generation == 0


def test_the_first_reason_wins():
    decision = decide(request(fresh_requested=True, previous=None, unable="no root"))
    assert decision.reason == "fresh: requested"


def test_auto_size_keeps_the_current_size_while_half_the_free_space_is_left():
    def planned(size: int) -> LayoutRecord:
        return dataclasses.replace(LAYOUT, disk_size=size)

    for size in (3 * GiB, 4 * GiB, 4 * GiB + 512 * MiB):  # smaller, the same, 512 MiB of the 1 GiB eaten
        decision = decide(request(auto_free_space=GiB, planned=planned(size)))
        assert (decision.mode, decision.disk_size) == ("in_place", 4 * GiB), size
    grown = decide(request(auto_free_space=GiB, planned=planned(4 * GiB + 576 * MiB)))
    assert grown.mode == "fresh" and grown.disk_size == 4 * GiB + 576 * MiB
    assert (
        "needs a 4672 MiB disk with its free space: the current 4096 MiB would leave it less than half of 1024 MiB"
        in grown.reason
    )
    shrunk = decide(request(auto_free_space=GiB, planned=planned(GiB)))
    assert shrunk.mode == "fresh" and "under half the current 4096 MiB" in shrunk.reason
    fixed = decide(request(planned=planned(4 * GiB + 64 * MiB)))
    assert fixed.mode == "fresh" and "disk size changed from 4096 to 4160 MiB" in fixed.reason


def test_layout_record_round_trip_and_bad_records():
    assert LayoutRecord.from_dict(LAYOUT.to_dict()) == LAYOUT
    assert LayoutRecord.from_dict(None) is None
    assert LayoutRecord.from_dict({**LAYOUT.to_dict(), "disk_size": "4G"}) is None
    assert LayoutRecord.from_dict({**LAYOUT.to_dict(), "esp_size": True}) is None
    assert LayoutRecord.from_dict({k: v for k, v in LAYOUT.to_dict().items() if k != "root_fs"}) is None
    previous = Previous.of("educ@x", {"layout": LAYOUT.to_dict(), "build": {"mode": "in_place", "generation": 3}})
    assert (previous.layout, previous.generation) == (LAYOUT, 3)
    assert Previous.of("educ@x", {"build": {"generation": "3"}}).generation == 0
    assert LAYOUT.identifiers.startswith("disk ") and "root " in LAYOUT.identifiers


def test_e2fsck_summary():
    text = "Pass 5: Checking group summary information\nroot: 11/16384 files (2.5% non-contiguous), 5764/65536 blocks\n"
    figures = parse_e2fsck_summary(text, clean=True, block_size=1024)
    assert figures == FsFigures(True, 11, 2.5, 5764, 65536, 1024)
    assert parse_e2fsck_summary("e2fsck: Bad magic number in super-block", clean=False) is None


def test_free_ranges_of_dumpe2fs():
    text = (
        "Group 0: (Blocks 0-32767) csum 0x205b [ITABLE_ZEROED]\n"
        "  Free blocks: 2127-32767\n  Free inodes: 12-8192\n"
        "Group 1: (Blocks 32768-65535) csum 0x48c7 [INODE_UNINIT, BLOCK_UNINIT]\n"
        "  Free blocks: 32833-32900, 33000, 40000-40001\n"
        "Group 2: (Blocks 65536-98303)\n  Free blocks: \n"
    )
    assert free_ranges(text) == [(2127, 30641), (32833, 68), (33000, 1), (40000, 2)]


def test_a_recording_runner_cannot_rebuild_in_place():
    assert unable(RecordingRunner()) == "the build's runner runs no commands"


def test_clamp_times_to_the_epoch_in_whole_seconds(tmp_path):
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    new, old = tree / "etc" / "new", tree / "etc" / "old"
    new.write_text("made during the build")
    old.write_text("from a package")
    (tree / "etc" / "link").symlink_to("new")
    os.utime(old, ns=(1_000_000_000_123, 1_000_000_000_123))
    epoch = 1_500_000_000  # 2017: before now, after the package file's time
    assert clamp_tree(tree, epoch) == 4  # new, link, etc and the root: made now
    assert os.lstat(new).st_mtime_ns == epoch * 10**9 == os.lstat(tree / "etc" / "link").st_mtime_ns
    assert os.lstat(old).st_mtime_ns == 1_000_000_000_000 == os.lstat(old).st_atime_ns
    assert clamp_tree(tree, epoch) == 0
    assert os.lstat(tree).st_mtime_ns == epoch * 10**9


def test_punch_makes_a_range_read_zero(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(b"\xaa" * (64 << 10))
    fd = os.open(path, os.O_RDWR)
    try:
        punch(fd, 4096, 8192)
        punch(fd, 20000, 100)  # not block aligned: zeroed all the same
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[4096:12288] == bytes(8192) and data[20000:20100] == bytes(100)
    assert data[:4096] == b"\xaa" * 4096 and data[12288:20000] == b"\xaa" * 7712 and len(data) == 64 << 10
