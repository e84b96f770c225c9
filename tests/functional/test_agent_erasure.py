"""The agent's erasure step against a real ``provision serve`` (127.0.0.1, port 0): the agent in this process
with files standing in for the PC's drives, filled with a donor's data first, and a fake nvme-cli (every other
tool "not installed": those drives are overwritten).

- an erase-only recipe: every drive erased and verified, the records posted, the run ``done``, nothing
  written; the USB stick untouched;
- an image recipe with ``erase:``: every drive erased BEFORE the write, then the image written and verified
  onto its target, the run ``done``;
- a drive whose NVMe format "succeeds" but leaves the data: the run ends ``repair`` with the drive's reason,
  and nothing is written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from provision.agent.main import EXIT_DONE, EXIT_REPAIR, Outcome
from tests.support.chunk_server import SIZE, target_sha
from tests.support.erasure_disks import FakeNvme, NvmeDrive, fill, pattern_left
from tests.support.paths import SAMPLE_PROBE
from tests.support.runs import Site, in_process, make_site

MiB = 1 << 20
DRIVE = 40 * MiB
PARTS_MAC = "52:54:00:e5:00:01"
ERASE_IMAGE_MAC = "52:54:00:e5:00:02"
LYING_MAC = "52:54:00:e5:00:03"
PARTS = f"""name: parts
action: erase
match:
  mac: ['{PARTS_MAC}']
erase:
  verify: full
  lot: "don-acme-2026"
"""
ERASE_IMAGE = f"""name: erase-and-image
match:
  mac: ['{ERASE_IMAGE_MAC}', '{LYING_MAC}']
image: educ
target_disk:
  name: vda
wipe: zero
grow_root: false
erase:
  verify: sample
  sample_percent: 10
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "parts.yaml").write_text(PARTS)
    (recipes / "erase-and-image.yaml").write_text(ERASE_IMAGE)
    with make_site(tmp_path) as running:
        yield running


def pc(folder: Path, *drives: tuple[str, int, dict[str, object]]) -> Path:
    """A PC's drives as files full of the donor's data, with their lsblk fields."""
    folder.mkdir(parents=True)
    for name, size, lsblk in drives:
        fill(folder / name, size)
        (folder / f"{name}.json").write_text(json.dumps({"serial": f"SER-{name.upper()}", **lsblk}))
    return folder


def agent(site: Site, tmp_path: Path, mac: str, folder: Path, fake: FakeNvme) -> Outcome:
    """The agent of the PC ``mac`` (its probe says that MAC: the recipes match it) with ``folder``'s drives."""
    probe = Path(shutil.copytree(SAMPLE_PROBE, tmp_path / f"probe-{mac[-2:]}"))
    (probe / "mac").write_text(f"{mac}\n")
    return in_process(site, tmp_path, mac, disks_from=folder, probe_dir=probe, host_key_file=None, agent={"run": fake})


def erasure(site: Site, run: str) -> list[dict[str, object]]:
    """What the server recorded of the run's erasure (its events)."""
    [found] = [e for e in site.events(site.runs(run_mac(site, run))[0]["mac"], "erasure") if e["run"] == run]
    drives: list[dict[str, object]] = found["drives"]
    return drives


def run_mac(site: Site, run: str) -> str:
    return str(next(r["mac"] for r in site.runs() if r["id"] == run))


def test_an_erase_only_pc_is_erased_verified_and_done(site: Site, tmp_path: Path) -> None:
    folder = pc(tmp_path / "parts", ("nvme0n1", DRIVE, {"tran": "nvme"}), ("sda", DRIVE, {"tran": "sata"}),
                ("sdb", DRIVE, {"tran": "usb", "rm": True}))  # fmt: skip
    fake = FakeNvme({"nvme0n1": NvmeDrive(folder / "nvme0n1", "SER-NVME0N1")})
    outcome = agent(site, tmp_path, PARTS_MAC, folder, fake)
    assert (outcome.code, outcome.state) == (EXIT_DONE, "done"), outcome
    assert pattern_left(folder / "nvme0n1") == [] and pattern_left(folder / "sda") == []
    assert len(pattern_left(folder / "sdb")) == DRIVE // MiB  # the USB stick is not the PC's
    [run] = site.runs(PARTS_MAC)
    assert run["state"] == "done" and outcome.run == run["id"]
    drives = erasure(site, run["id"])
    assert [(d["device"], d["method"], d["ok"]) for d in drives] == [
        ("nvme0n1", "nvme-format-user-data", True),
        ("sda", "overwrite", True),
    ]
    assert site.events(PARTS_MAC, "erasure")[0]["skipped"][0]["device"] == "sdb"
    assert any(c[:2] == ["nvme", "format"] for c in fake.calls)


def test_an_image_run_erases_every_drive_first_then_writes(site: Site, tmp_path: Path) -> None:
    folder = pc(tmp_path / "pc", ("vda", SIZE, {}), ("vdb", DRIVE, {}))
    outcome = agent(site, tmp_path, ERASE_IMAGE_MAC, folder, FakeNvme({}))
    assert (outcome.code, outcome.state) == (EXIT_DONE, "done"), outcome
    assert target_sha(folder / "vda") == site.raw_sha  # the image, written after the erasure
    assert pattern_left(folder / "vda") == [] and pattern_left(folder / "vdb") == []
    assert (folder / "vdb").read_bytes() == bytes(DRIVE)
    [run] = site.runs(ERASE_IMAGE_MAC)
    assert run["state"] == "done"
    assert [(d["device"], d["method"], d["ok"]) for d in erasure(site, run["id"])] == [
        ("vda", "overwrite", True),
        ("vdb", "overwrite", True),
    ]


def test_a_drive_left_with_data_sends_the_pc_to_repair_and_nothing_is_written(site: Site, tmp_path: Path) -> None:
    folder = pc(tmp_path / "lying", ("nvme0n1", DRIVE, {"tran": "nvme"}), ("vda", SIZE, {}))
    fake = FakeNvme({"nvme0n1": NvmeDrive(folder / "nvme0n1", "SER-NVME0N1", "lying")})
    outcome = agent(site, tmp_path, LYING_MAC, folder, fake)
    assert (outcome.code, outcome.state) == (EXIT_REPAIR, "repair"), outcome
    assert outcome.reason is not None and "drive nvme0n1 (serial SER-NVME0N1)" in outcome.reason
    assert "the drive did not erase; set it aside" in outcome.reason
    assert len(pattern_left(folder / "nvme0n1")) == DRIVE // MiB
    assert (folder / "vda").read_bytes() == bytes(SIZE)  # erased (it was ok), and no image written after
    [run] = site.runs(LYING_MAC)
    assert run["state"] == "repair" and "did not erase" in str(run["reason"])
    answer = requests.get(f"{site.url}/api/v1/runs/{run['id']}", timeout=10).json()
    assert answer["state"] == "repair"


def test_an_erasure_that_cannot_start_ends_the_run_failed(site: Site, tmp_path: Path) -> None:
    outcome = agent(site, tmp_path, PARTS_MAC, tmp_path / "no-such-folder", FakeNvme({}))
    assert outcome.state == "failed" and outcome.reason is not None
    assert outcome.reason.startswith("the erasure failed: FileNotFoundError")
    [run] = site.runs(PARTS_MAC)
    assert run["state"] == "failed" and str(run["reason"]).startswith("the erasure failed")
    assert site.events(PARTS_MAC, "erasure") == []  # no record: nothing was erased
