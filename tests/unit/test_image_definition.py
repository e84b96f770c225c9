"""Image definitions: the shipped ones load; unknown keys, wrong types, bad package names are located."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.builder.definition import (
    DebianDefinition,
    TinyDefinition,
    check_definitions,
    load_definition,
    parse_definition,
    parse_size,
)
from provision.errors import ConfigError
from tests.support.paths import IMAGES


def problems(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "img.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_definition(path)
    return [str(p).replace(str(path), "img.yaml") for p in caught.value.problems]


def test_shipped_definitions_are_valid():
    loaded, found = check_definitions(IMAGES)
    assert found == []
    names = {d.name: d for d in loaded}
    assert {"tiny", "educ", "educ-light"} <= set(names)
    tiny = names["tiny"].spec
    assert isinstance(tiny, TinyDefinition)
    assert "provision.callback=http://198.18.0.1:8080/api/v1/firstboot" in tiny.boot.cmdline
    educ = names["educ"].spec
    assert isinstance(educ, DebianDefinition)
    assert {"gcompris-qt", "tuxpaint", "tuxmath", "ktuberling"} <= set(educ.all_packages())
    assert educ.locale == "fr_FR.UTF-8"
    assert educ.keyboard.layout == "fr"
    light = names["educ-light"].spec
    assert isinstance(light, DebianDefinition)
    assert len(light.all_packages()) < len(educ.all_packages())


def test_debian_mini_is_a_small_real_debian_that_calls_back():
    loaded = load_definition(IMAGES / "debian-mini.yaml")
    mini = loaded.spec
    assert isinstance(mini, DebianDefinition)
    assert (mini.name, mini.variant, mini.install_recommends, mini.components) == (
        "debian-mini",
        "minbase",
        False,
        ["main"],
    )
    assert {"linux-image-amd64", "systemd", "systemd-sysv", "openssh-server", "curl"} == set(mini.all_packages())
    assert mini.boot.serial and mini.boot.cmdline == "provision.callback=http://198.18.0.1:8080/api/v1/firstboot"
    assert mini.enable_units == ["systemd-networkd.service"]
    [overlay] = loaded.overlay_dirs()
    network = (overlay / "etc" / "systemd" / "network" / "20-wired.network").read_text()
    assert "Name=en* eth*" in network and "DHCP=yes" in network


def test_minimal_tiny_definition(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nbuilder: tiny\n")
    loaded = load_definition(path)
    assert loaded.spec.disk.size == 0  # auto
    assert loaded.spec.disk.chunk_size == 4 << 20
    assert len(loaded.sha256) == 64


def test_unknown_key_is_located(tmp_path):
    text = "name: t\nbuilder: tiny\ndisk:\n  size: 128MiB\n  sise: 3\n"
    assert problems(text, tmp_path) == ["img.yaml:5: disk.sise: unknown key"]


def test_wrong_type_is_located(tmp_path):
    text = "name: t\nbuilder: debian\npackages:\n  base: [hello]\ninstall_recommends: 'yes'\nboot:\n  timeout: soon\n"
    found = problems(text, tmp_path)
    assert any(p.startswith("img.yaml:5: install_recommends:") for p in found), found
    assert any(p.startswith("img.yaml:7: boot.timeout:") for p in found), found


def test_bad_package_names_are_located(tmp_path):
    text = "name: t\nbuilder: debian\npackages:\n  base:\n    - hello\n    - Bad_Name\n  games:\n    - 'x y'\n"
    found = problems(text, tmp_path)
    assert found[0].startswith("img.yaml:6: packages.base[1]: 'Bad_Name' is not a Debian package name"), found
    assert found[1].startswith("img.yaml:8: packages.games[0]: 'x y' is not a Debian package name"), found


def test_bad_extra_deb_is_located(tmp_path):
    found = problems("name: t\nbuilder: tiny\nextra_debs:\n  - hello\n  - UPPER\n", tmp_path)
    assert found == [
        "img.yaml:5: extra_debs[1]: 'UPPER' is not a Debian package name "
        "(lower-case letters, digits, '+', '-', '.'; 2 or more)"
    ]


def test_builder_is_required_and_known(tmp_path):
    assert problems("name: t\n", tmp_path)[0].startswith("img.yaml:1: builder: required key is missing")
    assert problems("name: t\nbuilder: nix\n", tmp_path)[0].startswith("img.yaml:2: builder: unknown builder 'nix'")


def test_tiny_keys_are_not_debian_keys(tmp_path):
    assert problems("name: t\nbuilder: tiny\npackages: {a: [hello]}\n", tmp_path) == [
        "img.yaml:3: packages: unknown key"
    ]


def test_kernel_arguments_cannot_break_grub_cfg(tmp_path):
    found = problems("name: t\nbuilder: tiny\nboot:\n  cmdline: 'quiet\" ; reboot'\n", tmp_path)
    assert found[0].startswith("img.yaml:4: boot.cmdline: kernel argument 'quiet\"'")


def test_overlay_must_exist_and_stay_inside(tmp_path):
    (tmp_path / "overlay" / "a").mkdir(parents=True)
    text = "name: t\nbuilder: tiny\noverlays:\n  - overlay/a\n  - overlay/missing\n  - ../etc\n"
    found = problems(text, tmp_path)
    assert found[0].startswith("img.yaml:6: overlays[2]: '../etc': give a path relative"), found
    (tmp_path / "img.yaml").write_text("name: t\nbuilder: tiny\noverlays:\n  - overlay/a\n  - overlay/missing\n")
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path / "img.yaml")
    assert [p.line for p in caught.value.problems] == [5]
    assert "overlay/missing: no such folder" in str(caught.value)


def test_debian_image_needs_packages(tmp_path):
    assert problems("name: t\nbuilder: debian\n", tmp_path) == ["img.yaml:1: packages: a debian image needs packages"]


def test_yaml_errors_and_duplicates(tmp_path):
    assert problems("name: [\n", tmp_path)[0].startswith("img.yaml:2: YAML syntax error")
    assert "duplicate key" in problems("name: t\nname: u\nbuilder: tiny\n", tmp_path)[0]
    assert problems("- a\n", tmp_path) == ["img.yaml:1: an image definition is a YAML mapping"]


@pytest.mark.parametrize(
    ("value", "size"),
    [("128MiB", 128 << 20), ("4G", 4 << 30), ("1 GiB", 1 << 30), (4096, 4096), ("auto", 0), ("512", 512)],
)
def test_sizes(value, size):
    assert parse_size(value) == size


def test_bad_size_is_located(tmp_path):
    found = problems("name: t\nbuilder: tiny\ndisk:\n  size: 12 parsecs\n", tmp_path)
    assert found[0].startswith("img.yaml:4: disk.size: '12 parsecs' is not a size")


def test_esp_too_small_for_fat32(tmp_path):
    found = problems("name: t\nbuilder: tiny\ndisk:\n  esp_size: 8MiB\n", tmp_path)
    assert found[0].startswith("img.yaml:4: disk.esp_size:")


def test_duplicate_image_names(tmp_path):
    (tmp_path / "a.yaml").write_text("name: same\nbuilder: tiny\n")
    (tmp_path / "b.yaml").write_text("name: same\nbuilder: tiny\n")
    loaded, found = check_definitions(tmp_path)
    assert len(loaded) == 2
    assert len(found) == 1 and "'same' is also defined in" in found[0].message


def test_parse_definition_uses_display_name(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_definition("name: t\nbuilder: tiny\nbogus: 1\n", tmp_path / "x.yaml", display="images/x.yaml")
    assert str(caught.value) == "images/x.yaml:3: bogus: unknown key"
