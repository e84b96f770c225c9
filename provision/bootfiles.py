"""Boot files from Debian packages: fetch .debs with apt, unpack them, lay out a TFTP/HTTP boot root.

Packages come from the machine's own archive (the URI in its apt sources, never a hard-coded host):
iPXE from Debian 13 "trixie" (its 2025 iPXE does not wait ~13 s after DHCP like Debian 12's), and from
the machine's own suite: shim-signed, grub-efi-amd64-signed, the signed kernel (linux-image-amd64 ->
linux-image-<abi>-amd64) and busybox-static.

apt runs with a private configuration (own lists, cache and an empty dpkg status), so nothing on the
machine changes and no root is needed. Each package is unpacked once with ``dpkg -x`` into
``<cache>/<name>_<version>/``; a second run with fresh lists is a no-op.

Run ``python -m provision.bootfiles --dest DIR`` (or ``scripts/fetch-boot-files``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provision.errors import FatalError, RetryableError

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/var/cache/provision/debs")
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
IPXE_SUITE = "trixie"
LISTS_MAX_AGE = 24 * 3600.0
APT_TIMEOUT = 900.0
MANIFEST = "MANIFEST.json"
HOST = "host"  # the suite name meaning "the machine's own apt sources"


class BootFilesError(FatalError):
    """Boot files cannot be fetched, unpacked or installed."""


class PackageMissing(BootFilesError):
    """A package, or a file expected inside it, is not there."""

    def __init__(self, message: str, *, package: str, suite: str, path: str | None = None) -> None:
        super().__init__(message)
        self.facts.update(package=package, suite=suite, path=path)
        self.package = package
        self.suite = suite
        self.path = path


class AptFailed(RetryableError):
    """apt-get or apt-cache failed (network, mirror, lock): trying again later may work."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        words = [argv[0], *(a for a in argv[1:] if not a.startswith("-") and "=" not in a)]
        super().__init__(f"{' '.join(words)} failed ({returncode}): {tail}")
        self.facts.update(argv=list(argv), returncode=returncode, stderr=stderr)


