"""Boot files: apt sources parsing, control fields, the manifest and the boot root layout (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.bootfiles import (
    HOST,
    LAYOUT,
    MANIFEST,
    AptFailed,
    AptRepo,
    AptSource,
    BootFile,
    BootFilesError,
    DebCache,
    Package,
    PackageMissing,
    archive_source,
    depends_names,
    host_codename,
    install_boot_root,
    manifest_dict,
    one_line_entry,
    parse_control,
    parse_deb822_sources,
    parse_one_line_sources,
    qemu_roms,
    read_machine_sources,
    read_manifest,
    write_manifest,
)

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: http://inline.example/debian
Suites: sid
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----
"""

ONE_LINE = """\
# a comment
deb http://one.example/debian bookworm main contrib non-free-firmware
deb [arch=amd64 signed-by=/etc/apt/keyrings/local.gpg] http://two.example/debian bookworm-updates main # trailing
deb-src http://one.example/debian bookworm main
not a source line
"""


def test_deb822_stanzas_fields_and_comments():
    sources = parse_deb822_sources(DEB822)
    assert [s.uris for s in sources] == [
        ("http://mirror.example/debian",),
        ("http://mirror.example/debian-security",),
        ("http://disabled.example/debian",),
        ("http://inline.example/debian",),
    ]
    first = sources[0]
    assert first.types == ("deb",)
    assert first.suites == ("bookworm", "bookworm-updates")
    assert first.components == ("main",)
    assert first.signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert sources[1].components == ("main", "contrib")
    assert sources[2].enabled is False and sources[2].types == ("deb", "deb-src")
    assert sources[3].signed_by is None  # an inline key block is not a keyring path


def test_deb822_ignores_stanzas_without_uris_or_suites():
    assert parse_deb822_sources("Types: deb\nSuites: bookworm\n\n# only a comment\n") == []
    assert parse_deb822_sources("") == []


def test_one_line_sources_with_options_and_comments():
    sources = parse_one_line_sources(ONE_LINE)
    assert [(s.types, s.uris[0], s.suites[0]) for s in sources] == [
        (("deb",), "http://one.example/debian", "bookworm"),
        (("deb",), "http://two.example/debian", "bookworm-updates"),
        (("deb-src",), "http://one.example/debian", "bookworm"),
    ]
    assert sources[0].components == ("main", "contrib", "non-free-firmware")
    assert sources[0].signed_by is None
    assert sources[1].signed_by == "/etc/apt/keyrings/local.gpg"
    assert sources[1].components == ("main",)


