"""Bundles for real: synced into the server's repository, served by ``provision serve`` at /repo/ inside a lab
namespace (loopback and the lab's bridge only: no route to any archive), and installed with apt by the built-in
bundle hook in a chroot of a Debian minbase tree, as the live runner runs a target hook.

- offline and deterministic: two .debs made here, one depending on the other, plus a package from a local
  signed "archive" (file://) the bundle names, resolved against the tree's own package list;
- real: ``jq`` (and its libraries, which a minbase tree lacks) from this machine's Debian archive, through the
  CLI (``provision bundles sync``; no image store: a minimal base), the repository URL taken from
  ``provision.server=`` of the kernel command line as on a PC;
- an unknown package fails ``provision bundles check`` with FILE:LINE.

Needs root, mmdebstrap and the network once (the minbase tree is cached in tests/support/bundles.TREE_CACHE,
keyed by mmdebstrap's arguments); skipped otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.bundles import AptPool, Placed, RepoKey, Repository, Target, Use, load_folder, sync
from provision.lab import Lab
from tests.support.bundles import (
    local_archive,
    make_deb,
    minbase_tree,
    needs_repo_tools,
    needs_root,
    run_hook,
    serve_in,
    tree_copy,
    tree_packages,
)
from tests.support.hooks import builtin_env
from tests.support.paths import DEB_CACHE, REPO

pytestmark = [needs_root, needs_repo_tools]


@pytest.fixture(scope="module")
def minbase() -> Path:
    tree = minbase_tree()
    if tree is None:
        pytest.skip("no Debian minbase tree: needs root, mmdebstrap and the archive once")
    return tree


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(workdir=tmp_path / "lab") as running:
        yield running


def provision(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provision", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def installed(root: Path, *names: str) -> dict[str, str]:
    done = subprocess.run(
        ["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n",
         *names],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return {w[0]: w[1] for w in (line.split() for line in done.stdout.splitlines()) if len(w) == 3 and w[2] == "ii"}


def untouched(root: Path, lists_before: list[str]) -> None:
    """What the hook leaves behind: nothing but the packages."""
    assert not (root / "var/lib/provision/bundle-apt").exists()
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert sorted(p.name for p in (root / "etc/apt/sources.list.d").iterdir()) == []
    assert sorted(p.name for p in (root / "var/lib/apt/lists").iterdir()) == lists_before


def test_offline_bundle_installs_from_the_served_repository(tmp_path: Path, minbase: Path, lab: Lab) -> None:
    root = tree_copy(minbase, tmp_path / "root")
    lists = sorted(p.name for p in (root / "var/lib/apt/lists").iterdir())
    folder = tmp_path / "bundles"
    (folder / "local").mkdir(parents=True)
    make_deb(folder / "local", "provision-test-a", "1.0", "provision-test-b (>= 1.0), provision-test-c",
             {"/usr/share/provision-test/a": "a\n"})  # fmt: skip
    make_deb(folder / "local", "provision-test-b", "1.0", None, {"/usr/share/provision-test/b": "b\n"})
    (folder / "offline.yaml").write_text(
        "name: offline\npackages: [provision-test-c]\n"
        "debs: [local/provision-test-a_1.0_all.deb, local/provision-test-b_1.0_all.deb]\n"
    )
    archive_debs = tmp_path / "archive-debs"
    archive_debs.mkdir()
    entry = local_archive(tmp_path / "archive", [make_deb(archive_debs, "provision-test-c", "2:3.1-1")])
    target = Target("minbase", "bookworm", (entry,), tree_packages(root), "the tree's packages")
    bundles = load_folder(folder)
    placed = {"offline": [Placed(target, (Use("r", "r.yaml", 1, "minbase"),))]}
    state = tmp_path / "state"
    key = RepoKey(state / "secrets" / "repo-gnupg")
    apt = AptPool(tmp_path / "cache", 0)
    try:
        report = sync(bundles, placed, Repository(state / "repo", key), apt)
        again = sync(bundles, placed, Repository(state / "repo", key), apt)
    finally:
        key.close()
    (suite,) = report.suites
    assert suite.added == [
        "provision-test-a_1.0_all.deb", "provision-test-b_1.0_all.deb", "provision-test-c_2%3a3.1-1_all.deb"
    ]  # fmt: skip
    assert suite.published is not None and suite.published.changed and suite.published.packages == 3
    (suite,) = again.suites
    assert (suite.added, suite.removed, suite.published and suite.published.changed) == ([], [], False)

    url = serve_in(lab, tmp_path, state)
    routes = lab.run(["ip", "route", "show"]).stdout
    assert "default" not in routes and routes.strip().splitlines() == [routes.strip().splitlines()[0]]
    params = {"bundle": "offline", "packages": bundles.bundles[0].install_arguments(), "repo_url": f"{url}/repo/"}
    done = run_hook(lab, root, builtin_env("bundle", params))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert installed(root, "provision-test-a", "provision-test-b", "provision-test-c") == {
        "provision-test-a": "1.0", "provision-test-b": "1.0", "provision-test-c": "2:3.1-1"
    }  # fmt: skip
    assert (root / "usr/share/provision-test/a").read_text() == "a\n"
    last = [line for line in out.splitlines() if line.startswith("PROVISION-BUNDLE-INSTALLED")]
    assert last == [
        "PROVISION-BUNDLE-INSTALLED bundle=offline provision-test-a=1.0 provision-test-b=1.0 provision-test-c=2:3.1-1 "
    ]
    gets = [line for line in out.splitlines() if line.startswith(("Get:", "Hit:", "Ign:", "Err:"))]
    assert gets and all("127.0.0.1" in line for line in gets), gets
    untouched(root, lists)


def test_hostile_values_are_refused_before_apt_runs(tmp_path: Path, minbase: Path, lab: Lab) -> None:
    root = tree_copy(minbase, tmp_path / "root")
    hostile = ("; touch /pwned", "$(touch /pwned)", "`touch /pwned`", "a b", "-o=APT::x", "jq\nrm -rf /")
    for value in hostile:
        for params in (
            {"bundle": "b", "packages": value.splitlines(), "repo_url": "http://127.0.0.1:1/repo/"},
            {"bundle": value, "packages": ["jq"], "repo_url": "http://127.0.0.1:1/"},
            {"bundle": "b", "packages": ["jq"], "repo_url": "http://127.0.0.1:1/", "suite": value},
            {"bundle": "b", "packages": ["jq"], "repo_url": f"http://127.0.0.1:1/{value}"},
        ):
            done = run_hook(lab, root, builtin_env("bundle", params), timeout=60)
            assert done.returncode == 1, (params, done.stdout, done.stderr)
            assert done.stderr.splitlines()[-1].startswith("bundle: "), done.stderr
            assert "apt-get update" not in done.stdout
            if params["repo_url"] == "http://127.0.0.1:1/repo/" or "suite" in params or params["bundle"] != "b":
                assert done.stderr.startswith("bundle: "), done.stderr  # refused before any fetch
    assert not (root / "pwned").exists() and not (root / "var/lib/provision/bundle-apt").exists()


def _recipes(tmp_path: Path, packages: str) -> Path:
    folder = tmp_path / "recipes"
    (folder / "bundles").mkdir(parents=True)
    (folder / "r.yaml").write_text("name: r\ndefault: true\nimage: minimal\nbundles: [jq]\n")
    (folder / "bundles" / "jq.yaml").write_text(f"name: jq\ndescription: JSON on the command line\n{packages}")
    return folder


@pytest.fixture(scope="module")
def archive_reachable(tmp_path_factory: pytest.TempPathFactory) -> None:
    """This machine's Debian archive answers (its lists can be fetched, or are cached): else skip."""
    if shutil.which("apt-get") is None:
        pytest.skip("no apt")
    folder = _recipes(tmp_path_factory.mktemp("reach"), "packages: [jq]\n")
    done = provision("bundles", "check", str(folder), "--images", str(folder), "--cache", str(DEB_CACHE))
    if done.returncode != 0:
        pytest.skip(f"this machine's Debian archive cannot be read: {done.stderr.strip()[-300:]}")