# --- apt sources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One source entry (a deb822 stanza or a one-line ``deb`` entry)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None
    enabled: bool = True


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse a ``*.sources`` file (deb822). Comments and unknown fields are ignored."""
    sources: list[AptSource] = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key: str | None = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key is not None:
                fields[key] += "\n" + line.strip()
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            fields[key] = value.strip()
        if "uris" not in fields or "suites" not in fields:
            continue
        signed = fields.get("signed-by", "").strip()
        sources.append(
            AptSource(
                types=tuple(fields.get("types", "deb").split()),
                uris=tuple(fields["uris"].split()),
                suites=tuple(fields["suites"].split()),
                components=tuple(fields.get("components", "").split()),
                # An inline key block (several lines) is not a path: treat it as unknown.
                signed_by=signed if signed and "\n" not in signed else None,
                enabled=fields.get("enabled", "yes").lower() not in ("no", "false", "0"),
            )
        )
    return sources


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse a ``sources.list`` file: ``deb [opt=value ...] URI SUITE COMPONENT...``."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        match = re.match(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if match is None:
            continue
        kind, opts, uri, suite, comps = match.groups()
        for opt in (opts or "").split():
            name, _, value = opt.partition("=")
            options[name.lower()] = value
        sources.append(
            AptSource(
                types=(kind,),
                uris=(uri,),
                suites=(suite,),
                components=tuple(comps.split()),
                signed_by=options.get("signed-by") or None,
            )
        )
    return sources


def read_machine_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """All source entries configured on this machine, in apt's reading order."""
    sources: list[AptSource] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        sources += parse_one_line_sources(main_list.read_text(encoding="utf-8", errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
            if path.suffix == ".list":
                sources += parse_one_line_sources(text)
            elif path.suffix == ".sources":
                sources += parse_deb822_sources(text)
    return sources


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """The machine's Debian codename (``VERSION_CODENAME``), e.g. ``bookworm``."""
    try:
        text = os_release.read_text(encoding="utf-8")
    except OSError as exc:
        raise BootFilesError(f"{os_release}: cannot read: {exc.strerror}", path=str(os_release)) from exc
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "VERSION_CODENAME" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    raise BootFilesError(f"{os_release}: no VERSION_CODENAME", path=str(os_release))


def archive_source(sources: Iterable[AptSource], codename: str) -> AptSource:
    """The enabled ``deb`` entry that serves the plain suite ``codename`` (not -security/-updates)."""
    for source in sources:
        if source.enabled and "deb" in source.types and codename in source.suites and source.uris:
            return source
    raise BootFilesError(
        f"no apt source for suite {codename!r} in /etc/apt (sources.list or sources.list.d/*.sources)",
        suite=codename,
    )


def one_line_entry(source: AptSource, suite: str, components: Sequence[str] = ("main",)) -> str:
    """A ``sources.list`` line for ``suite`` from the archive of ``source``."""
    keyring = source.signed_by if source.signed_by and source.signed_by.startswith("/") else DEFAULT_KEYRING
    return f"deb [signed-by={keyring}] {source.uris[0]} {suite} {' '.join(components)}\n"


# --- private apt ---------------------------------------------------------------------------------


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


# --- boot root -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootFile:
    """One file of the boot root and where it came from."""

    path: str  # relative to the boot root
    package: str
    version: str
    suite: str
    source: str  # path inside the package
    sha256: str
    size: int


@dataclass(frozen=True)
class BootRoot:
    """What install_boot_root laid out, plus the unpacked trees a live environment builder needs."""

    dest: Path
    files: tuple[BootFile, ...]
    kernel_release: str
    kernel_modules: Path  # /lib/modules/<release> of the unpacked kernel
    busybox: Path  # the static busybox binary
    changed: tuple[str, ...] = field(default=())  # files written by this call (others were up to date)


# (boot root path, package key, path inside the package)
LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("undionly.kpxe", "ipxe", "/usr/lib/ipxe/undionly.kpxe"),
    ("ipxe.efi", "ipxe", "/usr/lib/ipxe/ipxe.efi"),
    ("snponly.efi", "ipxe", "/usr/lib/ipxe/snponly.efi"),
    ("shimx64.efi", "shim-signed", "/usr/lib/shim/shimx64.efi.signed"),
    ("grubx64.efi", "grub-efi-amd64-signed", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
    ("live/vmlinuz", "kernel", "/boot/vmlinuz-{release}"),
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_dict(files: Iterable[BootFile]) -> dict[str, object]:
    """The MANIFEST.json content: packages (name -> version, suite) and files (path -> origin, digest)."""
    ordered = sorted(files, key=lambda f: f.path)
    packages = {f.package: {"version": f.version, "suite": f.suite} for f in ordered}
    return {
        "format": 1,
        "packages": dict(sorted(packages.items())),
        "files": {
            f.path: {"package": f.package, "source": f.source, "sha256": f.sha256, "size": f.size} for f in ordered
        },
    }


def write_manifest(dest: Path, files: Iterable[BootFile]) -> Path:
    path = dest / MANIFEST
    _write_atomic(path, (json.dumps(manifest_dict(files), indent=2) + "\n").encode())
    return path


def read_manifest(dest: Path) -> list[BootFile]:
    """The files recorded in ``dest/MANIFEST.json`` (empty when absent or unreadable)."""
    try:
        data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        packages = data["packages"]
        return [
            BootFile(
                path=path,
                package=entry["package"],
                version=packages[entry["package"]]["version"],
                suite=packages[entry["package"]]["suite"],
                source=entry["source"],
                sha256=entry["sha256"],
                size=int(entry["size"]),
            )
            for path, entry in data["files"].items()
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(path)


def install_boot_root(dest: Path, *, cache: DebCache | None = None, cache_dir: Path = DEFAULT_CACHE) -> BootRoot:
    """Fetch the packages (once) and lay out ``dest``: iPXE, shim + signed GRUB, the signed kernel.

    Files already identical (by sha256) are left alone. ``dest/MANIFEST.json`` records every file's
    package, version and digest. Raises PackageMissing naming the package when one is not available.
    """
    cache = cache or DebCache(cache_dir)
    with cache.locked():
        return _install(dest, cache)


def _install(dest: Path, cache: DebCache) -> BootRoot:
    kernel = cache.kernel()
    release = kernel_release(kernel)
    packages = {
        "ipxe": cache.ipxe(),
        "shim-signed": cache.get("shim-signed"),
        "grub-efi-amd64-signed": cache.get("grub-efi-amd64-signed"),
        "kernel": kernel,
    }
    busybox_pkg = cache.get("busybox-static")
    busybox = busybox_pkg.file("/bin/busybox")
    files: list[BootFile] = []
    changed: list[str] = []
    for rel, key, inner in LAYOUT:
        package = packages[key]
        source_path = inner.format(release=release)
        src = package.file(source_path)
        digest = sha256_file(src)
        target = dest / rel
        if not (target.is_file() and sha256_file(target) == digest):
            _write_atomic(target, src.read_bytes())
            changed.append(rel)
        files.append(
            BootFile(rel, package.name, package.version, package.suite, source_path, digest, src.stat().st_size)
        )
    write_manifest(dest, files)
    for f in files:
        log.info("%-14s %s %s (%s) sha256 %s", f.path, f.package, f.version, f.suite, f.sha256[:16])
    log.info("boot root %s: %d files, %d updated", dest, len(files), len(changed))
    return BootRoot(dest, tuple(files), release, kernel_modules_dir(kernel), busybox, tuple(changed))


def qemu_roms(cache: DebCache | None = None, *, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The folder of NIC option ROMs (``efi-virtio.rom``, ``pxe-e1000.rom``...) of the iPXE suite's ipxe-qemu.

    For lab PCs (``Lab.add_pc(rom=...)``): Debian 12's own ROMs are iPXE 2019, which waits ~13 s after DHCP.
    """
    cache = cache or DebCache(cache_dir)
    package = cache.get("ipxe-qemu", cache.ipxe_suite)
    return package.file("/usr/share/qemu/efi-virtio.rom").parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fetch-boot-files", description="Fetch boot files from Debian packages and lay out a boot root."
    )
    parser.add_argument("dest", type=Path, help="boot root to create or update (TFTP/HTTP root)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument("--refresh", action="store_true", help="refresh the apt lists even if recent")
    parser.add_argument("--ipxe-suite", default=IPXE_SUITE, help=f"suite to take iPXE from (default {IPXE_SUITE})")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        cache = DebCache(
            args.cache_dir, ipxe_suite=args.ipxe_suite, lists_max_age=0.0 if args.refresh else LISTS_MAX_AGE
        )
        install_boot_root(args.dest, cache=cache)
    except (BootFilesError, AptFailed) as exc:
        log.error("fetch-boot-files: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
