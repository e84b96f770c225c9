"""In-place rebuilds of the tiny image for real (root: loop devices, mount, rsync; the package cache).

- a rebuild with a file added, one changed and one removed updates the current version's disk in place: few
  new chunks, e2fsck clean, the removed file's bytes nowhere on the new disk, every free block of the root
  file system reads back zero (dumpe2fs's free ranges read from the disk), the files are the new tree's, the
  ESP and the BIOS boot partition are byte for byte a fresh build's, the provenance names mode and origin;
- ``rebuild_all(fresh=True)`` lays the disk out anew and says so;
- rsync failing mid-update leaves no mount and no loop device, and the build goes on fresh, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from provision.bootfiles import DEFAULT_CACHE, DebCache
from provision.builder import build_image, rebuild_all
from provision.builder.disk import DiskLayout
from provision.builder.inplace import export_previous
from provision.builder.runner import Completed, Runner
from provision.images.store import ImageStore

TOOLS = ("unshare", "sfdisk", "mkfs.fat", "mke2fs", "e2fsck", "mcopy", "grub-mkimage", "apt-get", "rsync", "dumpe2fs")
missing = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or bool(missing) or not Path("/dev/loop-control").exists(),
    reason="in-place rebuilds need root, loop devices and " + (", ".join(missing) or "the tools"),
)

TINY = Path(__file__).resolve().parents[2] / "images" / "tiny.yaml"
CACHE = Path(os.environ.get("PROVISION_DEB_CACHE", DEFAULT_CACHE))
MiB = 1 << 20
LAYOUT = DiskLayout("tiny", 128 * MiB, 64 * MiB)


@pytest.fixture(scope="module")
def cache() -> DebCache:
    return DebCache(CACHE)


def definition(folder: Path, files: dict[str, bytes]) -> Path:
    """images/tiny.yaml with an overlay holding ``files`` (the overlay replaced on each call)."""
    overlay = folder / "overlay"
    shutil.rmtree(overlay, ignore_errors=True)
    for rel, data in files.items():
        path = overlay / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    path = folder / "tiny.yaml"
    path.write_text(TINY.read_text() + "overlays: [overlay]\n")
    return path


def build(path: Path, store: ImageStore, cache: DebCache, tmp: Path, **kwargs):
    return build_image(path, store, cache=cache, workdir=tmp / "work", log_dir=tmp / "logs", **kwargs)


def raw_of(store: ImageStore, ref: str, path: Path) -> Path:
    export_previous(store, store.resolve(ref), path)
    return path


def free_byte_ranges(raw: Path) -> list[tuple[int, int]]:
    """(offset, length) in the raw disk of every free block of the root file system, from its block bitmap."""
    text = subprocess.run(
        ["dumpe2fs", f"{raw}?offset={LAYOUT.root_offset}"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"^Block size:\s+(\d+)", text, re.MULTILINE)
    assert found is not None, text[:500]
    block = int(found.group(1))
    ranges = []
    for line in re.findall(r"^\s+Free blocks: (.+)$", text, re.MULTILINE):
        for item in line.split(", "):
            first, _, last = item.partition("-")
            ranges.append((LAYOUT.root_offset + int(first) * block, (int(last or first) - int(first) + 1) * block))
    return ranges


def mounted_tree(raw: Path, mountpoint: Path):
    mountpoint.mkdir()
    options = f"loop,ro,noload,offset={LAYOUT.root_offset},sizelimit={LAYOUT.root_size}"
    subprocess.run(["mount", "-t", "ext4", "-o", options, str(raw), str(mountpoint)], check=True)
    return mountpoint


def mounts_and_loops(folder: Path) -> list[str]:
    loops = subprocess.run(["losetup", "--all"], capture_output=True, text=True, check=False).stdout
    mounts = Path("/proc/mounts").read_text()
    return [line for line in (loops + mounts).splitlines() if str(folder) in line]


def test_rebuild_in_place_adds_changes_removes(tmp_path, cache):
    store = ImageStore(tmp_path / "store")
    images = tmp_path / "images"
    removed = os.urandom(2 * MiB)
    old = {"srv/keep.bin": os.urandom(3 * MiB), "srv/change.txt": b"first\n" * 1000, "srv/remove.bin": removed}
    first = build(definition(images, old), store, cache, tmp_path)
    assert first.mode == "fresh" and "no current version" in first.mode_reason

    added = os.urandom(1 * MiB)
    new = {"srv/keep.bin": old["srv/keep.bin"], "srv/change.txt": b"second\n" * 1000, "srv/added.bin": added}
    second = build(definition(images, new), store, cache, tmp_path, keep_workdir=True)
    print(f"in place: {second.mode_reason}; chunks {second.chunks}; {second.in_place}")
    assert second.mode == "in_place" and second.rebuilt_from == first.version.ref
    build_record = second.version.index.provenance["build"]
    assert build_record["mode"] == "in_place" and build_record["rebuilt_from"] == first.version.ref
    assert build_record["generation"] == 1 and build_record["reason"].startswith("in place")
    assert second.version.index.provenance["layout"]["disk_size"] == 128 * MiB
    change_bytes = len(added) + len(new["srv/change.txt"])
    assert second.chunks.new <= change_bytes // (4 * MiB) + 4, second.chunks
    log_text = second.log.read_text()
    assert (
        "mode in place: the layout is unchanged" in log_text
        and "provision.builder.mounted" in log_text
        and "free blocks:" in log_text
    )

    raw = raw_of(store, second.version.ref, tmp_path / "second.raw")
    subprocess.run(["e2fsck", "-f", "-n", f"{raw}?offset={LAYOUT.root_offset}"], check=True, capture_output=True)
    data = raw.read_bytes()
    assert data.find(removed[:4096]) < 0 and data.find(removed[-4096:]) < 0  # the removed file's bytes are gone
    stale = [(at, n) for at, n in free_byte_ranges(raw) if data[at : at + n].count(0) != n]
    assert stale == [], f"free blocks holding data: {stale[:5]}"

    work = next(p for p in (tmp_path / "work").iterdir() if p.is_dir())
    with_mount = mounted_tree(raw, tmp_path / "mnt")
    try:
        assert (with_mount / "srv/added.bin").read_bytes() == added
        assert (with_mount / "srv/change.txt").read_bytes() == new["srv/change.txt"]
        assert not (with_mount / "srv/remove.bin").exists()
        differences = subprocess.run(
            ["rsync", "-aHAXn", "--checksum", "--delete", "--numeric-ids", "--itemize-changes",
             "--exclude=/lost+found", f"{work / 'root'}/", f"{with_mount}/"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert [line for line in differences.splitlines() if not line.startswith(".d..t")] == []
    finally:
        subprocess.run(["umount", str(with_mount)], check=True)

    (fresh,) = rebuild_all(
        images, store, cache=cache, workdir=tmp_path / "work", log_dir=tmp_path / "logs", force=True, fresh=True
    )
    assert (fresh.status, fresh.mode, fresh.mode_reason) == ("built", "fresh", "fresh: requested")
    assert fresh.version is not None and fresh.chunks is not None
    assert store.resolve(fresh.version).index.provenance["build"]["rebuilt_from"] == second.version.ref
    fresh_raw = raw_of(store, fresh.version, tmp_path / "fresh.raw").read_bytes()
    assert data[: LAYOUT.root_offset] == fresh_raw[: LAYOUT.root_offset]  # MBR, GPT, BIOS boot, ESP
    assert data[-MiB:] == fresh_raw[-MiB:]  # the backup GPT
    print(f"fresh build of the same tree: {fresh.chunks.new} new chunks; in place: {second.chunks.new}")
    assert mounts_and_loops(tmp_path) == []


class FailingRsync(Runner):
    """Runs every command, but the in-place update's rsync is ``false``: it fails with the file system mounted."""

    def run(self, step: str, argv: Sequence[str], **kwargs: Any) -> Completed:
        return super().run(step, [("--rsync=false" if a == "--rsync=rsync" else a) for a in argv], **kwargs)


def test_rsync_failure_unmounts_and_the_build_is_laid_out_fresh(tmp_path, cache):
    """A failed in-place update (rsync failing with the file system mounted) leaves no mount and no loop device,
    and the build goes on fresh, saying why: a nightly rebuild does not fail the same way every night."""
    store = ImageStore(tmp_path / "store")
    images = tmp_path / "images"
    first = build(definition(images, {"a.txt": b"a"}), store, cache, tmp_path)
    second = build(definition(images, {"b.txt": b"b"}), store, cache, tmp_path, runner=FailingRsync())
    assert second.mode == "fresh" and second.mode_reason.startswith("fresh: the in-place update failed ("), second
    assert "step filesystems: unshare failed with exit code 1" in second.mode_reason, second.mode_reason
    assert mounts_and_loops(tmp_path) == []
    current = store.current("tiny")
    assert current is not None and current.digest != first.version.digest
    assert current.index.provenance["build"]["mode"] == "fresh"
    assert "mode fresh: the in-place update failed" in Path(second.log).read_text()
