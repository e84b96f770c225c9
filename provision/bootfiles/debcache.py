"""Unpacked Debian packages: apt on a private configuration, ``apt-get download`` + ``dpkg -x``, a locked cache."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.bootfiles.errors import AptFailed, BootFilesError, PackageMissing
from provision.bootfiles.sources import archive_source, host_codename, one_line_entry, read_machine_sources

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/var/cache/provision/debs")
IPXE_SUITE = "trixie"
LISTS_MAX_AGE = 24 * 3600.0
APT_TIMEOUT = 900.0
HOST = "host"  # the suite name meaning "the machine's own apt sources"


@dataclass(frozen=True)
class Package:
    """One package unpacked in the cache."""

    name: str
    version: str
    suite: str
    root: Path  # the ``dpkg -x`` tree
    depends: str = ""

    def file(self, path: str) -> Path:
        """The file at ``path`` (absolute inside the package), symlinks resolved within the tree."""
        candidate = self.root / path.lstrip("/")
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.root.resolve()) or not resolved.is_file():
            raise PackageMissing(
                f"{path} not found in package {self.name} {self.version} ({self.suite})",
                package=self.name,
                suite=self.suite,
                path=path,
            )
        return resolved


def parse_control(text: str) -> dict[str, str]:
    """The fields of the first stanza of ``apt-cache show`` / DEBIAN/control output."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
            continue
        name, _, value = line.partition(":")
        key = name.strip()
        fields[key] = value.strip()
    return fields


def depends_names(depends: str) -> list[str]:
    """Package names of a Depends field, first alternative of each, without versions."""
    names = []
    for clause in depends.split(","):
        first = clause.split("|")[0].strip()
        if first:
            names.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return names


