"""The build plan, checked without running a tool: a RecordingRunner records every command of a tiny build
(fake packages, fake store); the staged tree, failures, cleanup, progress. Debian builds and the BIOS boot
sector have their own test_image_build_* modules; the fakes they share are in tests/support/builder.py."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
import zstandard

from provision.builder import (
    TINY_STEPS,
    BuildInterrupted,
    BuildProgress,
    PackageNotFound,
    RecordingRunner,
    StepFailed,
    build_image,
    resolve_inputs,
)
from provision.builder.definition import load_definition
from provision.builder.disk import DiskLayout, image_uuid
from provision.builder.tinyinit import ROOT_INIT
from provision.images.store import ImageStore
from tests.support.builder import RELEASE, FakeStore, MiB, cache

__all__ = ["cache"]  # the fixture, from tests/support/builder.py


def tiny_def(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "images" / "tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "name: tiny\nbuilder: tiny\ndisk:\n  size: 128MiB\n  esp_size: 64MiB\n"
        "boot:\n  timeout: 0\n  cmdline: 'provision.callback=http://198.18.0.1:8080/api/v1/firstboot'\n"
        f"modules: [virtio_blk, ext4]\n{extra}"
    )
    return path


def run_tiny(tmp_path, cache, runner, **kwargs):
    store = FakeStore()
    result = build_image(
        tiny_def(tmp_path, kwargs.pop("extra", "")),
        cast(ImageStore, store),
        cache=cache,
        runner=runner,
        workdir=tmp_path / "work",
        log_dir=tmp_path / "logs",
        **kwargs,
    )
    return result, store


def test_tiny_command_sequence(tmp_path, cache):
    runner = RecordingRunner()
    result, store = run_tiny(tmp_path, cache, runner)
    assert runner.steps == list(TINY_STEPS)
    programs = [argv[0] for argv in runner.argvs()]
    assert programs == ["sfdisk", "mkfs.fat", "mke2fs", "dumpe2fs", "grub-mkimage", "mcopy", "e2fsck"]
    layout = DiskLayout("tiny", 128 * MiB, 64 * MiB)
    sfdisk = runner.commands[0]
    assert sfdisk.argv[1:5] == ("--no-reread", "--no-tell-kernel", "--wipe", "always")
    assert sfdisk.input == layout.sfdisk_script()
    mkfs_fat = runner.argvs("mkfs.fat")[0]
    assert "--offset=4096" in mkfs_fat and mkfs_fat[-1] == str(64 * 1024) and layout.esp_volume_id in mkfs_fat
    (mke2fs,) = [c for c in runner.commands if c.argv[0] == "mke2fs"]
    assert f"offset={66 * MiB},hash_seed={layout.root_uuid},root_owner=0:0" in mke2fs.argv
    assert mke2fs.argv[-1] == f"{layout.root_size // 1024}k" and "-d" in mke2fs.argv
    assert mke2fs.env["E2FSPROGS_FAKE_TIME"].isdigit()
    mkimage = runner.argvs("grub-mkimage")[0]
    assert "--format=i386-pc" in mkimage and mkimage[-4:] == ("biosdisk", "part_gpt", "ext2", "search_fs_uuid")
    mcopy = runner.argvs("mcopy")[0]
    assert mcopy[1:5] == ("-s", "-m", "-i", f"{mcopy[4].split('@@')[0]}@@{2 * MiB}") and mcopy[-1] == "::/"
    assert runner.argvs("e2fsck")[0][-1].endswith(f"disk.raw?offset={66 * MiB}")
    # imported once, published after the import, nothing left in the work folder
    (imported,) = store.imported
    assert imported["name"] == "tiny" and imported["publish"] is False and imported["chunk_size"] == 4 * MiB
    assert store.published == [result.version]
    prov = imported["provenance"]
    assert prov["inputs"] == result.inputs_digest and prov["label"] == result.label
    assert prov["packages"] == {f"linux-image-{RELEASE}": "1.0-1", "busybox-static": "1.0-1"}
    assert prov["inputs_summary"]["boot"] == {
        "shim-signed": "1.0-1",
        "grub-efi-amd64-signed": "1.0-1",
        "grub-pc-bin": "1.0-1",
    }
    assert list((tmp_path / "work").iterdir()) == [tmp_path / "work" / "tiny.lock"]
    assert result.log is not None and "== step bootloader-uefi" in result.log.read_text()


def test_tiny_stagedwrite_tree(tmp_path, cache):
    runner = RecordingRunner()
    run_tiny(tmp_path, cache, runner, keep_workdir=True, extra="extra_debs: [hello]\n")
    (work,) = [p for p in (tmp_path / "work").iterdir() if p.is_dir()]
    root = work / "root"
    assert (root / "sbin" / "init").read_text() == ROOT_INIT
    assert (root / "bin" / "sh").readlink() == Path("/bin/busybox")
    assert (root / "usr" / "bin" / "hello").read_bytes() == b"\x7fELF hello"
    assert (root / "etc" / "machine-id").read_text() == ""
    env = (root / "etc" / "provision" / "image.env").read_text()
    assert env.startswith("PROVISION_IMAGE=tiny\nPROVISION_LABEL=tiny-")
    cfg = (root / "boot" / "grub" / "grub.cfg").read_text()
    uuid = image_uuid("tiny", "root-fs")
    assert f"search --no-floppy --fs-uuid --set=root {uuid}" in cfg
    assert (
        f"linux /boot/vmlinuz-{RELEASE} root=UUID={uuid} ro "
        "provision.callback=http://198.18.0.1:8080/api/v1/firstboot console=tty0 console=ttyS0,115200"
    ) in cfg
    assert f"initrd /boot/initrd.img-{RELEASE}" in cfg and "set timeout=0" in cfg
    assert (root / "boot" / "grub" / "i386-pc" / "normal.mod").read_bytes() == b"normal"
    cpio = zstandard.ZstdDecompressor().decompress(
        (root / "boot" / f"initrd.img-{RELEASE}").read_bytes(), max_output_size=1 << 24
    )
    assert b"init\0" in cpio and f"lib/modules/{RELEASE}/kernel/fs/ext4/ext4.ko".encode() in cpio
    modules = cpio.split(b"etc/provision/modules\0")[1]
    assert modules.index(b"virtio_blk.ko") < modules.index(b"ext4.ko")
    assert (work / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes() == b"MZshim"
    assert (work / "esp" / "EFI" / "BOOT" / "grubx64.efi").read_bytes() == b"MZgrub"
    assert f"--set=root {uuid}" in (work / "esp" / "EFI" / "debian" / "grub.cfg").read_text()


def test_injected_failure_publishes_nothing_and_cleans_up(tmp_path, cache):
    runner = RecordingRunner(fail_at="bootloader-bios")
    with pytest.raises(BuildInterrupted) as caught:
        run_tiny(tmp_path, cache, runner)
    assert caught.value.step == "bootloader-bios"
    assert runner.steps[-1] == "bootloader-bios"
    assert list((tmp_path / "work").iterdir()) == [tmp_path / "work" / "tiny.lock"]
    (log,) = (tmp_path / "logs").iterdir()
    assert "FAILED at step bootloader-bios" in log.read_text()


def test_failed_tool_is_a_step_failure_with_facts(tmp_path, cache):
    runner = RecordingRunner(fail_on="mke2fs", fail_stderr="mke2fs: Could not allocate block\nmore\n")
    store = FakeStore()
    with pytest.raises(StepFailed) as caught:
        build_image(
            tiny_def(tmp_path),
            cast(ImageStore, store),
            cache=cache,
            runner=runner,
            workdir=tmp_path / "w",
            log_dir=tmp_path / "l",
        )
    err = caught.value
    assert (err.step, err.returncode, err.argv[0]) == ("filesystems", 1, "mke2fs")
    assert err.stderr_tail == "mke2fs: Could not allocate block\nmore"
    assert err.facts["image"] == "tiny" and "build log" in str(err)
    assert store.imported == [] and store.published == []


def test_unknown_extra_deb_names_the_package(tmp_path, cache):
    with pytest.raises(PackageNotFound) as caught:
        run_tiny(tmp_path, cache, RecordingRunner(), extra="extra_debs: [hello, no-such-package-xyz]\n")
    assert caught.value.package == "no-such-package-xyz"
    assert caught.value.step == "resolve"
    assert "no-such-package-xyz" in str(caught.value)


def test_progress_events(tmp_path, cache):
    events: list[BuildProgress] = []
    run_tiny(tmp_path, cache, RecordingRunner(), progress=events.append)
    starts = [e for e in events if e.fraction is None and not e.message]
    assert [e.step for e in starts] == list(TINY_STEPS)
    assert [e.index for e in starts] == list(range(1, len(TINY_STEPS) + 1))
    assert {e.total for e in events} == {len(TINY_STEPS)}


def test_inputs_digest_follows_the_definition(tmp_path, cache):
    one = resolve_inputs(load_definition(tiny_def(tmp_path)), cache)
    same = resolve_inputs(load_definition(tiny_def(tmp_path)), cache)
    other = resolve_inputs(load_definition(tiny_def(tmp_path, "extra_debs: [hello]\n")), cache)
    assert one.digest == same.digest != other.digest
    assert other.packages["hello"] == "1.0-1"
    assert one.label == f"tiny-{one.digest[:12]}"
