"""Bundles without apt or the network: the bundle file (schema, FILE:LINE problems), a folder's bundles, a recipe's
``bundles:`` (unknown names located in the recipe, plan entries after the recipe's hooks), and what a bundle
hook's output says it installed (kept with the run).

apt, the repository and the install itself: tests/functional/test_bundles_install.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.bundles import PackageSpec, check_folder
from provision.hooks import load_catalog
from provision.recipes import check_dir, render_plan
from provision.store.records import HookRecord
from provision.wire.hooks import INSTALLED_MARKER, installed_packages
from tests.support.cli import run
from tests.support.paths import REPO

FACTS = {"mac": "52:54:00:12:34:56", "serial": "ABC123", "firmware": "uefi"}


def bundle(folder: Path, name: str, text: str) -> Path:
    (folder / "bundles").mkdir(parents=True, exist_ok=True)
    path = folder / "bundles" / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "parsed", "argument"),
    [
        ("hello", PackageSpec("hello"), "hello"),
        ("hello=2.10-3", PackageSpec("hello", "==", "2.10-3"), "hello=2.10-3"),
        ("kalzium (>= 4:22)", PackageSpec("kalzium", ">=", "4:22"), "kalzium"),
        ("libc6 (= 2.36-9)", PackageSpec("libc6", "=", "2.36-9"), "libc6=2.36-9"),
        ("g++", PackageSpec("g++"), "g++"),
    ],
)
def test_package_specs(text: str, parsed: PackageSpec, argument: str) -> None:
    assert PackageSpec.parse(text) == parsed and parsed.apt_argument == argument


@pytest.mark.parametrize("text", ["Hello", "-o", "hello; rm -rf /", "a", "hello (~> 1)", "hello=", "$(reboot)", ""])
def test_bad_package_specs(text: str) -> None:
    with pytest.raises(ValueError, match="is not NAME"):
        PackageSpec.parse(text)


def test_the_shipped_bundles_and_recipes_check() -> None:
    recipes, problems = check_dir(REPO / "recipes", load_catalog())
    assert problems == []
    assert recipes.bundles.names == ["science", "typing"]


def test_bundle_problems_are_file_line_key(tmp_path: Path) -> None:
    bad = bundle(tmp_path, "bad", "name: other\npackages:\n  - hello\n  - 'rm -rf /'\ncolour: red\ntimeout: 5\n")
    twice = bundle(tmp_path, "twice", "name: twice\npackages: [hello, jq, hello]\n")
    empty = bundle(tmp_path, "empty", "name: empty\n")
    hooked = bundle(tmp_path, "hooked", "name: hooked\npackages: [hello]\nhook: nosuchhook\n")
    debs = bundle(tmp_path, "debs", "name: debs\ndebs: [../outside.deb, missing.deb, notadeb.txt]\n")
    found, problems = check_folder(tmp_path / "bundles", load_catalog())
    assert found.names == []
    lines = sorted(str(p) for p in problems)
    assert f"{bad}:4: packages[1]: 'rm -rf /' is not NAME" in "\n".join(lines)
    assert any(line.startswith(f"{bad}:5: colour: ") for line in lines)
    assert any(line.startswith(f"{bad}:6: timeout: ") for line in lines)
    assert f"{twice}:2: packages[2]: package 'hello' is already listed as packages[0]" in lines
    assert any(line.startswith(f"{empty}:1: ") and "at least one package" in line for line in lines)
    assert any(line.startswith(f"{hooked}:3: hook: unknown hook 'nosuchhook'") for line in lines)
    assert any(line.startswith(f"{debs}:2: debs[0]: ") and "relative to the bundle's folder" in line for line in lines)
    assert any(line.startswith(f"{debs}:2: debs[2]: ") and "a .deb file" in line for line in lines)


def test_a_file_named_otherwise_and_a_missing_deb(tmp_path: Path) -> None:
    other = bundle(tmp_path, "other", "name: science\npackages: [hello]\n")
    missing = bundle(tmp_path, "local", "name: local\ndebs:\n  - tools/outil_1.0_all.deb\n")
    _, problems = check_folder(tmp_path / "bundles")
    assert sorted(str(p) for p in problems) == sorted(
        [
            f"{other}:1: name: 'science' differs from the file's name 'other.yaml': a bundle is named after its file",
            f"{missing}:3: debs[0]: tools/outil_1.0_all.deb: no such file in {tmp_path / 'bundles'}",
        ]
    )


RECIPE = """name: lycee
default: true
image: educ
hooks:
  - name: hostname
    params: {hostname: "lycee-{{ serial | lower }}"}
