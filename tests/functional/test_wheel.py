"""provision built as a wheel and installed into a fresh venv works away from the repository.

The wheel is built from a copy of the source tree (``pip wheel --no-deps``: setup.py's build_py hook copies
pxe/, hooks/, recipes/ and images/ into provision/_data/) and installed with ``pip install WHEEL`` into a venv
made by ``python -m venv --without-pip`` (this venv's pip installs into it with ``--python``: the same
result without running ensurepip), dependencies from the package index through pip's cache. Every command
runs with its working directory outside the repository and no PYTHONPATH, so nothing comes from the source
tree. From that venv: ``provision serve`` renders the iPXE script and the GRUB configs (they match
tests/golden/ once the address and token are normalised), ``provision recipes check`` checks the shipped
sample recipes, and the shipped image definitions load with their overlays. About 15 s with a warm pip
cache; skipped (marker ``network``) when pip, venv or the package index is unavailable.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from provision import resources
from provision.cli.facts import default_recipes_dir
from provision.config import load_config
from provision.resources import DATA_NAMES
from tests.support.paths import GOLDEN, REPO
from tests.support.wait import wait_for

MAC = "52:54:00:12:34:56"
TOP_NOT_COPIED = {".git", ".venv", "build", "dist", "state", "provision.egg-info"}  # artefacts at the top
NOT_COPIED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"
)


def _not_copied(folder: str, names: list[str]) -> set[str]:
    """copytree's ignore: the top level's VCS, venv and build artefacts, caches anywhere."""
    top = TOP_NOT_COPIED.intersection(names) if Path(folder) == REPO else set()
    return top | NOT_COPIED(folder, names)


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put the source tree or another venv on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}


def _index_url() -> str:
    """The package index pip uses (PIP_INDEX_URL, pip's configuration, else PyPI)."""
    if url := os.environ.get("PIP_INDEX_URL"):
        return url.split()[0]
    got = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    )
    return got.stdout.strip() if got.returncode == 0 and got.stdout.strip() else "https://pypi.org/simple"


