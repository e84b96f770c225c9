"""The prepared-tree cache of the live environment, with mmdebstrap and the chroot commands faked."""

from __future__ import annotations

import json
import time as time_module
from pathlib import Path

import pytest

from provision.builder.resolve import ArchiveEntry
from provision.builder.runner import Command, RecordingRunner
from provision.live.bootstrap import META, cache_lock, cached_trees, ensure_tree, prune
from provision.live.errors import LiveBuildError
from provision.live.packages import TreeSpec

ARCHIVE = (ArchiveEntry("http://deb.debian.org/debian", "bookworm", ("main",), "/k.gpg"),)


def spec(python_version: str = "3.11.2-1+b1") -> TreeSpec:
    return TreeSpec("bookworm", ARCHIVE, ("python3", "busybox"), (("python3", python_version),), rules="r")


def fake(command: Command) -> str:
    """mmdebstrap leaves a small tree; dpkg-query and busybox --list print what they would."""
    argv = command.argv
    if argv[0] == "mmdebstrap":
        root = Path(argv[argv.index("bookworm") + 1])
        for rel, text in {
            "usr/bin/busybox": "bb",
            "usr/bin/ls": "ls",
            "usr/lib/python3.11/os.py": "",
            "usr/lib/python3.11/__pycache__/turtle.cpython-311.pyc": "",
            "usr/lib/python3/dist-packages/requests/__init__.py": "",
            "usr/share/doc/busybox/changelog.gz": "",
            "usr/share/doc/busybox/copyright": "GPL",
        }.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if argv[0] == "dpkg-query":
        return "python3\t3.11.2-1+b1\tii \nbusybox:amd64\t1:1.35.0-4+b3\tii \nold\t1\trc \n"
    if "--list" in argv:
        return "ls\nudhcpc\ncttyhack\nvi\n"
    return ""


def test_prepare_then_reuse(tmp_path):
    cache = tmp_path / "cache"
    runner = RecordingRunner(fake)
    said: list[str] = []
    tree = ensure_tree(spec(), cache, runner, said.append)
    assert not tree.cached and tree.key == spec().key
    assert tree.root == cache / spec().key[:20] / "tree"
    assert tree.packages == {"busybox": "1:1.35.0-4+b3", "python3": "3.11.2-1+b1"}
    assert tree.python == "3.11"
    assert tree.busybox_links == 3  # ls exists in the tree
    assert sorted(p.name for p in (tree.root / "usr/local/bin").iterdir()) == ["cttyhack", "udhcpc", "vi"]
    assert (tree.root / "usr/local/bin/vi").readlink() == Path("/usr/bin/busybox")
    assert not (tree.root / "usr/share/doc/busybox/changelog.gz").exists()  # stripped
    assert (tree.root / "usr/share/doc/busybox/copyright").is_file()
    assert tree.strip["orphan_pyc"] == 1
    programs = [argv[0] if argv[0] != "chroot" else " ".join(argv[2:5]) for argv in runner.argvs()]
    assert programs == ["mmdebstrap", "dpkg-query", "/usr/bin/busybox --list", "python3 -m compileall"]
    compile_argv = runner.argvs("chroot")[-1]
    assert "--invalidation-mode" in compile_argv and "unchecked-hash" in compile_argv
    assert compile_argv[-2:] == ("/usr/lib/python3.11", "/usr/lib/python3/dist-packages")
    assert json.loads((cache / spec().key[:20] / META).read_text())["key"] == spec().key
    assert not list(cache.glob(".new-*"))
    assert any("preparing with mmdebstrap" in line for line in said)

    again = RecordingRunner(fake)
    reused = ensure_tree(spec(), cache, again)
    assert reused.cached and reused.root == tree.root and reused.packages == tree.packages
    assert again.commands == []


def test_new_versions_prepare_a_new_tree_and_old_ones_are_pruned(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    keys = []
    clock = iter(range(1000, 2000, 10))

    class Clock:  # only the bootstrap module's view of time: creation stamps 1000, 1010, ...
        time = staticmethod(lambda: float(next(clock)))
        monotonic = staticmethod(time_module.monotonic)
        ctime = staticmethod(time_module.ctime)

    monkeypatch.setattr("provision.live.bootstrap.time", Clock)
    for version in ("1", "2", "3"):
        keys.append(ensure_tree(spec(version), cache, RecordingRunner(fake)).key)
    assert len(set(keys)) == 3
    kept = [t.key for t in cached_trees(cache)]
    assert kept == [keys[2], keys[1]]  # newest first, KEEP_TREES = 2


def test_offline_uses_the_newest_tree_of_the_same_request(tmp_path):
    cache = tmp_path / "cache"
    made = ensure_tree(spec(), cache, RecordingRunner(fake))
    offline = TreeSpec("bookworm", ARCHIVE, ("python3", "busybox"), (), rules="r")
    said: list[str] = []
    tree = ensure_tree(offline, cache, RecordingRunner(fake), said.append)
    assert tree.key == made.key and tree.cached
    assert "archive unreachable" in said[0]
    other = TreeSpec("bookworm", ARCHIVE, ("python3",), (), rules="r")
    with pytest.raises(LiveBuildError, match="cannot be reached and no cached tree"):
        ensure_tree(other, cache, RecordingRunner(fake))


def test_a_failed_preparation_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    runner = RecordingRunner(fake, fail_on="dpkg-query", fail_stderr="dpkg-query: broken")
    with pytest.raises(Exception, match="dpkg-query"):
        ensure_tree(spec(), cache, runner)
    assert list(cache.iterdir()) == []
    assert cached_trees(cache) == []


def test_incomplete_entries_and_stale_staging_are_ignored_and_pruned(tmp_path):
    cache = tmp_path / "cache"
    (cache / "deadbeef").mkdir(parents=True)  # no tree.json
    (cache / "broken").mkdir()
    (cache / "broken" / META).write_text("{not json")
    stale = cache / ".new-abc-999999999"
    stale.mkdir()
    assert cached_trees(cache) == []
    prune(cache, keep=2, current=cache / "x")
    assert not stale.exists()


def test_cache_lock_creates_the_folder(tmp_path):
    with cache_lock(tmp_path / "c"):
        assert (tmp_path / "c" / ".lock").is_file()
