"""The layer contracts (pyproject.toml, checked by import-linter in scripts/test) hold, and they bite: a copy of
the package with one forbidden import added fails `lint-imports`, naming the contract it breaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.paths import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = {
    c["id"]: c["name"]
    for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed in this venv")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the package and contracts under ``root`` (found first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and its contracts, copied (the test changes the copy, never the repository)."""
    shutil.copytree(REPO / "provision", tmp_path / "provision", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(root: Path, module: str, line: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = root / module.replace(".", "/") / "__init__.py"
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text, path
    path.write_text(text.replace(marker, f"{marker}\n{line}  # noqa\n", 1))


def test_the_repository_keeps_every_contract() -> None:
    done = lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    report = " ".join(done.stdout.split())
    assert all(f"{name} KEPT" in report for name in CONTRACTS.values()), report
    assert f"{len(CONTRACTS)} kept, 0 broken" in report


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the agent takes a server module or a dependency the live environment does not have
        ("provision.agent.fetch", "import provision.runs", "agent"),
        ("provision.agent.main", "import pydantic", "agent"),
        # a lower layer reaching up
        ("provision.store.db", "import provision.runs", "layers"),
        ("provision.wire.api", "import provision.store", "layers"),
        # production code using the lab
        ("provision.live.build", "import provision.lab.qemu", "lab"),
        # a cycle between two modules of one package, and between two packages
        ("provision.images.chunks", "import provision.images.store", "acyclic"),
        ("provision.states", "import provision.store", "acyclic"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(copy: Path, module: str, line: str, broken: str) -> None:
    add_import(copy, module, line)
    done = lint(copy)
    assert done.returncode == 1, done.stdout + done.stderr
    report = " ".join(done.stdout.split())
    assert f"{CONTRACTS[broken]} BROKEN" in report, report