class AptRepo:
    """apt-get/apt-cache on a private configuration: one suite set, its own lists and cache."""

    def __init__(self, cache: Path, name: str, sources_list: str | None) -> None:
        self.name = name
        self.base = cache / "apt" / name
        self.sources_list = sources_list  # None: the machine's own sources files

    def _options(self) -> list[str]:
        lists, apt_cache = self.base / "lists", self.base / "cache"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        (apt_cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        status = self.base / "status"
        status.touch()
        opts = {
            "Dir::State::Lists": str(lists),
            "Dir::Cache": str(apt_cache),
            "Dir::State::status": str(status),  # nothing installed: candidates come from the lists only
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
        }
        if self.sources_list is not None:
            path = self.base / "sources.list"
            if not path.is_file() or path.read_text(encoding="utf-8") != self.sources_list:
                path.write_text(self.sources_list, encoding="utf-8")
            opts["Dir::Etc::SourceList"] = str(path)
            opts["Dir::Etc::SourceParts"] = "/dev/null"
        argv: list[str] = []
        for key, value in opts.items():
            if value:
                argv += ["-o", f"{key}={value}"]
        return argv

    def _run(self, tool: str, args: Sequence[str], cwd: Path | None = None) -> str:
        argv = [tool, "-q", *self._options(), *args]
        log.debug("running %s", argv)
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        try:
            done = subprocess.run(
                argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
            )
        except FileNotFoundError as exc:
            raise BootFilesError(f"{tool} not found: boot files need Debian's apt", tool=tool) from exc
        except subprocess.TimeoutExpired as exc:
            raise AptFailed(argv, -1, f"timed out after {APT_TIMEOUT:.0f} s") from exc
        if done.returncode != 0:
            raise AptFailed(argv, done.returncode, done.stderr)
        return done.stdout

    def update(self, max_age: float = LISTS_MAX_AGE) -> bool:
        """Refresh the package lists when older than ``max_age`` seconds. True if refreshed."""
        stamp = self.base / "updated"
        if stamp.is_file() and time.time() - stamp.stat().st_mtime < max_age:
            return False
        started = time.monotonic()
        try:
            self._run("apt-get", ["update"])
        except AptFailed as exc:
            if not stamp.is_file():
                raise
            log.warning("apt lists %s not refreshed, using the previous ones: %s", self.name, exc)
            return False
        stamp.touch()
        log.info("apt lists %s refreshed in %.1f s", self.name, time.monotonic() - started)
        return True

    def show(self, package: str) -> dict[str, str]:
        """The candidate stanza of ``package``; PackageMissing when the lists do not have it."""
        try:
            text = self._run("apt-cache", ["show", "--no-all-versions", package])
        except AptFailed as exc:
            raise PackageMissing(
                f"package {package} not found in apt source {self.name!r}", package=package, suite=self.name
            ) from exc
        fields = parse_control(text)
        if "Version" not in fields:
            raise PackageMissing(
                f"package {package} not found in apt source {self.name!r}", package=package, suite=self.name
            )
        return fields

    def download(self, package: str, version: str, dest: Path) -> Path:
        """Download ``package=version`` into ``dest``; the .deb path."""
        dest.mkdir(parents=True, exist_ok=True)
        before = set(dest.glob("*.deb"))
        self._run("apt-get", ["download", f"{package}={version}"], cwd=dest)
        new = sorted(set(dest.glob("*.deb")) - before)
        if not new:
            found = sorted(dest.glob(f"{package}_*.deb"))
            if not found:
                raise PackageMissing(f"apt-get download {package} gave no .deb", package=package, suite=self.name)
            new = found
        return new[-1]


def _safe(version: str) -> str:
    return version.replace(":", "%3a")


class DebCache:
    """Unpacked Debian packages, keyed by name and version, under ``cache_dir``."""

    def __init__(
        self,
        cache_dir: Path = DEFAULT_CACHE,
        *,
        ipxe_suite: str = IPXE_SUITE,
        lists_max_age: float = LISTS_MAX_AGE,
        etc_apt: Path = Path("/etc/apt"),
        os_release: Path = Path("/etc/os-release"),
    ) -> None:
        self.cache_dir = cache_dir
        self.lists_max_age = lists_max_age
        self.codename = host_codename(os_release)
        archive = archive_source(read_machine_sources(etc_apt), self.codename)
        self._repos = {HOST: AptRepo(cache_dir, self.codename, None)}
        if ipxe_suite != self.codename:
            self._repos[ipxe_suite] = AptRepo(cache_dir, ipxe_suite, one_line_entry(archive, ipxe_suite))
        self.ipxe_suite = ipxe_suite if ipxe_suite != self.codename else HOST
        self._lock_depth = 0
        self._checked: set[str] = set()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cache's lock (re-entrant): concurrent runs wait instead of clashing in apt."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            handle = (self.cache_dir / ".lock").open("a")
        except OSError as exc:
            raise BootFilesError(
                f"{self.cache_dir}: cannot use as package cache ({exc.strerror}); choose another with --cache-dir",
                path=str(self.cache_dir),
            ) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    def repo(self, suite: str) -> AptRepo:
        repo = self._repos.get(suite)
        if repo is None:
            raise BootFilesError(f"unknown suite {suite!r}", suite=suite)
        if suite not in self._checked:  # once per DebCache: --refresh means one update per run
            with self.locked():
                repo.base.mkdir(parents=True, exist_ok=True)
                repo.update(self.lists_max_age)
            self._checked.add(suite)
        return repo

    def get(self, package: str, suite: str = HOST) -> Package:
        """The unpacked candidate version of ``package`` from ``suite`` (downloaded on first use)."""
        with self.locked():
            return self._get(package, suite)

    def _get(self, package: str, suite: str) -> Package:
        repo = self.repo(suite)
        fields = repo.show(package)
        version = fields["Version"]
        suite_name = repo.name
        root = self.cache_dir / f"{package}_{_safe(version)}"
        stamp = root / ".provision-unpacked"
        if stamp.is_file():
            log.debug("%s %s already unpacked in %s", package, version, root)
            return Package(package, version, suite_name, root, fields.get("Depends", ""))
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix=f".{package}-") as tmp:
            deb = repo.download(package, version, Path(tmp) / "deb")
            tree = Path(tmp) / "tree"
            try:
                subprocess.run(["dpkg", "-x", str(deb), str(tree)], check=True, capture_output=True, text=True)
            except (subprocess.CalledProcessError, FileNotFoundError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                raise BootFilesError(f"dpkg -x {deb.name} failed: {detail}", package=package) from exc
            (tree / ".provision-unpacked").write_text(f"{package} {version} {suite_name}\n", encoding="utf-8")
            if root.exists():
                shutil.rmtree(root)
            tree.rename(root)
        log.info("fetched %s %s (%s) in %.1f s", package, version, suite_name, time.monotonic() - started)
        return Package(package, version, suite_name, root, fields.get("Depends", ""))

    def kernel(self) -> Package:
        """Debian's signed kernel package: ``linux-image-amd64``'s ``linux-image-<abi>-amd64``."""
        with self.locked():
            meta = self.repo(HOST).show("linux-image-amd64")
        names = [n for n in depends_names(meta.get("Depends", "")) if n.startswith("linux-image-")]
        if not names:
            raise PackageMissing(
                "linux-image-amd64 depends on no linux-image-* package", package="linux-image-amd64", suite=HOST
            )
        return self.get(names[0])

    def ipxe(self) -> Package:
        return self.get("ipxe", self.ipxe_suite)


def kernel_release(kernel: Package) -> str:
    """The kernel release (``uname -r``) shipped by a linux-image package."""
    images = sorted((kernel.root / "boot").glob("vmlinuz-*"))
    if not images:
        raise PackageMissing(
            f"no /boot/vmlinuz-* in {kernel.name} {kernel.version}", package=kernel.name, suite=kernel.suite
        )
    return images[-1].name.removeprefix("vmlinuz-")


def kernel_modules_dir(kernel: Package) -> Path:
    """``/lib/modules/<release>`` of the unpacked kernel (usr-merged or not)."""
    release = kernel_release(kernel)
    for base in ("lib/modules", "usr/lib/modules"):
        path = kernel.root / base / release
        if path.is_dir():
            return path
    raise PackageMissing(f"no modules for {release} in {kernel.name}", package=kernel.name, suite=kernel.suite)
