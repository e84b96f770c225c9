"""Software bundles for tests: tiny .debs, a cached minbase tree, a repository served in a namespace, the
bundle hook run in a chroot.

- ``make_deb(folder, name, version, depends, files)``: a .deb made with ``dpkg-deb --build`` (architecture all).
- ``needs_repo_tools``: skips without apt-ftparchive, gpg, gpgv or dpkg-deb (scripts/setup installs them).
- ``local_archive(folder, packages)``: a signed repository made by provision.bundles.Repository holding the
  .debs ``packages``, and the ArchiveEntry that names it (``file://``): an archive that needs no network.
- ``minbase_tree()``: a Debian ``mmdebstrap --variant=minbase`` tree of this machine's suite, built once and
  kept in ``TREE_CACHE/<key>/tree`` (the key: mmdebstrap's arguments), or None when it cannot be built (no
  network, no root); ``tree_copy(dest)`` copies it (``cp -a``, about a second); ``tree_packages(root)`` lists
  its packages as the image builder records them.
- ``serve_in(lab, tmp)``: ``provision serve`` on 127.0.0.1 inside a lab namespace (only loopback and the
  lab's bridge: no route anywhere else), its URL once ready.
- ``run_hook(lab, root, env, cmdline)``: the built-in bundle hook run as the live runner runs a target hook: a
  chroot of ``root`` with a fresh /proc, /dev bound, a fresh tmpfs on /run holding the script, in private mount
  and PID namespaces inside the lab's network namespace; ``cmdline`` (optional) bound over /proc/cmdline, as
  the live environment's kernel command line would read.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from provision.bootfiles import host_codename, read_machine_sources
from provision.builder.resolve import ArchiveEntry, image_archive
from provision.bundles import KEY_FILE, RepoKey, Repository
from provision.hooks import builtin_dir
from provision.lab import Lab
from tests.support.wait import wait_for

TREE_CACHE = Path(os.environ.get("PROVISION_BUNDLE_TREE_CACHE", "/var/cache/provision/bundle-test"))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("apt-ftparchive", "gpg", "gpgv", "gpgconf", "dpkg-deb")
needs_repo_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)} (scripts/setup: apt-utils, gnupg)"
)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chroot, namespaces)")


def make_deb(
    folder: Path,
    name: str,
    version: str = "1.0",
    depends: str | None = None,
    files: Mapping[str, str] | None = None,
    arch: str = "all",
) -> Path:
    """``folder/NAME_VERSION_ARCH.deb``: control fields and ``files`` (path in the package -> text)."""
    tree = folder / f".{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    control = f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: tests <t@example.org>\n"
    control += f"Depends: {depends}\n" if depends else ""
    (tree / "DEBIAN" / "control").write_text(control + f"Description: {name} for provision's tests\n")
    for rel, text in (files or {}).items():
        path = tree / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    out = folder / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, out], check=True, capture_output=True)
    shutil.rmtree(tree)
    return out


def local_archive(folder: Path, packages: Iterable[Path], suite: str = "bookworm") -> ArchiveEntry:
    """A signed repository under ``folder`` holding ``packages``, as an archive apt reads over file://."""
    key = RepoKey(folder / "gnupg")
    repo = Repository(folder / "archive", key)
    try:
        fingerprint, _made = repo.publish_key()
        names = [repo.add(suite, deb, deb.name).name for deb in packages]
        repo.publish(suite, fingerprint, names)
    finally:
        key.close()
    return ArchiveEntry(f"file://{repo.root}", suite, ("main",), str(repo.root / KEY_FILE))


# ------------------------------------------------------------------------------------------ the minbase tree
def _mmdebstrap_args() -> list[str]:
    codename = host_codename()
    archive = image_archive(read_machine_sources(Path("/etc/apt")), codename, codename, ["main"])
    args = ["--mode=root", "--format=directory", "--variant=minbase", "--architectures=amd64", codename]
    return [*args, "TREE", *(entry.line() for entry in archive)]


def minbase_tree() -> Path | None:
    """The cached minbase tree (built on first use, ~20 s with a warm network), or None when it cannot be."""
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
        return None
    try:
        args = _mmdebstrap_args()
    except Exception:  # no apt source for this machine's suite
        return None
    key = hashlib.sha256("\0".join(args).encode()).hexdigest()[:16]
    entry = TREE_CACHE / key
    tree = entry / "tree"
    TREE_CACHE.mkdir(parents=True, exist_ok=True)
    with (TREE_CACHE / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (entry / "tree.json").is_file():
            return tree
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir()
        new = entry / "tree.new"
        argv = ["mmdebstrap", *(str(new) if a == "TREE" else a for a in args)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            shutil.rmtree(entry, ignore_errors=True)
            return None
        new.rename(tree)
        (entry / "tree.json").write_text(json.dumps({"argv": argv, "packages": tree_packages(tree)}, indent=1))
    return tree


def tree_copy(source: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    return dest


def tree_packages(root: Path) -> dict[str, str]:
    """Package -> version of the tree's installed packages (what the image builder records in provenance)."""
    done = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root / 'var/lib/dpkg'}",
            "-W",
            "-f=${binary:Package}\t${Version}\t${db:Status-Abbrev}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = {}
    for line in done.stdout.splitlines():
        name, version, status = line.split("\t")
        if status.startswith("ii"):
            found[name.split(":")[0]] = version
    return dict(sorted(found.items()))


# ------------------------------------------------------------------------------------- the server, the hook
def serve_in(lab: Lab, tmp: Path, state: Path) -> str:
    """``provision serve`` in ``lab`` on 127.0.0.1 (every port chosen by the kernel), serving ``state``; its URL."""
    boot = tmp / "boot"
    boot.mkdir(exist_ok=True)
    ready = tmp / "ready.json"
    argv = [
        sys.executable, "-m", "provision", "serve", "--address", "127.0.0.1", "--state-dir", str(state),
        "--boot-root", str(boot), "--http-port", "0", "--tftp-port", "0", "--dhcp-port", "0", "--proxy-port", "0",
        "--ready-file", str(ready),
    ]  # fmt: skip
    proc = lab.popen(argv, log_name="serve", cwd=str(Path(__file__).resolve().parents[2]))
    wait_for(lambda: ready.exists() or proc.poll() is not None, 30, interval=0.05)
    if not ready.exists():
        raise AssertionError(f"serve did not start: {lab.log_path('serve').read_text()}")
    return f"http://127.0.0.1:{json.loads(ready.read_text())['http']}"


_CHROOT = """set -e
root=$1
mount --make-rprivate /
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mkdir "$root/run/provision-hook"
cp "$2" "$root/run/provision-hook/bundle"
if [ -n "$3" ]; then mount --bind "$3" "$root/proc/cmdline"; fi
exec chroot "$root" /run/provision-hook/bundle
"""


def run_hook(
    lab: Lab, root: Path, env: Mapping[str, str], cmdline: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The built-in bundle hook run in a chroot of ``root`` as the live runner does (see the module docstring),
    with ``env`` only (and Debian's PATH, HOME, LANG)."""
    clean = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **env}
    argv = ["env", "-i", *(f"{k}={v}" for k, v in clean.items())]
    argv += ["unshare", "--mount", "--pid", "--fork", "sh", "-c", _CHROOT, "sh", str(root)]
    argv += [str(builtin_dir() / "bundle"), str(cmdline or "")]
    return lab.run(argv, check=False, timeout=timeout)
