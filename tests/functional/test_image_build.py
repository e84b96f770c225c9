"""Real builds of the tiny image into a temporary store (root, the build tools and the Debian package cache).

- a build imports and publishes; the disk has the GPT layout, GRUB in the MBR, shim + GRUB on the ESP;
- an unknown package fails the build naming it, and ``current`` stays as it was;
- an injected failure mid-build (three steps), and a failing tool, leave no loop device, no mount, no work files;
- two builds differing by one small package share most chunks (dedup);
- ``rebuild_all`` skips unchanged inputs and reports what changed.

The package cache is $PROVISION_DEB_CACHE (default /var/cache/provision/debs): filled from the machine's
own Debian archive on first use, then the tiny image builds offline in seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from provision.bootfiles import DEFAULT_CACHE, DebCache
from provision.builder import (
    BuildInterrupted,
    PackageNotFound,
    Runner,
    StepFailed,
    build_image,
    rebuild_all,
)
from provision.builder.disk import image_uuid
from provision.errors import ConfigError
from provision.images.store import ImageStore

TOOLS = ("sfdisk", "mkfs.fat", "mke2fs", "e2fsck", "mcopy", "mdir", "grub-mkimage", "apt-get", "dpkg")
missing = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or bool(missing),
    reason="image builds need root and " + (", ".join(missing) or "the tools") + " (fdisk dosfstools e2fsprogs "
    "mtools grub-common apt)",
)

TINY = Path(__file__).resolve().parents[2] / "images" / "tiny.yaml"
CACHE = Path(os.environ.get("PROVISION_DEB_CACHE", DEFAULT_CACHE))
MiB = 1 << 20


@pytest.fixture(scope="module")
def cache() -> DebCache:
    return DebCache(CACHE)


def definition(folder: Path, extra: str = "", name: str = "tiny.yaml") -> Path:
    """A copy of images/tiny.yaml with ``extra`` appended (later keys are not allowed twice: use new ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = TINY.read_text().replace("extra_debs: []\n", "")
    path = folder / name
    path.write_text(text + extra)
    return path


def build(path: Path, store: ImageStore, cache: DebCache, tmp: Path, **kwargs):
    return build_image(path, store, cache=cache, workdir=tmp / "work", log_dir=tmp / "logs", **kwargs)


def loops_of(folder: Path) -> list[str]:
    done = subprocess.run(["losetup", "--all"], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if str(folder) in line]


def mounts_of(folder: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(folder) in line]


def test_build_tiny_imports_and_publishes(tmp_path, cache):
    store = ImageStore(tmp_path / "store")
    started = time.monotonic()
    result = build(definition(tmp_path / "images"), store, cache, tmp_path)
    seconds = time.monotonic() - started
    print(f"tiny build: {seconds:.1f} s, steps {result.step_seconds}, chunks {result.chunks}")
    current = store.current("tiny")
    assert current is not None and current.digest == result.version.digest
    layout = current.index.layout
    assert layout.label == "gpt"
    assert [p.type for p in layout.partitions] == [
        "21686148-6449-6E6F-744E-656564454649",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    ]
    assert current.index.disk_size == 128 * MiB
    prov = current.index.provenance
    assert prov["label"] == result.label and prov["inputs"] == result.inputs_digest
    assert set(prov["packages"]) == {"busybox-static", next(p for p in prov["packages"] if p.startswith("linux-"))}
    zst, bmap = store.export("tiny", tmp_path / "export")
    assert bmap.is_file()
    raw = tmp_path / "disk.raw"
    subprocess.run(["zstd", "-q", "-d", "-f", str(zst), "-o", str(raw)], check=True)
    data = raw.read_bytes()
    assert b"GRUB " in data[:512] and data[510:512] == b"\x55\xaa"  # boot.img in the MBR
    esp = f"{raw}@@{2 * MiB}"
    listing = subprocess.run(
        ["mdir", "-i", esp, "-b", "-/", "::/EFI"],
        capture_output=True,
        text=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        check=True,
    ).stdout
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing and "::/EFI/BOOT/grubx64.efi" in listing
    assert "::/EFI/debian/grub.cfg" in listing
    subprocess.run(["e2fsck", "-f", "-n", f"{raw}?offset={66 * MiB}"], check=True, capture_output=True)
    assert (
        image_uuid("tiny", "root-fs")
        in subprocess.run(
            ["blkid", "-p", "-O", str(66 * MiB), "-o", "value", "-s", "UUID", str(raw)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    assert result.log is not None and "== step import" in result.log.read_text()
    assert seconds < 120


def test_unknown_package_fails_naming_it_and_keeps_current(tmp_path, cache):
    store = ImageStore(tmp_path / "store")
    first = build(definition(tmp_path / "images"), store, cache, tmp_path)
    bad = definition(tmp_path / "bad", "extra_debs: [hello, no-such-package-xyz]\n")
    with pytest.raises(PackageNotFound) as caught:
        build(bad, store, cache, tmp_path)
    assert caught.value.package == "no-such-package-xyz"
    assert "no-such-package-xyz" in str(caught.value)
    current = store.current("tiny")
    assert current is not None and current.digest == first.version.digest


def test_injected_failure_leaves_no_loop_no_mount_and_keeps_current(tmp_path, cache):
    store = ImageStore(tmp_path / "store")
    first = build(definition(tmp_path / "images"), store, cache, tmp_path)
    changed = definition(tmp_path / "changed", "extra_debs: [hello]\n")
    for step in ("filesystems", "bootloader-bios", "import"):
        with pytest.raises(BuildInterrupted) as caught:
            build(changed, store, cache, tmp_path, runner=Runner(fail_at=step))
        assert caught.value.step == step
        assert loops_of(tmp_path) == []
        assert mounts_of(tmp_path) == []
        assert [p.name for p in (tmp_path / "work").iterdir()] == ["tiny.lock"]
        current = store.current("tiny")
        assert current is not None and current.digest == first.version.digest
    assert len(store.versions("tiny")) == 1


def test_failing_tool_reports_step_command_and_stderr(tmp_path, cache):
    store = ImageStore(tmp_path / "store")
    big = tmp_path / "images" / "overlay" / "big"
    big.mkdir(parents=True)
    (big / "big.bin").write_bytes(os.urandom(24 * MiB))  # the root file system has 61 MiB
    (big / "big2.bin").write_bytes(os.urandom(24 * MiB))
    too_small = definition(tmp_path / "images", "overlays: [overlay/big]\n", name="small.yaml")
    with pytest.raises(StepFailed) as caught:
        build(too_small, store, cache, tmp_path)
    err = caught.value
    assert (err.step, err.argv[0]) == ("filesystems", "mke2fs")
    assert err.returncode != 0 and "allocate" in err.stderr_tail
    assert store.current("tiny") is None
    assert loops_of(tmp_path) == [] and mounts_of(tmp_path) == []


def test_dedup_between_builds_differing_by_one_package(tmp_path, cache):
    store = ImageStore(tmp_path / "store")
    first = build(definition(tmp_path / "a"), store, cache, tmp_path)
    second = build(definition(tmp_path / "b", "extra_debs: [hello]\n"), store, cache, tmp_path)
    stats = second.chunks
    print(
        f"dedup: tiny + hello: {stats.new} new chunks stored / {stats.total} total "
        f"({stats.stored} non-zero, {stats.holes} holes); first build stored {first.chunks.stored}"
    )
    assert "hello" in second.packages
    assert stats.new < stats.total
    assert stats.new < stats.stored
    assert first.chunks.new == first.chunks.stored


def test_rebuild_all_skips_unchanged_and_reports_changes(tmp_path, cache):
    images = tmp_path / "images"
    path = definition(images)
    store = ImageStore(tmp_path / "store")
    kwargs = {"cache": cache, "workdir": tmp_path / "work", "log_dir": tmp_path / "logs"}
    (built,) = rebuild_all(images, store, **kwargs)
    assert (built.status, built.reason) == ("built", "changed: no current version")
    assert built.changes is not None and "busybox-static" in built.changes.added
    (skipped,) = rebuild_all(images, store, **kwargs)
    assert (skipped.status, skipped.reason, skipped.version) == ("skipped", "inputs unchanged", built.version)
    path.write_text(path.read_text() + "extra_debs: [hello]\n")
    (again,) = rebuild_all(images, store, **kwargs)
    assert again.status == "built" and again.reason.startswith("changed: definition")
    assert again.changes is not None and list(again.changes.added) == ["hello"]
    assert not again.changes.removed and not again.changes.upgraded
    assert again.chunks is not None and again.chunks.new < again.chunks.total
    current = store.current("tiny")
    assert current is not None and current.ref == again.version
    path.write_text(path.read_text().replace("[hello]", "[hello, no-such-package-xyz]"))
    (failed,) = rebuild_all(images, store, **kwargs)
    assert failed.status == "failed" and failed.error["package"] == "no-such-package-xyz"
    current = store.current("tiny")
    assert current is not None and current.ref == again.version


def test_rebuild_all_reports_a_bad_definition(tmp_path, cache):
    images = tmp_path / "images"
    definition(images)
    (images / "broken.yaml").write_text("name: broken\nbuilder: tiny\ndisk: {sise: 1}\n")
    store = ImageStore(tmp_path / "store")
    results = rebuild_all(
        images, store, cache=cache, workdir=tmp_path / "work", log_dir=tmp_path / "logs", names=["broken"]
    )
    assert [(r.name, r.status) for r in results] == [("broken", "failed")]
    assert "broken.yaml:3: disk.sise: unknown key" in results[0].reason
    with pytest.raises(ConfigError, match=r"broken\.yaml:3: disk\.sise: unknown key"):
        build(images / "broken.yaml", store, cache, tmp_path)
