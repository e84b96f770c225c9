"""The zstd initramfs of the live environment (the cpio writer: test_initramfs_cpio.py); live.json."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
import zstandard

from provision.live.manifest import (
    LIVE_JSON,
    SIZE_GOAL,
    FileInfo,
    LiveManifest,
    output_intact,
    read_manifest,
    write_manifest,
)
from provision.live.pack import Item, pack_initrd, write_atomic
from tests.support.initramfs import newc_entries
from tests.support.live import live_manifest


def _tree(root: Path) -> None:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "lib" / "firmware").mkdir(parents=True)
    (root / "root").mkdir(mode=0o755)
    (root / "etc").mkdir()
    (root / "usr" / "bin" / "gzip").write_bytes(b"#!/bin/sh\ngzip\n")
    os.link(root / "usr" / "bin" / "gzip", root / "usr" / "bin" / "gunzip")
    os.link(root / "usr" / "bin" / "gzip", root / "usr" / "bin" / "uncompress")
    (root / "usr" / "bin" / "tool").write_bytes(b"\x7fELF tool")
    (root / "usr" / "bin" / "tool").chmod(0o4755)
    (root / "usr" / "lib" / "firmware" / "big.bin").write_bytes(b"x" * 1000)
    (root / "etc" / "hostname").write_text("debian\n")
    (root / "bin").symlink_to("usr/bin")
    (root / "usr" / "share").symlink_to("/nonexistent/elsewhere")  # a dangling link is kept as a link


def test_pack_tree_with_items_hardlinks_modes_and_exclusions(tmp_path):
    root = tmp_path / "tree"
    _tree(root)
    source = tmp_path / "module.ko"
    source.write_bytes(b"\x7fELF module")
    items = {
        "root": Item("dir", 0o700),  # replaces the tree folder's mode, in the tree's place
        "root/.ssh": Item("dir", 0o700),
        "root/.ssh/authorized_keys": Item.text("ssh-ed25519 AAAA test\n", 0o600),
        "etc/hostname": Item.text("provision-live\n"),  # wins over the tree's file
        "usr/lib/modules/6.1/kernel/x.ko": Item.copy(source, 0o644),
        "usr/lib/firmware/rtl_nic/a.fw": Item("file", 0o644, b"fw"),
        "dev/console": Item("char", 0o600, rdev=(5, 1)),
    }
    out = tmp_path / "out" / "initrd.img"
    stats = pack_initrd(out, root, items, exclude=lambda rel: rel.startswith("usr/lib/firmware/"), level=3)
    data = zstandard.ZstdDecompressor().decompressobj().decompress(out.read_bytes())
    found = newc_entries(data)
    assert stats.uncompressed == len(data) and stats.compressed == out.stat().st_size
    assert stats.added == 6 and stats.entries == len(found)
    names = list(found)
    assert names.index("root") < names.index("root/.ssh") < names.index("root/.ssh/authorized_keys")
    assert found["root"][0] == stat.S_IFDIR | 0o700
    assert found["root/.ssh/authorized_keys"][0] == stat.S_IFREG | 0o600
    assert found["etc/hostname"][3] == b"provision-live\n"
    assert "usr/lib/firmware/big.bin" not in found and found["usr/lib/firmware/rtl_nic/a.fw"][3] == b"fw"
    assert found["usr/lib/modules/6.1/kernel/x.ko"][3] == b"\x7fELF module"
    assert found["usr/bin/tool"][0] == stat.S_IFREG | 0o4755
    assert found["bin"][3] == b"usr/bin" and found["usr/share"][3] == b"/nonexistent/elsewhere"
    assert found["dev/console"][4] == (5, 1)
    # hard links: one inode, link count 3, the data with the last name only (GNU cpio's newc convention)
    links = [found[f"usr/bin/{n}"] for n in ("gunzip", "gzip", "uncompress")]
    assert len({ino for _, ino, _, _, _ in links}) == 1 and {nlink for _, _, nlink, _, _ in links} == {3}
    assert [body for *_, body, _ in links] == [b"", b"", b"#!/bin/sh\ngzip\n"]
    others = [ino for name, (_, ino, *_) in found.items() if name not in ("usr/bin/gzip", "usr/bin/gunzip")]
    assert others.count(links[0][1]) == 1  # uncompress only: no other entry shares the inode


def test_pack_refuses_to_turn_a_folder_into_a_file(tmp_path):
    root = tmp_path / "tree"
    _tree(root)
    with pytest.raises(ValueError, match="replace a folder"):
        pack_initrd(tmp_path / "x.img", root, {"etc": Item.text("no")}, level=1)
    assert not (tmp_path / "x.img").exists() and not (tmp_path / ".x.img.tmp").exists()


def test_write_atomic_bytes_and_file(tmp_path):
    target = tmp_path / "a" / "vmlinuz"
    write_atomic(target, b"kernel")
    assert target.read_bytes() == b"kernel" and stat.S_IMODE(target.stat().st_mode) == 0o644
    with io.BytesIO(b"k2" * 1000) as handle:
        write_atomic(target, handle)
    assert target.read_bytes() == b"k2" * 1000
    assert [p.name for p in target.parent.iterdir()] == ["vmlinuz"]


# ------------------------------------------------------------------------------------------- live.json
def test_manifest_round_trip_and_fields(tmp_path):
    m = live_manifest(tmp_path)
    path = write_manifest(tmp_path, m)
    assert path == tmp_path / LIVE_JSON
    data = json.loads(path.read_text())
    assert data["kernel"]["release"] == "6.1.0-99-amd64"
    assert data["files"]["vmlinuz"] == {"size": 100, "sha256": m.vmlinuz.sha256}
    assert data["files"]["initrd.img"]["compression"] == "zstd-19"
    assert data["total_size"] == 400 and data["size_goal"] == SIZE_GOAL and data["within_goal"] is True
    assert data["modules"] == {"count": 2, "names": ["ahci", "r8169"]}
    assert data["agent"]["sha256"] == "cd" * 32 and data["build_seconds"] == 12.3
    assert list(data["packages"]) == ["busybox", "python3"]
    again = read_manifest(tmp_path)
    assert again is not None
    assert again.to_dict() | {"built": ""} == m.to_dict() | {"built": ""}


def test_read_manifest_absent_broken_or_other_format(tmp_path):
    assert read_manifest(tmp_path) is None
    (tmp_path / LIVE_JSON).write_text("{broken")
    assert read_manifest(tmp_path) is None
    (tmp_path / LIVE_JSON).write_text('{"format": 99}')
    assert read_manifest(tmp_path) is None
    (tmp_path / LIVE_JSON).write_text('{"format": 1, "files": {}}')
    assert read_manifest(tmp_path) is None


def test_output_intact_notices_a_changed_file(tmp_path):
    m = live_manifest(tmp_path)
    assert output_intact(tmp_path, m)
    (tmp_path / "initrd.img").write_bytes(b"j" * 300)  # same size, other content
    assert not output_intact(tmp_path, m)
    (tmp_path / "initrd.img").unlink()
    assert not output_intact(tmp_path, m)


def test_size_goal(tmp_path):
    m = live_manifest(tmp_path)
    big = LiveManifest(**{**m.__dict__, "initrd": FileInfo(SIZE_GOAL, "00" * 32)})
    assert not big.within_goal and big.total_size == SIZE_GOAL + 100


# ------------------------------------------------------------------------------------------- reuse of builds
def test_reuse_the_output_or_a_kept_build(tmp_path):
    from provision.live.build import BUILDS, _keep_build, _reuse

    built = tmp_path / "built"
    built.mkdir()
    m = live_manifest(built)
    write_manifest(built, m)
    cache = tmp_path / "cache"
    said: list[str] = []
    reused = _reuse(built, m.inputs, cache, said.append)  # the output itself
    assert reused is not None and reused.inputs == m.inputs and "up to date" in said[-1]
    assert _reuse(built, "other" * 8, cache, said.append) is None
    _keep_build(built, m, cache)
    kept = cache / BUILDS / m.inputs[:20]
    assert (kept / "initrd.img").read_bytes() == (built / "initrd.img").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    again = _reuse(elsewhere, m.inputs, cache, said.append)
    assert again is not None and output_intact(elsewhere, m) and (elsewhere / LIVE_JSON).is_file()
    assert "copied the identical build" in said[-1]
    (kept / "initrd.img").unlink()
    (kept / "initrd.img").write_bytes(b"x" * 300)  # damaged: not reused
    assert _reuse(tmp_path / "third", m.inputs, cache, said.append) is None


def test_only_the_newest_kept_builds_stay(tmp_path):
    from provision.live.build import BUILDS, KEEP_BUILDS, _keep_build

    built = tmp_path / "built"
    built.mkdir()
    base = live_manifest(built)
    for number in range(KEEP_BUILDS + 2):
        m = LiveManifest(**{**base.__dict__, "inputs": f"{number:02d}" * 32})
        _keep_build(built, m, tmp_path / "cache")
        os.utime(tmp_path / "cache" / BUILDS / m.inputs[:20], (1000 + number, 1000 + number))
    left = sorted(p.name for p in (tmp_path / "cache" / BUILDS).iterdir())
    assert len(left) == KEEP_BUILDS and left[0].startswith("02")
