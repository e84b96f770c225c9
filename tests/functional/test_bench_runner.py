"""The benchmarks run as their docstrings say from a fresh clone (issue 16): ``python bench/NAME.py`` from any
folder, and ``scripts/bench`` lists them and refuses an unknown name. Only ``--help`` runs: nothing is timed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHES = sorted(p.stem for p in (REPO / "bench").glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    dest = tmp_path_factory.mktemp("clone") / "provision"
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True, timeout=120)
    return dest


def test_every_bench_is_listed() -> None:
    assert {"writer", "boot_burst", "image_serving", "image_import", "rack"} <= set(BENCHES)


def test_rack_help_names_its_transports_and_scenarios() -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "rack.py"), "--help"], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for word in ("unicast", "multicast", "udpcast", "late", "slow", "kill", "loss", "--rate"):
        assert word in done.stdout, word


@pytest.mark.parametrize("name", BENCHES)
def test_bench_help_runs_from_a_fresh_clone(clone: Path, name: str, tmp_path: Path) -> None:
    script = clone / "bench" / f"{name}.py"
    assert script.is_file(), f"bench/{name}.py is not committed"
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, f"bench/{name}.py --help from a clone: rc {done.returncode}\n{done.stderr}"
    assert "usage:" in done.stdout


def test_scripts_bench_lists_every_bench() -> None:
    done = subprocess.run(["bash", str(REPO / "scripts" / "bench")], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(BENCHES)


def test_scripts_bench_refuses_an_unknown_name() -> None:
    done = subprocess.run(["bash", str(REPO / "scripts" / "bench"), "no_such_bench"], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "no benchmark named 'no_such_bench'" in done.stderr
    assert "writer" in done.stderr
