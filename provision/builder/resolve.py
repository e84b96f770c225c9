"""Which package versions a build would install, asked of apt before building (never a guess).

A Debian image's archive is the machine's own (the URIs of its apt sources for its codename, plus the
``-updates`` and ``-security`` suites it has), with the definition's suite and components. apt runs on
a private configuration under the Debian package cache (own lists, empty dpkg status), like the boot
files do: ``apt-get --simulate install`` of the definition's packages plus what the mmdebstrap variant
installs (Essential, then Priority required / important / standard) lists every package and version.
Its "Unable to locate package X" / "Package 'X' has no installation candidate" become PackageNotFound(X).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.bootfiles import AptFailed, AptRepo, AptSource, read_machine_sources
from provision.bootfiles.sources import DEFAULT_KEYRING
from provision.builder.errors import ImageBuildError, PackageNotFound

VARIANT_PRIORITIES = {
    "minbase": ("required",),
    "important": ("required", "important"),
    "standard": ("required", "important", "standard"),
}
_INST_RE = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ", re.MULTILINE)
_MISSING_RES = (
    re.compile(r"Unable to locate package (\S+)"),
    re.compile(r"Package '([^']+)' has no installation candidate"),
    re.compile(r"Couldn't find any package by (?:glob|regex) '([^']+)'"),
    re.compile(r"Version '[^']+' for '([^']+)' was not found"),
)
_UNMET_RE = re.compile(r"^\s*(\S+) : Depends: (\S+)", re.MULTILINE)


@dataclass(frozen=True)
class ArchiveEntry:
    """One ``deb`` line of the image's archive."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str

    def line(self) -> str:
        return f"deb [signed-by={self.signed_by}] {self.uri} {self.suite} {' '.join(self.components)}"


def image_archive(
    sources: Iterable[AptSource], host_codename: str, suite: str, components: Sequence[str]
) -> list[ArchiveEntry]:
    """The machine's archive entries for ``host_codename`` and its -updates/-security suites, moved to
    ``suite`` with ``components``. The host name comes from the machine's sources, never from code."""
    entries: list[ArchiveEntry] = []
    for source in sources:
        if not source.enabled or "deb" not in source.types or not source.uris:
            continue
        for name in source.suites:
            if name != host_codename and not name.startswith(host_codename + "-"):
                continue
            keyring = source.signed_by if source.signed_by and source.signed_by.startswith("/") else DEFAULT_KEYRING
            entry = ArchiveEntry(source.uris[0], suite + name[len(host_codename) :], tuple(components), keyring)
            if entry not in entries:
                entries.append(entry)
    if not any(e.suite == suite for e in entries):
        raise ImageBuildError(
            f"no apt source for suite {host_codename!r} in /etc/apt: cannot derive the archive for {suite}",
            step="resolve",
            suite=suite,
        )
    return entries


def machine_archive(suite: str, components: Sequence[str], host_codename: str, etc_apt: Path) -> list[ArchiveEntry]:
    return image_archive(read_machine_sources(etc_apt), host_codename, suite, components)


def variant_pattern(variant: str) -> str:
    """The apt pattern of what an mmdebstrap variant installs besides the requested packages."""
    terms = ["?essential", *(f"?priority({p})" for p in VARIANT_PRIORITIES[variant])]
    return f"?and(?architecture(amd64),?or({','.join(terms)}))"


def parse_simulation(stdout: str) -> dict[str, str]:
    """``Inst NAME (VERSION ...)`` lines of ``apt-get --simulate`` -> {name: version}, sorted."""
    found = {name.split(":")[0]: version for name, version in _INST_RE.findall(stdout)}
    return dict(sorted(found.items()))


def missing_packages(text: str) -> list[str]:
    """Package names apt or mmdebstrap said it cannot find or install, in order, once."""
    names: list[str] = []
    for regex in _MISSING_RES:
        names += regex.findall(text)
    return list(dict.fromkeys(names))


class ImageApt(AptRepo):
    """apt on a private configuration for one image archive (lists shared by images with the same archive)."""

    def __init__(self, cache_dir: Path, entries: Sequence[ArchiveEntry]) -> None:
        text = "".join(entry.line() + "\n" for entry in entries)
        key = hashlib.sha256(text.encode()).hexdigest()[:12]
        super().__init__(cache_dir, f"image-{entries[0].suite}-{key}", text)
        self.entries = list(entries)

    def simulate(self, packages: Sequence[str], *, variant: str, recommends: bool, image: str = "") -> dict[str, str]:
        """Every package and version ``mmdebstrap --variant`` + ``--include packages`` would install."""
        args = ["--simulate", "-o", f"APT::Install-Recommends={'true' if recommends else 'false'}", "install"]
        try:
            out = self._run("apt-get", [*args, *packages, variant_pattern(variant)])
        except AptFailed as exc:
            raise self._explain(exc, image) from exc
        return parse_simulation(out)

    def _explain(self, exc: AptFailed, image: str) -> ImageBuildError:
        stderr = str(exc.facts.get("stderr", ""))
        missing = missing_packages(stderr)
        suite = self.entries[0].suite
        if missing:
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            return PackageNotFound(missing[0], image=image, step="resolve", suite=suite, detail=f"apt: {last}")
        unmet = _UNMET_RE.findall(stderr)
        if unmet:
            package, dep = unmet[0]
            return ImageBuildError(
                f"image {image}: package {package} cannot be installed: it depends on {dep} (unmet)",
                image=image,
                step="resolve",
                package=package,
                stderr_tail=stderr[-2000:],
            )
        return ImageBuildError(
            f"image {image}: resolving packages failed: {exc}", image=image, step="resolve", stderr_tail=stderr[-2000:]
        )


@dataclass(frozen=True)
class PackageChanges:
    """What differs between two package lists."""

    added: dict[str, str]
    removed: dict[str, str]
    upgraded: dict[str, tuple[str, str]]  # name -> (old, new); downgrades too

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.upgraded)

    def to_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "removed": self.removed,
            "upgraded": {name: {"from": old, "to": new} for name, (old, new) in self.upgraded.items()},
        }


def package_changes(old: dict[str, str], new: dict[str, str]) -> PackageChanges:
    return PackageChanges(
        added={n: v for n, v in sorted(new.items()) if n not in old},
        removed={n: v for n, v in sorted(old.items()) if n not in new},
        upgraded={n: (old[n], v) for n, v in sorted(new.items()) if n in old and old[n] != v},
    )
