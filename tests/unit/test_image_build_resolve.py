"""Package resolution (apt's output), the image archive from the machine's sources, the disk layout, what a
nightly rebuild compares and reports."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from provision.bootfiles import AptFailed, AptSource, parse_deb822_sources
from provision.builder import PackageNotFound, package_changes
from provision.builder.disk import DiskLayout, auto_size, esp_cluster_sectors, image_uuid, mounts_below
from provision.builder.errors import ImageBuildError
from provision.builder.rebuild import RebuildResult, what_changed
from provision.builder.resolve import (
    ImageApt,
    image_archive,
    missing_packages,
    parse_simulation,
    variant_pattern,
)
from provision.images.index import ImageVersion

MiB = 1 << 20

SOURCES = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: https://vendor.example/apt
Suites: nodistro
Components: main
"""

SIMULATION = """\
NOTE: This is only a simulation!
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64]) []
Inst tuxpaint:amd64 (1:0.9.28-sdl2-1 Debian:12.15/oldstable [amd64])
Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
"""


def test_parse_simulation():
    assert parse_simulation(SIMULATION) == {
        "gcc-12-base": "12.2.0-14+deb12u1",
        "libc6": "2.36-9+deb12u14",
        "tuxpaint": "1:0.9.28-sdl2-1",
    }


@pytest.mark.parametrize(
    ("stderr", "names"),
    [
        ("E: Unable to locate package no-such-package-xyz\n", ["no-such-package-xyz"]),
        ("E: Package 'mail-transport-agent' has no installation candidate\n", ["mail-transport-agent"]),
        ("E: Couldn't find any package by glob 'foo*'\n", ["foo*"]),
        ("E: Version '9' for 'hello' was not found\n", ["hello"]),
        ("E: Unable to locate package a\nE: Unable to locate package b\nE: Unable to locate package a\n", ["a", "b"]),
        ("E: Sub-process returned an error code\n", []),
    ],
)
def test_missing_packages(stderr, names):
    assert missing_packages(stderr) == names


def test_image_archive_comes_from_the_machine_sources():
    sources = parse_deb822_sources(SOURCES)
    entries = image_archive(sources, "bookworm", "bookworm", ["main", "non-free-firmware"])
    assert [e.line() for e in entries] == [
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm "
        "main non-free-firmware",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian "
        "bookworm-updates main non-free-firmware",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian-security "
        "bookworm-security main non-free-firmware",
    ]
    trixie = image_archive(sources, "bookworm", "trixie", ["main"])
    assert [e.suite for e in trixie] == ["trixie", "trixie-updates", "trixie-security"]


def test_image_archive_needs_the_host_suite():
    with pytest.raises(ImageBuildError, match="no apt source for suite 'bookworm'"):
        image_archive(
            [AptSource(("deb",), ("http://x.example/",), ("sid",), ("main",))], "bookworm", "bookworm", ["main"]
        )


def test_variant_pattern():
    assert variant_pattern("minbase") == "?and(?architecture(amd64),?or(?essential,?priority(required)))"
    assert "?priority(standard)" in variant_pattern("standard")


def test_apt_failure_names_the_missing_package(tmp_path, monkeypatch):
    entries = image_archive(parse_deb822_sources(SOURCES), "bookworm", "bookworm", ["main"])
    apt = ImageApt(tmp_path, entries)
    assert apt.name.startswith("image-bookworm-")
    calls: list[list[str]] = []

    def fail(tool: str, args: list[str], cwd: Path | None = None) -> str:
        calls.append([tool, *args])
        raise AptFailed([tool, *args], 100, "Reading package lists...\nE: Unable to locate package tuxpiant\n")

    monkeypatch.setattr(apt, "_run", fail)
    with pytest.raises(PackageNotFound) as caught:
        apt.simulate(["tuxpiant", "hello"], variant="important", recommends=False, image="educ")
    assert caught.value.package == "tuxpiant"
    assert caught.value.facts["image"] == "educ"
    assert calls[0][:5] == ["apt-get", "--simulate", "-o", "APT::Install-Recommends=false", "install"]
    assert calls[0][5:7] == ["tuxpiant", "hello"]


def test_package_changes():
    changes = package_changes({"a": "1", "b": "1", "c": "1"}, {"a": "1", "b": "2", "d": "1"})
    assert changes.added == {"d": "1"}
    assert changes.removed == {"c": "1"}
    assert changes.upgraded == {"b": ("1", "2")}
    assert changes.to_dict()["upgraded"] == {"b": {"from": "1", "to": "2"}}
    assert package_changes({"a": "1"}, {"a": "1"}).empty