def test_read_machine_sources_reads_list_and_parts_in_order(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://first.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "b.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "a.list").write_text("deb http://second.example/debian trixie main\n")
    (tmp_path / "sources.list.d" / "ignored.txt").write_text("deb http://nope.example/debian bookworm main\n")
    uris = [s.uris[0] for s in read_machine_sources(tmp_path)]
    assert uris[:3] == ["http://first.example/debian", "http://second.example/debian", "http://mirror.example/debian"]
    assert "http://nope.example/debian" not in uris


def test_read_machine_sources_without_files(tmp_path):
    assert read_machine_sources(tmp_path) == []


def test_archive_source_takes_the_plain_suite_not_security_or_disabled():
    sources = parse_deb822_sources(DEB822)
    chosen = archive_source(reversed(sources), "bookworm")  # disabled one comes first when reversed
    assert chosen.uris == ("http://mirror.example/debian",)
    with pytest.raises(BootFilesError, match="no apt source for suite 'trixie'") as caught:
        archive_source(sources, "trixie")
    assert caught.value.facts["suite"] == "trixie"


def test_one_line_entry_uses_the_machine_uri_and_a_keyring():
    source = parse_deb822_sources(DEB822)[0]
    assert one_line_entry(source, "trixie") == (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian trixie main\n"
    )
    bare = AptSource(types=("deb",), uris=("http://x.example/d",), suites=("bookworm",), components=("main",))
    assert "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg" in one_line_entry(bare, "trixie")


def test_host_codename(tmp_path):
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n')
    assert host_codename(release) == "bookworm"
    release.write_text("ID=debian\n")
    with pytest.raises(BootFilesError, match="no VERSION_CODENAME"):
        host_codename(release)
    with pytest.raises(BootFilesError, match="cannot read"):
        host_codename(tmp_path / "absent")


def test_parse_control_and_depends():
    text = (
        "Package: linux-image-amd64\nVersion: 6.1.192-2\n"
        "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2), kmod | busybox:any, libc6 (>= 2.36)\n"
        "Description: Linux\n multi-line\n\nPackage: second\nVersion: 1\n"
    )
    fields = parse_control(text)
    assert fields["Version"] == "6.1.192-2"
    assert fields["Description"] == "Linux\nmulti-line"
    assert "second" not in fields.values()
    assert depends_names(fields["Depends"]) == ["linux-image-6.1.0-56-amd64", "kmod", "libc6"]
    assert depends_names("") == []


def test_manifest_round_trip(tmp_path):
    files = [
        BootFile("live/vmlinuz", "linux-image-6.1.0-56-amd64", "6.1.192-2", "bookworm", "/boot/vmlinuz-x", "ab", 3),
        BootFile("ipxe.efi", "ipxe", "1.21.1", "trixie", "/usr/lib/ipxe/ipxe.efi", "cd", 4),
        BootFile("undionly.kpxe", "ipxe", "1.21.1", "trixie", "/usr/lib/ipxe/undionly.kpxe", "ef", 5),
    ]
    data = manifest_dict(files)
    assert list(data["files"]) == ["ipxe.efi", "live/vmlinuz", "undionly.kpxe"]  # type: ignore[call-overload]
    assert data["packages"] == {
        "ipxe": {"version": "1.21.1", "suite": "trixie"},
        "linux-image-6.1.0-56-amd64": {"version": "6.1.192-2", "suite": "bookworm"},
    }
    path = write_manifest(tmp_path, files)
    assert path == tmp_path / MANIFEST
    assert json.loads(path.read_text()) == data
    assert sorted(read_manifest(tmp_path), key=lambda f: f.path) == sorted(files, key=lambda f: f.path)


def test_read_manifest_absent_or_broken(tmp_path):
    assert read_manifest(tmp_path) == []
    (tmp_path / MANIFEST).write_text("{not json")
    assert read_manifest(tmp_path) == []
    (tmp_path / MANIFEST).write_text('{"files": {"a": {}}}')
    assert read_manifest(tmp_path) == []


def test_package_file_resolves_symlinks_inside_the_tree_only(tmp_path):
    root = tmp_path / "ipxe_1"
    (root / "usr/lib/ipxe").mkdir(parents=True)
    (root / "usr/lib/ipxe/ipxe-amd64.efi").write_bytes(b"MZ")
    (root / "usr/lib/ipxe/ipxe.efi").symlink_to("ipxe-amd64.efi")
    (tmp_path / "outside").write_bytes(b"secret")
    (root / "usr/lib/ipxe/escape.efi").symlink_to(tmp_path / "outside")
    package = Package("ipxe", "1", "trixie", root)
    assert package.file("/usr/lib/ipxe/ipxe.efi").read_bytes() == b"MZ"
    with pytest.raises(PackageMissing, match=r"/usr/lib/ipxe/escape.efi not found in package ipxe"):
        package.file("/usr/lib/ipxe/escape.efi")
    with pytest.raises(PackageMissing) as caught:
        package.file("/usr/lib/ipxe/snponly.efi")
    assert (caught.value.package, caught.value.suite, caught.value.path) == (
        "ipxe",
        "trixie",
        "/usr/lib/ipxe/snponly.efi",
    )


def test_apt_failed_is_retryable_and_keeps_stderr():
    error = AptFailed(["apt-get", "-q", "update"], 100, "W: one\nE: Failed to fetch http://x.example/\n")
    assert error.retryable
    assert "E: Failed to fetch" in str(error)
    assert error.facts["returncode"] == 100


def test_private_apt_options(tmp_path):
    repo = AptRepo(tmp_path, "trixie", "deb [signed-by=/k.gpg] http://m.example/debian trixie main\n")
    options = repo._options()
    pairs = dict(opt.split("=", 1) for opt in options[1::2])
    assert pairs["Dir::Etc::SourceParts"] == "/dev/null"
    assert Path(pairs["Dir::Etc::SourceList"]).read_text() == repo.sources_list
    assert pairs["Dir::State::Lists"].startswith(str(tmp_path))
    assert Path(pairs["Dir::State::status"]).read_text() == ""  # nothing counts as installed
    host = AptRepo(tmp_path, "bookworm", None)
    assert not any(opt.startswith("Dir::Etc::") for opt in host._options())  # the machine's own sources


# --- install_boot_root with a fake cache ------------------------------------------------------------


class FakeCache(DebCache):
    """Packages as small trees in tmp_path; no apt."""

    def __init__(self, base: Path, missing: str | None = None) -> None:
        self.cache_dir = base / "cache"
        self._lock_depth = 0
        self._checked = set()
        self.missing = missing
        self.trees: dict[str, Package] = {}
        contents = {
            "ipxe": {
                "usr/lib/ipxe/undionly.kpxe": b"undi",
                "usr/lib/ipxe/ipxe-amd64.efi": b"ipxe-efi",
                "usr/lib/ipxe/snponly.efi": b"snp",
            },
            "shim-signed": {"usr/lib/shim/shimx64.efi.signed": b"shim"},
            "grub-efi-amd64-signed": {"usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed": b"grub"},
            "linux-image-6.1.0-9-amd64": {
                "boot/vmlinuz-6.1.0-9-amd64": b"kernel",
                "lib/modules/6.1.0-9-amd64/kernel/drivers/x.ko": b"\x7fELF",
            },
            "busybox-static": {"bin/busybox": b"bb"},
        }
        for name, files in contents.items():
            root = base / "trees" / name
            for rel, data in files.items():
                if name == self.missing and rel.startswith("usr/lib/shim"):
                    continue
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
            if name == "ipxe":
                (root / "usr/lib/ipxe/ipxe.efi").symlink_to("ipxe-amd64.efi")
            suite = "trixie" if name == "ipxe" else "bookworm"
            self.trees[name] = Package(name, "1.0-1", suite, root)

    def get(self, package: str, suite: str = HOST) -> Package:
        return self.trees[package]

    def kernel(self) -> Package:
        return self.trees["linux-image-6.1.0-9-amd64"]

    def ipxe(self) -> Package:
        return self.trees["ipxe"]


def test_install_boot_root_layout_manifest_and_second_run(tmp_path):
    dest = tmp_path / "root"
    first = install_boot_root(dest, cache=FakeCache(tmp_path))
    expected = {rel for rel, _, _ in LAYOUT}
    assert {f.path for f in first.files} == expected
    assert set(first.changed) == expected
    assert (dest / "ipxe.efi").read_bytes() == b"ipxe-efi" and not (dest / "ipxe.efi").is_symlink()
    assert (dest / "grubx64.efi").read_bytes() == b"grub"
    assert (dest / "shimx64.efi").read_bytes() == b"shim"
    assert (dest / "live" / "vmlinuz").read_bytes() == b"kernel"
    assert first.kernel_release == "6.1.0-9-amd64"
    assert first.kernel_modules.name == "6.1.0-9-amd64"
    assert first.busybox.read_bytes() == b"bb"
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["files"]["grubx64.efi"]["source"] == "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
    assert manifest["packages"]["ipxe"] == {"version": "1.0-1", "suite": "trixie"}
    assert sorted(read_manifest(dest), key=lambda f: f.path) == sorted(first.files, key=lambda f: f.path)

    second = install_boot_root(dest, cache=FakeCache(tmp_path / "again"))
    assert second.changed == ()
    (dest / "snponly.efi").write_bytes(b"tampered")
    third = install_boot_root(dest, cache=FakeCache(tmp_path / "third"))
    assert third.changed == ("snponly.efi",)


def test_install_boot_root_names_the_missing_package(tmp_path):
    with pytest.raises(PackageMissing, match="shim-signed") as caught:
        install_boot_root(tmp_path / "root", cache=FakeCache(tmp_path, missing="shim-signed"))
    assert caught.value.package == "shim-signed"
    assert caught.value.path == "/usr/lib/shim/shimx64.efi.signed"


def test_qemu_roms_folder_of_the_ipxe_suite(tmp_path):
    cache = FakeCache(tmp_path)
    cache.ipxe_suite = "trixie"
    roms = tmp_path / "trees" / "ipxe-qemu" / "usr" / "share" / "qemu"
    roms.mkdir(parents=True)
    (roms / "efi-virtio.rom").write_bytes(b"\x55\xaa")
    cache.trees["ipxe-qemu"] = Package("ipxe-qemu", "1.21.1", "trixie", tmp_path / "trees" / "ipxe-qemu")
    assert qemu_roms(cache) == roms.resolve()
