"""Capture with the real agent (docs/agent.md, docs/capture.md): ``provision serve`` as a process on 127.0.0.1 and
``python -m provision.agent`` processes, files standing in for disks.

The image ``educ`` is a GPT disk whose root is a real ext4 (``mke2fs -d``), imported with 64 KiB chunks. The
golden PC's disk is that disk with a file added (``debugfs -w``) and a 3 MB file written then removed, so its
stale bytes lie in the root's free blocks. ``provision image capture MAC --name educ``, then the agent: the new
version shares all but a few chunks with the original (the figure printed), exports to the golden disk with its
free blocks zeroed (as dumpe2fs lists them), holds none of the stale bytes; a second capture of the same disk
uploads nothing; a PC imaged with the captured version verifies and holds the file (``debugfs cat``)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.agent.main import EXIT_DONE
from provision.images import ImageStore, ImageVersion
from provision.wire import paths
from tests.support.agent import make_ext4_disk
from tests.support.chunk_server import Server, free_port
from tests.support.images import CHUNK, MiB, unzstd
from tests.support.paths import REPO
from tests.support.runs import agent_process, disks, result

RECIPE = "name: default\ndefault: true\nimage: educ\nwipe: zero\ngrow_root: false\n"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
GOLDEN = "52:54:00:ca:17:01"
COPY = "52:54:00:ca:17:02"
SIZE = 64 * MiB
NOTE = b"captured from the golden PC of the workshop\n"
FILES = {"etc/hostname": b"educ\n", "usr/share/doc/educ/readme": random.Random(3).randbytes(4 * MiB)}
MAX_NEW = 8  # chunks: the file's block, its inode, the directory, bitmaps, descriptors, the superblock

pytestmark = pytest.mark.skipif(not shutil.which("debugfs") or not shutil.which("mke2fs"), reason="e2fsprogs")


@dataclass
class Site:
    server: Server
    store: ImageStore
    original: ImageVersion
    golden: Path  # the golden PC's disk (in its disks folder)
    root: int  # the root file system's offset

    def provision(self, *argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "provision", *argv, "--state-dir", str(self.server.state_dir)],
                              capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60, check=True)  # fmt: skip
        return done.stdout

    def token(self, mac: str) -> str:
        script = requests.get(f"{self.server.url}/boot/{mac}.ipxe", timeout=10).text
        assert "provision.token=" in script, script
        return script.split("provision.token=")[1].split()[0]

    def boot(self, mac: str, folder: Path) -> dict[str, Any]:
        """One network boot of the PC and its agent's run to the end: the run as the API gives it."""
        code, last, err = result(agent_process(self.server.url, mac, self.token(mac), folder))
        assert code == EXIT_DONE and " done " in last, (last, err)
        assert "progress not posted" not in err, err  # the server takes the stage ``capturing``
        runs = requests.get(f"{self.server.url}{paths.RUNS}", params={"mac": mac}, timeout=10).json()
        run: dict[str, Any] = requests.get(f"{self.server.url}{paths.run(runs[-1]['id'])}", timeout=10).json()
        assert run["state"] == "done", run
        return run

    def capture(self) -> dict[str, Any]:
        out = self.provision("image", "capture", GOLDEN, "--name", "educ")
        assert "it will be captured as educ" in out, out
        return self.boot(GOLDEN, self.golden.parent)


def debugfs(disk: Path, offset: int, *commands: str, write: bool = False) -> str:
    argv = ["debugfs", *(["-w"] if write else []), "-f", "-", f"{disk}?offset={offset}"]
    done = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "debugfs:" in done.stdout, done
    return done.stdout


def cat(disk: Path, offset: int, name: str) -> bytes:
    done = subprocess.run(["debugfs", "-R", f"cat {name}", f"{disk}?offset={offset}"], capture_output=True,
                          timeout=60, check=True)  # fmt: skip
    return done.stdout