def test_layout_is_stable_and_aligned():
    layout = DiskLayout("educ", 8 << 30, 64 * MiB)
    layout.check()
    assert layout.root_uuid == image_uuid("educ", "root-fs") == DiskLayout("educ", 4 << 30, 64 * MiB).root_uuid
    assert layout.root_uuid != DiskLayout("tiny", 8 << 30, 64 * MiB).root_uuid
    script = layout.sfdisk_script()
    assert "type=21686148-6449-6E6F-744E-656564454649" in script  # BIOS boot
    assert "type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B" in script  # ESP
    assert "type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" in script  # root x86-64
    assert f"start={layout.root_offset // 512}, size={layout.root_size // 512}" in script
    assert layout.root_offset == 66 * MiB and layout.root_size == (8 << 30) - 67 * MiB
    assert len(layout.esp_volume_id) == 8 and layout.esp_fs_uuid[4] == "-"
    with pytest.raises(ValueError, match="leaves"):
        DiskLayout("x", 70 * MiB, 64 * MiB).check()


def test_esp_clusters_make_a_valid_fat32():
    assert esp_cluster_sectors(40 * MiB) == 1
    assert esp_cluster_sectors(64 * MiB) == 1
    assert esp_cluster_sectors(256 * MiB) == 4
    assert esp_cluster_sectors(4 << 30) == 8
    for size in (40 * MiB, 64 * MiB, 100 * MiB, 256 * MiB, 1 << 30):
        assert size // 512 // esp_cluster_sectors(size) > 65525


def test_auto_size():
    size = auto_size(3 << 30, 1 << 30, 64 * MiB)
    assert size % (64 * MiB) == 0
    assert size > (4 << 30) + 64 * MiB


def test_mounts_below(tmp_path):
    mounts = tmp_path / "mounts"
    base = tmp_path / "work"
    mounts.write_text(
        f"proc {base}/root/proc proc rw 0 0\n/dev/vda / ext4 rw 0 0\n"
        f"tmpfs {base}/root/dev/shm tmpfs rw 0 0\nsys {tmp_path}/workshop sysfs rw 0 0\n"
        f"x {base}/a\\040b tmpfs rw 0 0\n"
    )
    assert mounts_below(base, mounts) == [f"{base}/root/dev/shm", f"{base}/root/proc", f"{base}/a b"]


def version(provenance: dict[str, Any]) -> ImageVersion:
    return cast(ImageVersion, SimpleNamespace(index=SimpleNamespace(provenance=provenance), ref="x@y"))


def fake_inputs(digest: str, summary: dict[str, Any], packages: dict[str, str]) -> Any:
    return SimpleNamespace(digest=digest, summary=lambda: summary, packages=packages)


def test_what_changed():
    summary = {
        "definition_sha256": "d1",
        "overlays_sha256": "",
        "boot": {"shim-signed": "1"},
        "builder_version": 1,
        "suite": "bookworm",
        "archive": [],
    }
    prov = {"inputs": "A", "inputs_summary": summary, "resolved": {"hello": "1"}}
    assert what_changed(None, fake_inputs("A", summary, {})) == ["no current version"]
    assert what_changed(version(prov), fake_inputs("A", summary, {"hello": "1"})) == []
    new_def = {**summary, "definition_sha256": "d2"}
    assert what_changed(version(prov), fake_inputs("B", new_def, {"hello": "1"})) == ["definition"]
    assert what_changed(version(prov), fake_inputs("B", summary, {"hello": "2"})) == ["packages"]
    assert what_changed(version({"source": {}}), fake_inputs("B", summary, {})) == ["not built by the image builder"]
    scripts = {**summary, "builder_scripts_sha256": "s2"}
    assert what_changed(version(prov), fake_inputs("B", scripts, {"hello": "1"})) == ["builder scripts"]


def test_a_changed_image_script_is_a_new_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny image's init changed (it now sends the first-boot secret): the next rebuild must not reuse the
    stored version, so the scripts the builder embeds are part of the inputs."""
    from provision.builder import inputs
    from provision.builder.tinyinit import ROOT_INIT

    before = inputs.scripts_digest()
    monkeypatch.setattr(inputs, "ROOT_INIT", ROOT_INIT + "# changed\n")
    assert inputs.scripts_digest() != before


def test_rebuild_result_is_json():
    result = RebuildResult(
        name="tiny",
        definition=Path("images/tiny.yaml"),
        status="failed",
        reason="boom",
        error={"package": "x", "argv": ["a", "b"]},
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "failed" and data["error"] == {"package": "x", "argv": "['a', 'b']"}