def test_unknown_package_fails_bundles_check_with_file_and_line(tmp_path: Path, archive_reachable: None) -> None:
    folder = _recipes(tmp_path, "packages:\n  - jq\n  - provision-no-such-package\n")
    images = tmp_path / "images"
    images.mkdir()
    done = provision("bundles", "check", str(folder), "--images", str(images), "--cache", str(DEB_CACHE))
    assert done.returncode == 1
    line = done.stderr.splitlines()[0]
    assert line.startswith(f"{folder / 'bundles' / 'jq.yaml'}:5: packages[1]: package 'provision-no-such-package' "
                           "is not in the archive of image minimal (")  # fmt: skip
    assert done.stderr.splitlines()[-1] == "provision: error: 1 problem(s) found"


def test_real_package_with_its_dependencies_synced_served_and_installed(
    tmp_path: Path, minbase: Path, lab: Lab, archive_reachable: None
) -> None:
    root = tree_copy(minbase, tmp_path / "root")
    lists = sorted(p.name for p in (root / "var/lib/apt/lists").iterdir())
    assert not installed(root, "jq", "libjq1", "libonig5")
    folder = _recipes(tmp_path, "packages: [jq]\n")
    images, state = tmp_path / "images", tmp_path / "state"
    images.mkdir()
    args = [str(folder), "--images", str(images), "--cache", str(DEB_CACHE), "--state-dir", str(state)]
    done = provision("bundles", "sync", *args)
    assert done.returncode == 0, done.stderr
    assert "suite bookworm: 3 added, 0 removed; index published (3 packages)" in done.stdout, done.stdout
    for name in ("jq", "libjq1", "libonig5"):
        assert f"    + {name}_" in done.stdout
    again = provision("bundles", "sync", *args)
    assert "suite bookworm: 0 added, 0 removed; index unchanged (3 packages)" in again.stdout, again.stdout

    url = serve_in(lab, tmp_path, state)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"BOOT_IMAGE=/vmlinuz quiet provision.server={url} provision.mac=52:54:00:12:34:56\n")
    params = {"bundle": "jq", "packages": ["jq"]}  # repo_url, suite, key: the hook's defaults, as in a plan
    done = run_hook(lab, root, builtin_env("bundle", params), cmdline=cmdline)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    versions = installed(root, "jq", "libjq1", "libonig5")
    assert sorted(versions) == ["jq", "libjq1", "libonig5"]
    (record,) = [line for line in out.splitlines() if line.startswith("PROVISION-BUNDLE-INSTALLED")]
    assert sorted(record.split()[2:]) == sorted(f"{k}={v}" for k, v in versions.items())
    assert f"from {url}/repo/ (bookworm)" in out
    run = lab.run(["chroot", str(root), "jq", "-n", "1+1"])
    assert run.stdout.strip() == "2"
    untouched(root, lists)
