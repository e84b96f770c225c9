"""``provision image diff``'s comparisons on value objects: chunks by position and partition, packages,
files; and its plain-text rendering."""

from __future__ import annotations

import io
from typing import Any

from provision.cli.imagediff import write_text
from provision.images.diff import (
    OUTSIDE,
    FileEntry,
    PartCount,
    chunk_diff,
    file_diff,
    package_diff,
    recorded_packages,
    version_diff,
)
from provision.images.index import ChunkRef, ImageIndex, ImageVersion
from provision.images.partitions import Partition, PartitionTable

MiB = 1 << 20
SHA = {c: c * 64 for c in "abcdefgh"}


def index(chunks: list[str | None], *, chunk_size: int = MiB, provenance: dict[str, Any] | None = None) -> ImageIndex:
    """A disk of len(chunks) MiB: GPT, partition 1 "esp" at 1-2 MiB, partition 2 "root" at 2 MiB to the end
    minus 1 MiB (sectors of 512 bytes)."""
    size = len(chunks) * MiB
    layout = PartitionTable(
        "gpt",
        "id",
        512,
        (Partition(1, 2048, 2048, "C12A7328", "esp"), Partition(2, 4096, (size - 3 * MiB) // 512, "4F68BCE3", "root")),
    )
    refs = tuple(ChunkRef(None if c is None else SHA[c], MiB) for c in chunks)
    return ImageIndex("img", "2026-12-07T00:00:00Z", size, 512, chunk_size, layout, refs, provenance or {})


def version(ix: ImageIndex, digest: str) -> ImageVersion:
    return ImageVersion("img", digest * 64, ix)


def test_identical_chunk_lists_are_the_same_content():
    d = chunk_diff(index(["a", None, "b", "c", None]), index(["a", None, "b", "c", None]))
    assert d.same_content and d.differ == 0 and d.new_chunks == 0 and d.by_partition == {}


def test_differing_positions_are_placed_in_the_partitions_they_overlap():
    # chunk 0: the partition tables (outside), 1: esp, 2-3: root, 4: root then the backup GPT (outside)
    a = index(["a", "b", "c", "d", None, None])
    b = index(["e", "f", "c", "g", "h", None])
    d = chunk_diff(a, b)
    assert not d.same_content and d.comparable
    assert (d.differ, d.differ_bytes) == (4, 4 * MiB)
    assert d.by_partition == {"1 esp": PartCount(1, MiB), "2 root": PartCount(2, 2 * MiB), OUTSIDE: PartCount(1, MiB)}
    assert (d.new_chunks, d.new_bytes) == (4, 4 * MiB)  # e f g h: none of them held by A


def test_a_chunk_moved_elsewhere_differs_in_place_but_is_not_new():
    d = chunk_diff(index(["a", "b", "c", "d"]), index(["a", "c", "b", "d"]))
    assert d.differ == 2 and d.new_chunks == 0
    # a PC holding A still fetches both moved chunks (the agent checks each offset), as the delta run predicts
    assert d.delta is not None and (d.delta.chunks, d.delta.bytes) == (2, 2 * MiB)


def test_the_delta_download_counts_the_stored_frames_of_distinct_chunks():
    sizes = {SHA[c]: 1000 for c in "abcdef"}
    d = chunk_diff(index(["a", "b", "c", "d"]), index(["a", "e", "e", "d"]), sizes)
    assert d.delta is not None and (d.delta.chunks, d.delta.download, d.delta.total_download) == (2, 1000, 3000)
    assert d.to_dict()["delta"]["share"] == round(1 / 3, 4)


def test_a_longer_disk_counts_the_extra_positions():
    d = chunk_diff(index(["a", "b", "c", "d"]), index(["a", "b", "c", "d", "e", "f"]))
    assert d.differ == 2 and (d.chunks_a, d.chunks_b) == (4, 6) and not d.same_content


def test_other_chunk_sizes_are_not_compared_by_position():
    d = chunk_diff(index(["a", "b", "c", "d"]), index(["a", "b", "c", "d"], chunk_size=2 * MiB))
    assert not d.comparable and d.differ == 0 and not d.same_content and d.new_chunks == 0


def test_packages_added_removed_upgraded():
    d = package_diff({"bash": "5.2-1", "curl": "7.88", "old": "1"}, {"bash": "5.2-2", "curl": "7.88", "hello": "2.10"})
    assert d.added == {"hello": "2.10"}
    assert d.removed == {"old": "1"}
    assert d.upgraded == {"bash": ("5.2-1", "5.2-2")}
    assert d.unchanged == 1
    assert d.to_dict()["upgraded"] == {"bash": {"from": "5.2-1", "to": "5.2-2"}}


def test_recorded_packages_prefers_the_installed_list():
    assert recorded_packages({"packages": {"a": "1"}, "resolved": {"a": "0"}}) == {"a": "1"}
    assert recorded_packages({"resolved": {"a": "0"}}) == {"a": "0"}
    assert recorded_packages({"source": {"file": "x.raw"}}) is None  # imported by hand


def entry(kind: str = "file", size: int = 3, digest: str = "x", mode: int = 0o644, uid: int = 0) -> FileEntry:
    return FileEntry(kind, mode, uid, 0, size, digest)


def test_files_added_removed_and_changed_with_what_changed():
    a = {
        "/etc": entry("dir", 4096, ""),
        "/etc/hostname": entry(size=4, digest="h1"),
        "/etc/old": entry(),
        "/bin/sh": entry("link", 4, "dash"),
        "/srv": entry("dir", 4096, ""),
        "/run": entry(),
        "/same": entry(),
    }
    b = {
        "/etc": entry("dir", 12288, ""),  # a folder's size is the file system's: not a change
        "/etc/hostname": entry(size=5, digest="h2", mode=0o600),
        "/etc/new": entry(size=9),
        "/bin/sh": entry("link", 4, "bash"),
        "/srv": entry("dir", 4096, "", uid=1000),
        "/run": entry("dir", 4096, ""),
        "/same": entry(),
    }
    d = file_diff(a, b, partition="2 root")
    assert list(d.added) == ["/etc/new"] and list(d.removed) == ["/etc/old"]
    changed = {c.path: c.what for c in d.changed}
    assert changed == {
        "/bin/sh": ("target",),
        "/etc/hostname": ("content", "mode"),
        "/run": ("kind",),
        "/srv": ("owner",),
    }
    assert d.unchanged == 2
    assert d.to_dict()["added"] == {"/etc/new": {"kind": "file", "size": 9}}


def test_version_diff_and_its_text():
    pa = {"packages": {"bash": "5.2-1"}, "source": {"sha256": "1" * 64}}
    pb = {"packages": {"bash": "5.2-2", "hello": "2.10"}, "source": {"sha256": "2" * 64}}
    a = version(index(["a", "b", "c", "d"], provenance=pa), "1")
    b = version(index(["a", "b", "e", "d"], provenance=pb), "2")
    files = file_diff({}, {"/usr/bin/hello": entry(size=30 * 1024), "/usr/share/doc/hello": entry("dir", 4096, "")})
    d = version_diff(a, b, files)
    data = d.to_dict()
    assert data["b"]["disk_sha256"] == "2" * 64 and data["same_content"] is False
    out = io.StringIO()
    write_text(data, out, limit=50)
    text = out.getvalue()
    assert "chunks: 1 of 4 positions differ (1.0 MiB)" in text
    assert "2 root" in text and "B has 1 chunk A does not hold (1.0 MiB new in the store)" in text
    assert "a PC holding A fetches 1 chunk for B (1.0 MiB to download, 25.0% of B's 4.0 MiB)" in text
    assert "packages: 1 added, 0 removed, 1 upgraded, 0 unchanged" in text
    assert "  + hello 2.10\n" in text and "  ~ bash 5.2-1 -> 5.2-2\n" in text
    assert "  + /usr/bin/hello  30.0 KiB\n" in text and "  + /usr/share/doc/hello/\n" in text
    short = io.StringIO()
    write_text(data, short, limit=1)
    assert "... and 1 more (--limit 0 shows all)" in short.getvalue()


def test_same_content_and_no_packages_said_in_plain_words():
    a = version(index(["a", "b"]), "1")
    b = version(index(["a", "b"]), "2")
    out = io.StringIO()
    write_text(version_diff(a, b, None, "not compared (--no-files)").to_dict(), out, limit=50)
    text = out.getvalue()
    assert "same content: the two disks are identical, bit for bit (2 chunks)" in text
    assert "packages: not recorded by one of the versions" in text
    assert "files: not compared (--no-files)" in text
