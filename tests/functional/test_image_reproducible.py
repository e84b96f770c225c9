"""Reproducible images and ``provision image diff``, for real.

- the tiny image built twice fresh, in two stores with separate work folders, gives the same disk bit for bit
  (same sha256 of the raw disk, same chunk list), and ``image diff`` says so (the version digests differ:
  they name the creation time and the build's provenance too);
- a tiny with ``hello`` against the plain one: ``image diff`` names the package, its files and the chunks,
  as text and as JSON;
- two disks imported by hand (tests/support/images.make_disk, no file system): the chunk part alone, every
  differing position in its partition; an unknown version is an error in plain words.

The tiny builds need root, the build tools and the Debian package cache (like tests/functional/
test_image_build.py); the imported disks need nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provision.bootfiles import DEFAULT_CACHE, DebCache
from provision.builder import build_image
from provision.images.errors import ImageError
from provision.images.rootfiles import dump_tree
from provision.images.store import ImageStore
from tests.support.cli import run
from tests.support.images import MiB, make_disk

TOOLS = ("sfdisk", "mkfs.fat", "mke2fs", "e2fsck", "mcopy", "grub-mkimage", "dumpe2fs", "debugfs", "apt-get")
missing = [tool for tool in TOOLS if shutil.which(tool) is None]
needs_builder = pytest.mark.skipif(
    os.geteuid() != 0 or bool(missing),
    reason="image builds need root and " + (", ".join(missing) or "the tools") + " (e2fsprogs dosfstools mtools ...)",
)
TINY = Path(__file__).resolve().parents[2] / "images" / "tiny.yaml"
CACHE = Path(os.environ.get("PROVISION_DEB_CACHE", DEFAULT_CACHE))


def tiny(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(TINY.read_text().replace("extra_debs: []\n", extra))
    return path


def build(definition: Path, store: ImageStore, tmp: Path):
    return build_image(definition, store, cache=DebCache(CACHE), workdir=tmp / "work", log_dir=tmp / "logs", fresh=True)


@needs_builder
def test_tiny_built_twice_fresh_is_the_same_disk_and_diff_names_a_package(tmp_path):
    definition = tiny(tmp_path / "images")
    first = build(definition, ImageStore(tmp_path / "a"), tmp_path / "ba")
    store = ImageStore(tmp_path / "b")
    second = build(definition, store, tmp_path / "bb")
    a, b = first.version.index, second.version.index
    assert first.inputs_digest == second.inputs_digest
    assert a.provenance["source"]["sha256"] == b.provenance["source"]["sha256"]  # the raw disks, bit for bit
    assert a.chunks == b.chunks
    assert first.version.digest != second.version.digest  # created, build time and log differ

    with_hello = build(tiny(tmp_path / "hello", "extra_debs: [hello]\n"), store, tmp_path / "bh")
    code, text, err = run("image", "diff", second.version.ref, "tiny", "--store", str(store.root), "--limit", "0")
    assert code == 0, err
    assert f"A  {second.version.ref}" in text and f"B  {with_hello.version.ref}" in text
    assert "packages: 1 added, 0 removed, 0 upgraded" in text and "  + hello " in text
    assert "  + /usr/bin/hello  " in text and "  + /usr/share/doc/hello/\n" in text
    assert "files (partition 3 root): " in text and " 0 removed, " in text
    assert "  ~ /etc/provision/image.env " in text  # the label names the inputs
    assert "3 root" in text.split("packages:")[0]
    code, data, err = run(
        "image", "diff", second.version.ref, with_hello.version.ref, "--store", str(store.root), "--json"
    )
    assert code == 0, err
    d = json.loads(data)
    assert d["same_content"] is False and d["packages"]["added"] == {"hello": with_hello.packages["hello"]}
    assert d["files"]["added"]["/usr/bin/hello"]["kind"] == "file"
    assert 0 < d["chunks"]["new_chunks"] <= d["chunks"]["differ"] < len(b.chunks)

    code, same, err = run("image", "diff", second.version.ref, second.version.ref, "--store", str(store.root))
    assert code == 0, err
    assert "same content: the two disks are identical, bit for bit" in same
    assert "files (partition 3 root): 0 added, 0 removed, 0 changed" in same


def test_imported_disks_diff_by_chunk_and_partition_and_unknown_versions(tmp_path):
    store = ImageStore(tmp_path / "store")
    size = 16 * MiB
    # GPT, ESP at 1-2 MiB, root from 2 MiB to the end (less 1 MiB); 4 MiB chunks: 0 holds the GPT and the
    # ESP, 1-2 the root only, 3 the end of the root and the backup GPT
    one = make_disk(tmp_path / "one.raw", size, [(1 * MiB, 4096), (5 * MiB, 4096), (9 * MiB, 4096)], seed=1)
    two = make_disk(tmp_path / "two.raw", size, [(1 * MiB, 4096), (5 * MiB, 4096), (9 * MiB, 4096)], seed=1)
    with two.open("r+b") as f:
        f.seek(9 * MiB)
        f.write(b"changed")
        f.seek(13 * MiB)
        f.write(b"new data")
    v1 = store.import_raw(one, "disk")
    v2 = store.import_raw(two, "disk")
    code, text, err = run("image", "diff", v1.ref, "disk", "--store", str(store.root))
    assert code == 0, err
    assert f"files: not compared: {v1.ref}, {v2.ref} not built here (imported)" in text, text
    code, text, err = run("image", "diff", v1.ref, "disk", "--store", str(store.root), "--files")
    assert code == 0, err
    assert "chunks: 2 of 4 positions differ (8.0 MiB)" in text
    lines = text.splitlines()
    assert any(line.split()[:4] == ["2", "root", "2", "chunks"] for line in lines), text
    assert any(line.split()[:3] == ["outside", "1", "chunk"] for line in lines), text  # the backup GPT
    assert "B has 2 chunks A does not hold (8.0 MiB new in the store)" in text
    assert "a PC holding A fetches 2 chunks for B" in text
    assert "packages: not recorded by one of the versions" in text
    assert "files: not compared: " in text and "not an ext2/3/4 file system" in text
    code, data, err = run("image", "diff", v1.ref, v2.ref, "--store", str(store.root), "--json", "--no-files")
    assert code == 0, err
    d = json.loads(data)
    parts = d["chunks"]["by_partition"]
    assert set(parts) == {"2 root", "outside"} and parts["2 root"]["chunks"] == 2
    assert parts["2 root"]["bytes"] + parts["outside"]["bytes"] == 8 * MiB
    assert d["a"]["digest"] == v1.digest and d["files"] is None and d["files_note"] == "not compared (--no-files)"

    code, _, err = run("image", "diff", "disk@0123456789abcdef", "disk", "--store", str(store.root))
    assert code == 1 and "image disk has no version 0123456789abcdef" in err
    code, _, err = run("image", "diff", "nosuch", "disk", "--store", str(store.root))
    assert code == 1 and "no image named nosuch" in err


def test_files_are_read_into_a_scratch_folder_whose_path_holds_a_blank(tmp_path):
    """debugfs splits its request on blanks and exits 0 when rdump fails: before the fix, a scratch folder
    with a blank in its path (a TMPDIR, ``--workdir``) dumped nothing and the diff saw no file at all."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("poste\n")
    fs = tmp_path / "root.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(fs), "8M"], check=True,
                   capture_output=True)  # fmt: skip
    out = tmp_path / "scratch dir" / "tree"
    out.parent.mkdir()
    dump_tree(fs, out, what="test")
    assert (out / "etc" / "hostname").read_text() == "poste\n"
    with pytest.raises(ImageError, match="double quote"):
        dump_tree(fs, tmp_path / 'a"b', what="test")