def _unavailable() -> str | None:
    """Why the wheel cannot be built and installed here (None: it can)."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        return f"pip is not available to {sys.executable}"
    if subprocess.run([sys.executable, "-c", "import venv"], capture_output=True).returncode != 0:
        return "the venv module is missing (Debian: apt install python3-venv)"
    url = urlsplit(_index_url())
    if url.scheme in {"http", "https"} and url.hostname:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=5).close()
        except OSError as exc:
            return f"no network: the package index {url.hostname}:{port} is unreachable ({exc})"
    return None


def _run(argv: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{argv}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    new_in_tree: set[str]  # files the build added to the copied source tree
    venv: Path
    outside: Path  # the working directory of every command: not the repository

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """provision's wheel, built from a copy of this tree and installed into a fresh venv."""
    if reason := _unavailable():
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv, outside = base / "src", base / "dist", base / "venv", base / "elsewhere"
    shutil.copytree(REPO, src, ignore=_not_copied, symlinks=True)
    outside.mkdir()
    before = _files(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src], cwd=outside)
    (wheel,) = dist.glob("provision-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=outside)
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", wheel], cwd=outside)
    return Installed(wheel, _files(src) - before, venv, outside)


@pytest.mark.network
def test_wheel_ships_templates_hooks_recipes_and_image_definitions(installed: Installed) -> None:
    setup_names = next(
        ast.literal_eval(node.value)
        for node in ast.parse((REPO / "setup.py").read_text()).body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DATA_NAMES" for t in node.targets)
    )
    assert tuple(setup_names) == DATA_NAMES == ("pxe", "hooks", "recipes", "images")
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        record = whl.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
    shipped = {n.removeprefix("provision/_data/") for n in names if n.startswith("provision/_data/")}
    expected = {
        f"{name}/{rel}"
        for name in DATA_NAMES
        for rel in _files(REPO / name)
        if "__pycache__" not in rel and not rel.endswith(".pyc")
    }
    assert shipped == expected
    for must in ("pxe/boot.ipxe.j2", "pxe/grub.cfg.j2", "pxe/grub-host.cfg.j2", "hooks/README.md",
                 "recipes/default.yaml", "images/tiny.yaml", "images/educ.yaml"):  # fmt: skip
        assert must in shipped
    assert any(s.startswith("images/overlay/") for s in shipped)  # files the definitions reference
    assert all(f"provision/_data/{s}," in record for s in shipped)


@pytest.mark.network
def test_building_leaves_nothing_git_would_see(installed: Installed) -> None:
    """What `pip install .` / `pip wheel .` writes into a source tree (build/, provision.egg-info/) is ignored."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    assert installed.new_in_tree, "the build wrote nothing into the tree: the check below proves nothing"
    listed = "\n".join(sorted(installed.new_in_tree)) + "\n"
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input=listed, capture_output=True, text=True
    )
    assert set(ignored.stdout.split()) == installed.new_in_tree


@pytest.mark.network
def test_installed_package_finds_its_data_not_the_checkout(installed: Installed) -> None:
    code = (
        "import json, provision, provision.resources as r\n"
        "print(json.dumps({'package': provision.__file__, 'checkout': str(r.checkout_root()),"
        " 'dirs': {n: str(r.data_dir(n)) for n in r.DATA_NAMES}}))\n"
    )
    found = json.loads(_run([installed.bin / "python", "-c", code], cwd=installed.outside).stdout)
    site = Path(found["package"]).parent
    assert site.is_relative_to(installed.venv) and found["checkout"] == "None"
    for name in DATA_NAMES:
        assert Path(found["dirs"][name]) == site / "_data" / name
        assert (site / "_data" / name).is_dir()


@dataclass
class Serving:
    proc: subprocess.Popen[str]
    url: str


@pytest.fixture
def serving(installed: Installed, tmp_path: Path) -> Iterator[Serving]:
    """``<venv>/bin/provision serve`` on 127.0.0.1, every port 0, with a stand-in live kernel."""
    root = tmp_path / "boot"
    (root / "live").mkdir(parents=True)
    (root / "undionly.kpxe").write_bytes(os.urandom(70_000))
    (root / "live" / "vmlinuz").write_bytes(b"kernel" * 1000)
    (root / "live" / "initrd.img").write_bytes(b"initrd" * 1000)
    ready = tmp_path / "ready.json"
    argv = [
        str(installed.bin / "provision"), "serve", "--address", "127.0.0.1", "--state-dir", str(tmp_path / "state"),
        "--boot-root", str(root), "--http-port", "0", "--tftp-port", "0", "--dhcp-port", "0", "--proxy-port", "0",
        "--ready-file", str(ready),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=installed.outside, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 30, interval=0.05)
        if not ready.exists():
            proc.kill()
            out, err = proc.communicate(timeout=5)
            raise AssertionError(f"serve did not start: rc={proc.returncode}\n{out}\n{err}")
        yield Serving(proc, f"http://127.0.0.1:{json.loads(ready.read_text())['http']}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)


def _as_golden(text: str, url: str) -> str:
    """The rendered text as the golden files hold it: the demo address and port, <TOKEN> for the token."""
    return re.sub(r"provision\.token=[0-9a-f]+", "provision.token=<TOKEN>", text.replace(url, "http://198.18.0.1:8080"))


@pytest.mark.network
def test_installed_serve_renders_ipxe_and_grub(serving: Serving) -> None:
    for path, golden in (
        (f"/boot/{MAC}.ipxe", "boot-live.ipxe"),
        ("/boot/grub/grub.cfg", "grub.cfg"),
        (f"/boot/grub/hosts/{MAC}.cfg", "grub-host-live.cfg"),
    ):
        reply = requests.get(serving.url + path, timeout=10)
        assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text}"
        assert "template error" not in reply.text
        assert _as_golden(reply.text, serving.url) == (GOLDEN / golden).read_text(), path
    assert serving.proc.poll() is None


@pytest.mark.network
def test_wheel_ships_the_dashboard_and_installed_serve_renders_it(installed: Installed, serving: Serving) -> None:
    """The dashboard's templates, static files and catalogues are package data; the installed server renders
    the rack view in French by default and in English (catalogues compiled at load time, no .mo shipped)."""
    dashboard = REPO / "provision" / "dashboard"
    patterns = ("templates/*.html", "static/*", "locale/*/LC_MESSAGES/*.po")
    wanted = {f"provision/dashboard/{p.relative_to(dashboard).as_posix()}" for g in patterns for p in dashboard.glob(g)}
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
    assert wanted and wanted <= names and not any(n.endswith(".mo") for n in names)
    french = requests.get(serving.url + "/", timeout=10)
    assert french.status_code == 200 and '<html lang="fr">' in french.text and "Aucune machine" in french.text
    english = requests.get(serving.url + "/?lang=en", timeout=10)
    assert '<html lang="en">' in english.text and "No machine yet" in english.text
    assert requests.get(serving.url + "/dashboard/static/dashboard.css", timeout=10).status_code == 200


@pytest.mark.network
def test_wheel_ships_the_certificate_templates_and_installed_provision_renders_them(installed: Installed) -> None:
    """The certificates' templates are package data: the installed package renders a certificate page."""
    templates = REPO / "provision" / "certificates" / "templates"
    wanted = {f"provision/certificates/templates/{p.name}" for p in templates.glob("*.html")}
    with zipfile.ZipFile(installed.wheel) as whl:
        assert wanted and wanted <= set(whl.namelist())
    code = (
        "from provision.certificates.labels import Label, labels_html\n"
        "print(labels_html([Label('pc-1', '52:54:00:00:00:01', None, None, None, None, (), None, '2026-12-06')],"
        " lang='en'))\n"
    )
    html = _run([installed.bin / "python", "-c", code], cwd=installed.outside).stdout
    assert "pc-1" in html and "data:image/svg+xml" in html and "Prepared 2026-12-06" in html


@pytest.mark.network
def test_installed_recipes_check_checks_the_sample_recipes(installed: Installed) -> None:
    got = _run([installed.bin / "provision", "recipes", "check"], cwd=installed.outside).stdout
    shipped = installed.venv.glob("lib/python*/site-packages/provision/_data/recipes")
    (recipes,) = list(shipped)
    assert got.startswith(f"{recipes}: 8 recipes OK (default: default)\n")
    checkout = _run([sys.executable, "-m", "provision", "recipes", "check", REPO / "recipes"], cwd=REPO).stdout
    assert got.replace(str(recipes), "recipes") == checkout.replace(str(REPO / "recipes"), "recipes")


@pytest.mark.network
def test_installed_image_definitions_load_with_their_overlays(installed: Installed) -> None:
    code = (
        "from provision.builder.definition import check_definitions\n"
        "from provision.resources import data_dir\n"
        "loaded, problems = check_definitions(data_dir('images'))\n"
        "assert not problems, problems\n"
        "print(' '.join(sorted(d.name for d in loaded)))\n"
        "print(' '.join(str(p.is_dir()) for d in loaded for p in d.overlay_dirs()))\n"
    )
    names, overlays = _run([installed.bin / "python", "-c", code], cwd=installed.outside).stdout.splitlines()
    assert len(names.split()) == len(list((REPO / "images").glob("*.yaml"))) and "tiny" in names.split()
    assert overlays.split() and set(overlays.split()) == {"True"}  # educ's overlay, next to its definition


# ---------------------------------------------------------------- from the checkout (no network needed)
def test_checkout_defaults_are_the_source_folders() -> None:
    """Run from this checkout, every default points at the repository's folders, as before package data."""
    assert resources.checkout_root() == REPO
    assert {name: resources.data_dir(name) for name in DATA_NAMES} == {name: REPO / name for name in DATA_NAMES}
    config = load_config()
    assert (config.templates_dir, config.recipes_dir) == (REPO / "pxe", REPO / "recipes")
    assert default_recipes_dir() == REPO / "recipes"
    with pytest.raises(ValueError, match="unknown data folder"):
        resources.data_dir("docs")  # type: ignore[arg-type]


def test_outside_a_checkout_the_package_data_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(resources, "SOURCE_ROOT", tmp_path)  # like site-packages: no pyproject.toml, no pxe/
    package = Path(resources.__file__).resolve().parent
    assert resources.checkout_root() is None
    assert resources.data_dir("pxe") == package / "_data" / "pxe"
    assert load_config().recipes_dir == package / "_data" / "recipes"
