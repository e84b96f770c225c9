"""What a bundle needs on one image, asked of apt: which of its packages exist, and every package (with its
version) that installing them on the image would add or upgrade.

apt runs on the builder's private configuration for the image's archive (provision.builder.resolve.ImageApt:
its own lists and cache under the Debian package cache, the machine's apt untouched), with a dpkg status
made from the image's package list: each installed package's stanza as the archive describes that version
(``apt-cache show NAME=VERSION``: its dependencies and what it provides), or a bare one when the archive no
longer has that version. ``apt-get --simulate install`` on that status lists exactly what the PC's apt would
fetch: those are the packages the server mirrors. An image whose package list is unknown is taken as a
minimal base (what ``mmdebstrap --variant=minbase`` installs), so the repository holds more, never less.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provision.bootfiles import AptFailed
from provision.builder.resolve import ArchiveEntry, ImageApt, missing_packages
from provision.bundles.debs import DebInfo, parse_fields, pool_name

_INST = re.compile(r"^Inst (\S+) (?:\[([^\]]*)\] )?\((\S+) (.*?) ?\[([^\]]+)\]\)", re.MULTILINE)
_REMV = re.compile(r"^Remv (\S+)", re.MULTILINE)
_UNMET = re.compile(r"^\s*(\S+) : (?:Pre-)?Depends: (.+?)\s*$", re.MULTILINE)
_BROKEN = re.compile(r"^\s*(\S+) : (Conflicts|Breaks): (.+?)\s*$", re.MULTILINE)
_POLICY_VERSION = re.compile(r"^\s+(?:\*\*\* )?(\S+) -?\d+$")
# Fields of an archive stanza that describe the .deb file, not the package: a status stanza has none of them.
FILE_FIELDS = frozenset({"Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512", "Description-md5"})
MINIMAL_BASE = "minbase"


@dataclass(frozen=True)
class Target:
    """An image a bundle goes onto: its archive, and the packages it holds (None: unknown)."""

    image: str  # as the recipe names it: NAME or NAME@VERSION
    suite: str
    archive: tuple[ArchiveEntry, ...]
    installed: Mapping[str, str] | None = field(default=None, compare=False)
    base: str = ""  # where the package list comes from, said in reports

    @property
    def key(self) -> str:
        """Targets with the same key resolve alike (same archive, same packages)."""
        text = "\n".join(e.line() for e in self.archive) + "\n" + repr(sorted((self.installed or {}).items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Needed:
    """One package a bundle needs from the archive on an image."""

    name: str
    version: str
    architecture: str
    upgrade_of: str | None = None  # the image's version, when this upgrades it

    @property
    def pool_name(self) -> str:
        return pool_name(self.name, self.version, self.architecture)


@dataclass(frozen=True)
class Resolution:
    """What installing a bundle on an image takes, or why it cannot be installed there."""

    needed: tuple[Needed, ...] = ()  # from the archive, to mirror
    local: tuple[str, ...] = ()  # the bundle's own .debs apt would install
    problems: tuple[tuple[str, str], ...] = ()  # (package, why): a named package, or "" for the bundle

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_policy(text: str) -> dict[str, tuple[str | None, list[str]]]:
    """``apt-cache policy`` output -> {name: (candidate or None, every version apt knows)}; a name apt does not
    know at all is absent."""
    found: dict[str, tuple[str | None, list[str]]] = {}
    name = ""
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            name = line[:-1].split(":")[0]
            found[name] = (None, [])
            continue
        if not name:
            continue
        stripped = line.strip()
        if stripped.startswith("Candidate:"):
            value = stripped.removeprefix("Candidate:").strip()
            found[name] = (None if value == "(none)" else value, found[name][1])
            continue
        match = _POLICY_VERSION.match(line)
        if match:
            found[name][1].append(match.group(1))
    return found


def parse_plan(stdout: str) -> tuple[list[Needed], list[str], list[str]]:
    """``apt-get --simulate install`` output -> (packages from the archive, local packages, removals)."""
    needed, local = [], []
    for name, old, version, release, arch in _INST.findall(stdout):
        package = name.split(":")[0]
        if release.split() == ["local-deb"]:
            local.append(package)
            continue
        needed.append(Needed(package, version, arch, old or None))
    return needed, local, [name.split(":")[0] for name in _REMV.findall(stdout)]


def _status_stanza(fields: Mapping[str, str]) -> str:
    """A dpkg status stanza of an installed package from its archive stanza: every field apt hashes to tell
    two builds of one version apart kept (so the archive's and the status's version are one to apt)."""
    lines = [f"Package: {fields.get('Package', '')}", "Status: install ok installed"]
    for key, value in fields.items():
        if key != "Package" and key not in FILE_FIELDS and value:
            lines.append(f"{key}: {value}".replace("\n", "\n "))
    return "\n".join(lines) + "\n"


def split_stanzas(text: str) -> list[dict[str, str]]:
    return [parse_fields(block) for block in re.split(r"\n\s*\n", text) if block.strip()]


class BundleApt(ImageApt):
    """apt for one image archive, on one image's package set (or a minimal base)."""

    def __init__(self, cache_dir: Path, target: Target) -> None:
        super().__init__(cache_dir, target.archive)
        self.target = target
        self._status: Path | None = None

    def _apt(self, tool: str, args: Sequence[str]) -> str:
        return self._run(tool, ["-o", f"Dir::State::status={self.status()}", *args])

    def status(self) -> Path:
        """The dpkg status of the image (made once): its packages as the archive describes them."""
        if self._status is not None:
            return self._status
        installed = self.target.installed
        if installed is None:
            installed = self.simulate([], variant=MINIMAL_BASE, recommends=False, image=self.target.image)
        path = self.base / f"status-{self.target.key}"
        described: dict[tuple[str, str], dict[str, str]] = {}
        if installed:
            pins = [f"{name}={version}" for name, version in sorted(installed.items())]
            try:
                shown = self._run("apt-cache", ["show", *pins])
            except AptFailed as exc:  # none of the versions is in the archive (any one missing is skipped)
                if "No packages found" not in str(exc.facts.get("stderr", "")):
                    raise
                shown = ""
            for fields in split_stanzas(shown):
                described[(fields.get("Package", ""), fields.get("Version", ""))] = fields
        stanzas = []
        for name, version in sorted(installed.items()):
            fields = described.get((name, version)) or {"Package": name, "Version": version, "Architecture": "amd64"}
            stanzas.append(_status_stanza(fields))
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(stanzas), encoding="utf-8")
        tmp.replace(path)
        self._status = path
        return path

    def policy(self, names: Sequence[str]) -> dict[str, tuple[str | None, list[str]]]:
        return parse_policy(self._apt("apt-cache", ["policy", *names])) if names else {}

    def compare(self, left: str, op: str, right: str) -> bool:
        """``dpkg --compare-versions``: whether ``left op right`` holds (op one of >= <= >> << =)."""
        words = {">=": "ge", "<=": "le", ">>": "gt", "<<": "lt", "=": "eq", "==": "eq"}
        done = subprocess.run(
            ["dpkg", "--compare-versions", left, words[op], right], capture_output=True, timeout=30, check=False
        )
        return done.returncode == 0

    def resolve(self, arguments: Sequence[str], debs: Sequence[tuple[Path, DebInfo]] = ()) -> Resolution:
        """Simulate ``apt-get install arguments`` plus the local ``debs`` on the image."""
        args = ["--simulate", "-o", "APT::Install-Recommends=false", "install", *arguments]
        args += [str(path.resolve()) for path, _info in debs]
        try:
            out = self._apt("apt-get", args)
        except AptFailed as exc:
            return Resolution(problems=tuple(_why(str(exc.facts.get("stderr", "")))))
        needed, local, removals = parse_plan(out)
        problems = [("", f"installing it would remove {name}, which the image holds") for name in removals]
        return Resolution(tuple(needed), tuple(local), tuple(problems))

    def fetch(self, needed: Sequence[Needed], dest: Path) -> list[Path]:
        """``apt-get download`` of ``needed`` into ``dest``; the files, named as the pool names them."""
        dest.mkdir(parents=True, exist_ok=True)
        if needed:
            self._run("apt-get", ["download", *(f"{n.name}={n.version}" for n in needed)], cwd=dest)
        files = []
        for item in needed:
            path = dest / item.pool_name
            if not path.is_file():
                raise AptFailed(["apt-get", "download", f"{item.name}={item.version}"], 0, f"no {path.name} in {dest}")
            files.append(path)
        return files


