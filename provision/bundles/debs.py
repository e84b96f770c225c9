""".deb files: their control fields (``dpkg-deb --field``) and the name each one has in the repository's pool.

The pool names a package ``NAME_VERSION_ARCH.deb`` with the epoch's ``:`` written ``%3a``, the name
``apt-get download`` gives it, so a file's name says which package and version it holds.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from provision.bundles.errors import BundleError

DPKG_TIMEOUT = 60.0
_POOL_NAME = re.compile(r"^(?P<name>[a-z0-9][a-z0-9+.-]+)_(?P<version>[A-Za-z0-9.+~%-]+)_(?P<arch>[a-z0-9-]+)\.deb$")


@dataclass(frozen=True)
class DebInfo:
    """A package file: its name, version and architecture (from its control file, or from its pool name)."""

    package: str
    version: str
    architecture: str

    @property
    def pool_name(self) -> str:
        return pool_name(self.package, self.version, self.architecture)

    @property
    def pin(self) -> str:
        """``NAME=VERSION``, what apt-get install is given to install exactly this file's package."""
        return f"{self.package}={self.version}"


def pool_name(package: str, version: str, architecture: str) -> str:
    return f"{package}_{version.replace(':', '%3a')}_{architecture}.deb"


def parse_pool_name(name: str) -> DebInfo | None:
    """The package a pool file name says it holds, or None for a name the pool does not use."""
    match = _POOL_NAME.fullmatch(name)
    if match is None:
        return None
    return DebInfo(match["name"], match["version"].replace("%3a", ":"), match["arch"])


def parse_fields(text: str) -> dict[str, str]:
    """``Key: value`` lines (continuation lines joined) of dpkg-deb's or apt's output."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip()
            fields[key] = value.strip()
    return fields


def read_deb(path: Path) -> DebInfo:
    """The control fields of the .deb at ``path``; BundleError saying why when it is not a readable package."""
    argv = ["dpkg-deb", "--field", str(path), "Package", "Version", "Architecture"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=DPKG_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise BundleError("dpkg-deb not found: install Debian's dpkg", path=str(path)) from exc
    except subprocess.TimeoutExpired as exc:
        raise BundleError(f"dpkg-deb --field {path} timed out", path=str(path)) from exc
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        raise BundleError(f"not a Debian package: {reason.removeprefix('dpkg-deb: error: ')}", path=str(path))
    fields = parse_fields(done.stdout)
    missing = [k for k in ("Package", "Version", "Architecture") if not fields.get(k)]
    if missing:
        raise BundleError(f"the package's control file has no {', '.join(missing)}", path=str(path))
    info = DebInfo(fields["Package"], fields["Version"], fields["Architecture"])
    if parse_pool_name(info.pool_name) != info:
        raise BundleError(
            f"package {info.package!r} version {info.version!r} ({info.architecture}) is not a valid Debian "
            "name, version and architecture",
            path=str(path),
        )
    return info