bundles:
  - science
  - typing
"""


def recipe_folder(tmp_path: Path, recipe: str = RECIPE) -> Path:
    folder = tmp_path / "recipes"
    folder.mkdir(parents=True)
    (folder / "lycee.yaml").write_text(recipe)
    bundle(folder, "science", "name: science\npackages: [geogebra, kalzium=4:22.12.3-1]\ntimeout: 1200\n")
    bundle(folder, "typing", "name: typing\npackages: [klavaro]\non_failure: warn\nhook: zram-swap\n")
    return folder


def test_a_recipes_bundles_become_bundle_hooks_after_its_own(tmp_path: Path) -> None:
    recipes, problems = check_dir(recipe_folder(tmp_path), load_catalog())
    assert problems == []
    [loaded] = recipes.recipes
    plan = render_plan(loaded, dict(FACTS))
    assert plan.bundles == ["science", "typing"]
    assert [(h["name"], h["where"], h["on_failure"], h["timeout"]) for h in plan.hooks] == [
        ("hostname", "target", "fail", 60),
        ("bundle", "target", "fail", 1260),
        ("bundle", "target", "warn", 960),
        ("zram-swap", "target", "warn", 60),  # its header's
    ]
    science = plan.hooks[1]["params"]
    assert (science["bundle"], science["packages"], science["timeout"]) == (
        "science",
        ["geogebra", "kalzium=4:22.12.3-1"],
        1200,
    )
    assert plan.hooks[0]["params"]["hostname"] == "lycee-abc123"


def test_an_unknown_bundle_is_located_in_the_recipe(tmp_path: Path) -> None:
    folder = recipe_folder(tmp_path, RECIPE.replace("  - typing\n", "  - typing\n  - sciense\n"))
    code, _, err = run("recipes", "check", str(folder))
    assert code == 1
    assert err.splitlines()[0] == (
        f"{folder / 'lycee.yaml'}:10: bundles[2]: unknown bundle 'sciense' (known in {folder / 'bundles'}: "
        "science, typing)"
    )
    folder2 = recipe_folder(tmp_path / "twice", RECIPE.replace("  - typing\n", "  - science\n"))
    code, _, err = run("recipes", "check", str(folder2))
    assert code == 1 and f"{folder2 / 'lycee.yaml'}:7: bundles: bundle 'science' is listed twice" in err


def test_recipes_check_and_explain_show_bundles(tmp_path: Path) -> None:
    folder = recipe_folder(tmp_path)
    code, out, _ = run("recipes", "check", str(folder))
    assert code == 0 and "hooks: hostname  bundles: science, typing" in out
    assert f"{folder / 'bundles'}: 2 bundles OK" in out


INSTALL_OUTPUT = f"""bundle science: apt-get update from http://198.18.0.1:8080/repo/ (bookworm)
bundle science: installed geogebra=2:4.0.34.0+dfsg1-9
{INSTALLED_MARKER} bundle=science geogebra=2:4.0.34.0+dfsg1-9 libjs-jquery=3.6.1+dfsg+~3.5.14-1 \n"""


def test_what_a_bundle_hook_installed_is_read_from_its_output() -> None:
    assert installed_packages(INSTALL_OUTPUT) == {
        "geogebra": "2:4.0.34.0+dfsg1-9",
        "libjs-jquery": "3.6.1+dfsg+~3.5.14-1",
    }
    assert installed_packages(f"{INSTALLED_MARKER} bundle=empty \n") == {}
    assert installed_packages("hostname: poste-1\n") is None
    assert installed_packages(f"echo {INSTALLED_MARKER} bundle=x a=1\n") is None  # only a line that starts so
    record = HookRecord("r", 1, "bundle", "target", "fail", 0, False, 3.0, INSTALL_OUTPUT, 200, None, 0.0)
    assert record.to_dict()["installed"]["geogebra"] == "2:4.0.34.0+dfsg1-9"
    other = HookRecord("r", 0, "hostname", "target", "fail", 0, False, 0.1, "hostname: x\n", 12, None, 0.0)
    assert "installed" not in other.to_dict()