def zero_freed(disk: Path, offset: int) -> bytes:
    """The disk with the root's free blocks (as dumpe2fs lists them) zeroed."""
    listing = subprocess.run(["dumpe2fs", f"{disk}?offset={offset}"], capture_output=True, text=True, timeout=60,
                             check=True).stdout  # fmt: skip
    block = int(re.search(r"^Block size:\s+(\d+)", listing, re.M).group(1))  # type: ignore[union-attr]
    data = bytearray(disk.read_bytes())
    for line in re.findall(r"^\s+Free blocks: (.+)$", listing, re.M):
        for run in line.split(", "):
            first, _, last = run.partition("-")
            start, end = int(first), int(last or first) + 1
            data[offset + start * block : offset + end * block] = bytes((end - start) * block)
    return bytes(data)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    disk, table = make_ext4_disk(tmp_path, FILES, grow_to=SIZE)
    root = table.partitions[2].start * 512
    store = ImageStore(tmp_path / "store")
    original = store.import_raw(disk, "educ", chunk_size=CHUNK, created=datetime(2026, 12, 1, tzinfo=UTC))
    golden = disks(tmp_path / "golden", ("vda", 0, {"model": "GOLDEN DISK", "serial": "GOLD-0001"})) / "vda"
    shutil.copyfile(disk, golden)
    (tmp_path / "note").write_bytes(NOTE)
    (tmp_path / "stale").write_bytes(random.Random(5).randbytes(3_000_000))
    debugfs(golden, root, f"write {tmp_path / 'note'} golden-note", f"write {tmp_path / 'stale'} stale", "rm stale",
            write=True)  # fmt: skip
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(RECIPE)
    server = Server(tmp_path, free_port(), recipes=recipes)
    server.start()
    try:
        yield Site(server, store, original, golden, root)
    finally:
        server.kill()


def test_a_captured_disk_shares_all_but_a_few_chunks_and_images_another_pc(site: Site, tmp_path: Path) -> None:
    assert cat(site.golden, site.root, "/golden-note") == NOTE
    stale = (tmp_path / "stale").read_bytes()
    assert stale[:4096] in site.golden.read_bytes()  # the removed file's bytes are still on the disk
    run = site.capture()
    version = site.store.current("educ")
    assert version is not None and version.digest != site.original.digest and run["digest"] == version.digest
    old = {c.sha256 for c in site.original.index.chunks}
    data = [c.sha256 for c in version.index.chunks if c.sha256 is not None]
    new = {sha for sha in data if sha not in old}
    captured, provenance = run["captured"], version.index.provenance["captured"]
    assert 0 < len(new) <= MAX_NEW and captured["uploaded_chunks"] == len(new) == captured["new_chunks"]
    sent, read = captured["uploaded_bytes"], provenance["read_bytes"]
    print(f"\ncapture figures: {len(new)} new chunks of {len(data)} data chunks ({len(version.index.chunks)} "
          f"positions); {sent} bytes uploaded, {read} of {SIZE} bytes read")  # fmt: skip
    assert provenance["read_bytes"] < SIZE - 40 * MiB  # the root's free blocks were not read
    assert (provenance["mac"], provenance["serial"], provenance["model"]) == (GOLDEN, "GOLD-0001", "GOLDEN DISK")
    [fs] = [f for f in provenance["filesystems"] if f["fs"] == "ext4"]
    assert fs["free_bytes"] > 3 * MiB and fs["label"] == "root"
    # the version is the golden disk with its free blocks zeroed: the stale bytes are gone
    expected = zero_freed(site.golden, site.root)
    assert version.index.provenance["source"]["sha256"] == hashlib.sha256(expected).hexdigest()
    zst, _ = site.store.export("educ", tmp_path / "out")
    exported = unzstd(zst.read_bytes())
    assert exported == expected and stale[:4096] not in exported
    # the same disk captured again: nothing uploaded
    again = site.capture()
    assert again["captured"]["uploaded_chunks"] == 0 and again["captured"]["uploaded_bytes"] == 0
    # another PC imaged with the captured version holds the file
    copy = disks(tmp_path / "copy", ("vda", SIZE, None)) / "vda"
    imaged = site.boot(COPY, copy.parent)
    assert imaged["digest"] == again["digest"] and imaged["verified_bytes"] == version.index.mapped_bytes
    # done: the disk was verified as the captured version (then the first-boot credential was written into it)
    assert cat(copy, site.root, "/golden-note") == NOTE
    assert cat(copy, site.root, "/usr/share/doc/educ/readme") == FILES["usr/share/doc/educ/readme"]
