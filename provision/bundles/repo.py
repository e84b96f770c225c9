"""The local Debian repository the server serves at ``/repo/`` (``repo_dir``, default ``<state>/repo``).

Layout::

    provision.gpg, provision.asc                 the signing key's public half (binary, armored)
    pool/<suite>/NAME_VERSION_ARCH.deb           the packages of the bundles of the images on <suite>
    dists/<suite>/InRelease                      Release, clear-signed (what apt reads first)
    dists/<suite>/Release, Release.gpg           Release and its detached signature
    dists/<suite>/main/binary-amd64/Packages     the index (apt-ftparchive), and Packages.gz
    dists/<suite>/main/binary-amd64/by-hash/SHA256/<sha256>   the indexes by hash (Acquire-By-Hash)

One suite per Debian release the images use, one component (``main``), one architecture (``amd64``: its
index lists ``all`` packages too). An index is published only when the pool's content changed (or the key
did): the new files are made aside, then each one renamed into place, InRelease last, while the indexes of the
previous Release stay reachable by hash, so a PC fetching during a sync never mixes two generations. A file
that leaves the pool is deleted after the new index is in place.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from provision.bundles.debs import DebInfo, parse_pool_name
from provision.bundles.errors import RepoError
from provision.bundles.keys import RepoKey, verifies

log = logging.getLogger(__name__)

COMPONENT = "main"
ARCH = "amd64"
KEY_FILE = "provision.gpg"
KEY_ASC = "provision.asc"
ORIGIN = "provision"
FTPARCHIVE_TIMEOUT = 600.0
_SUITE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def _check_suite(suite: str) -> str:
    if not _SUITE.fullmatch(suite):
        raise RepoError(f"{suite!r} is not a suite name (lower-case letters, digits, '-')", suite=suite)
    return suite


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ftparchive(args: list[str], cwd: Path) -> bytes:
    argv = ["apt-ftparchive", *args]
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=FTPARCHIVE_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise RepoError("apt-ftparchive not found: install Debian's apt-utils", tool="apt-ftparchive") from exc
    except subprocess.TimeoutExpired as exc:
        raise RepoError(f"apt-ftparchive timed out after {FTPARCHIVE_TIMEOUT:.0f} s", argv=argv) from exc
    if done.returncode != 0 or b"\nE: " in b"\n" + done.stderr:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        raise RepoError(f"apt-ftparchive {args[-2] if len(args) > 1 else ''} failed: {stderr[-800:]}", argv=argv)
    return done.stdout


def sorted_index(text: bytes) -> bytes:
    """A Packages index with its stanzas in file name order (apt-ftparchive lists them as the folder does)."""
    stanzas = [s.strip(b"\n") for s in re.split(rb"\n\s*\n", text) if s.strip()]

    def filename(stanza: bytes) -> bytes:
        match = re.search(rb"^Filename: (.*)$", stanza, re.MULTILINE)
        return match.group(1) if match else stanza

    return b"".join(s + b"\n\n" for s in sorted(stanzas, key=filename))


@dataclass(frozen=True)
class Published:
    """What publishing one suite's index did."""

    suite: str
    changed: bool
    packages: int