def _why(stderr: str) -> list[tuple[str, str]]:
    """apt's complaint as (package, why) pairs: missing packages, unmet dependencies, conflicts."""
    problems = [(name, "not in the archive (apt: Unable to locate package)") for name in missing_packages(stderr)]
    for package, dep in _UNMET.findall(stderr):
        problems.append((package, f"cannot be installed: it depends on {dep}"))
    for package, kind, other in _BROKEN.findall(stderr):
        problems.append((package, f"cannot be installed: {kind.lower()} {other}"))
    if not problems:
        lines = [line for line in stderr.strip().splitlines() if line.startswith("E:")] or stderr.strip().splitlines()
        problems.append(("", f"apt cannot install it: {' / '.join(lines[-3:])[:500]}"))
    return problems


class AptPool:
    """One BundleApt per target (its lists refreshed once per archive when older than ``lists_max_age``). The
    caller holds the Debian package cache's lock (provision.bootfiles.DebCache.locked) while it uses them:
    image builds share the lists."""

    def __init__(self, cache_dir: Path, lists_max_age: float) -> None:
        self.cache_dir = cache_dir
        self.lists_max_age = lists_max_age
        self._apts: dict[str, BundleApt] = {}
        self._updated: set[str] = set()

    def __call__(self, target: Target) -> BundleApt:
        apt = self._apts.get(target.key)
        if apt is None:
            apt = self._apts[target.key] = BundleApt(self.cache_dir, target)
        if apt.name not in self._updated:
            apt.base.mkdir(parents=True, exist_ok=True)
            apt.update(self.lists_max_age)
            self._updated.add(apt.name)
        return apt