class Repository:
    """The repository under ``root``, signed with ``key``."""

    def __init__(self, root: Path, key: RepoKey) -> None:
        self.root = root
        self.key = key

    def pool(self, suite: str) -> Path:
        return self.root / "pool" / _check_suite(suite)

    def dist(self, suite: str) -> Path:
        return self.root / "dists" / _check_suite(suite)

    def index_dir(self, suite: str) -> Path:
        return self.dist(suite) / COMPONENT / f"binary-{ARCH}"

    def suites(self) -> list[str]:
        """Suites with a pool or an index."""
        found = set()
        for kind in ("pool", "dists"):
            folder = self.root / kind
            if folder.is_dir():
                found |= {p.name for p in folder.iterdir() if p.is_dir() and _SUITE.fullmatch(p.name)}
        return sorted(found)

    def pool_files(self, suite: str) -> dict[str, DebInfo]:
        """The pool's packages by file name (files whose names the pool does not use are left alone)."""
        pool = self.pool(suite)
        if not pool.is_dir():
            return {}
        found = {}
        for path in pool.iterdir():
            info = parse_pool_name(path.name)
            if info is not None and path.is_file() and not path.is_symlink():
                found[path.name] = info
        return dict(sorted(found.items()))

    def add(self, suite: str, source: Path, name: str) -> Path:
        """Copy ``source`` into the pool as ``name`` (atomically); the pool file."""
        dest = self.pool(suite) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{name}.")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            Path(tmp).chmod(0o644)
            Path(tmp).replace(dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def remove(self, suite: str, names: Iterable[str]) -> None:
        for name in names:
            (self.pool(suite) / name).unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------------- the key
    def publish_key(self) -> tuple[str, bool]:
        """The signing key (made on first use) and its public half exported into the repository."""
        fingerprint, made = self.key.ensure()
        for name, armor in ((KEY_FILE, False), (KEY_ASC, True)):
            data = self.key.export(fingerprint, armor=armor)
            path = self.root / name
            if not path.is_file() or path.read_bytes() != data:
                _atomic_write(path, data)
        return fingerprint, made

    # -------------------------------------------------------------------------------------------- the index
    def publish(self, suite: str, fingerprint: str, names: Iterable[str]) -> Published:
        """Index the pool files ``names`` of ``suite`` and sign the index, when it differs from the published
        one (or that one does not verify with the current key); otherwise leave it as it is. Files of the
        pool that ``names`` leaves out are not indexed (the caller deletes them once this is published)."""
        pool = self.pool(suite)
        pool.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root.parent, prefix=f".{self.root.name}-{suite}-"))
        try:
            packages = self._index(suite, staging / "farm", sorted(set(names)))
            count = packages.count(b"Filename: ")
            current = self.index_dir(suite) / "Packages"
            if (
                current.is_file()
                and current.read_bytes() == packages
                and verifies(self.root / KEY_FILE, self.dist(suite) / "InRelease")
            ):
                return Published(suite, False, count)
            self._stage(suite, staging / "dist", packages, fingerprint)
            self._swap(suite, staging / "dist")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("repository %s: suite %s published, %d packages", self.root, suite, count)
        return Published(suite, True, count)

    def _index(self, suite: str, farm: Path, names: list[str]) -> bytes:
        """The Packages index of ``names``: apt-ftparchive over a folder of links to those pool files only, laid
        out as the repository is (so each Filename is pool/<suite>/NAME)."""
        pool = self.pool(suite)
        linked = farm / "pool" / suite
        linked.mkdir(parents=True)
        for name in names:
            source = pool / name
            if not source.is_file():
                raise RepoError(f"{source}: not in the pool, cannot be indexed", path=str(source), suite=suite)
            try:
                os.link(source, linked / name)
            except OSError:  # another file system (or no hard links): a copy indexes the same
                shutil.copyfile(source, linked / name)
        return sorted_index(_ftparchive(["packages", f"pool/{suite}"], farm))

    def _stage(self, suite: str, staging: Path, packages: bytes, fingerprint: str) -> None:
        index = staging / COMPONENT / f"binary-{ARCH}"
        index.mkdir(parents=True)
        (index / "Packages").write_bytes(packages)
        (index / "Packages.gz").write_bytes(gzip.compress(packages, compresslevel=9, mtime=0))
        fields = {
            "Origin": ORIGIN, "Label": "provision bundles", "Suite": suite, "Codename": suite,
            "Architectures": ARCH, "Components": COMPONENT,
            "Description": f"provision: the software bundles of the {suite} images",
        }  # fmt: skip
        args = [f"-oAPT::FTPArchive::Release::{key}={value}" for key, value in fields.items()]
        release = _ftparchive([*args, "-oAPT::FTPArchive::DoByHash=true", "release", "."], staging)
        (staging / "Release").write_bytes(release)
        self.key.sign(fingerprint, staging / "Release", staging / "InRelease", staging / "Release.gpg")

    def _swap(self, suite: str, staging: Path) -> None:
        dist, live = self.dist(suite), self.index_dir(suite)
        previous = _by_hash_names(dist / "Release")
        for path in sorted((staging / COMPONENT).rglob("*")):
            rel = path.relative_to(staging)
            if path.is_file() and "by-hash" in rel.parts:
                target = dist / rel
                if not target.is_file():
                    _atomic_write(target, path.read_bytes())
        for name in ("Packages", "Packages.gz"):
            _atomic_write(live / name, (staging / COMPONENT / f"binary-{ARCH}" / name).read_bytes())
        for name in ("Release", "Release.gpg", "InRelease"):  # InRelease last: it is what apt reads first
            _atomic_write(dist / name, (staging / name).read_bytes())
        keep = previous | _by_hash_names(dist / "Release")
        for path in live.glob("by-hash/*/*"):
            if path.name not in keep:
                path.unlink()


def _by_hash_names(release: Path) -> set[str]:
    """The hashes a Release file lists (the by-hash file names its indexes have)."""
    if not release.is_file():
        return set()
    names = set()
    for line in release.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and re.fullmatch(r"[0-9a-f]{32,128}", parts[0]):
            names.add(parts[0])
    return names
