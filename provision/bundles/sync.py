"""``bundles check`` and ``bundles sync``: each bundle resolved on each image that uses it, then mirrored.

check: for every bundle and image, every package must exist in the image's archive (with a version that meets
its constraint) and the whole bundle must install on the image's packages without removing any. Each problem
is ``FILE:LINE: key: message`` in the bundle file: the package's line, or the bundle's name for what concerns
it all.

sync: check first (a problem anywhere changes nothing), then for each suite the packages every bundle needs
on every image of that suite (those the image does not hold already, at the versions apt chose) and the
bundles' own .debs are put in the pool, the suite's index is made and signed when the pool changed, and the
files no bundle needs any more leave the pool. Running it again with nothing changed changes nothing.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provision.bundles.catalog import BundleFile, BundleSet
from provision.bundles.repo import Published, Repository
from provision.bundles.resolve import BundleApt, Needed, Resolution, Target
from provision.bundles.targets import Placed
from provision.errors import ConfigError, Problem

log = logging.getLogger(__name__)

AptFor = Callable[[Target], BundleApt]


@dataclass(frozen=True)
class Resolved:
    """One bundle on one image: what it takes from the archive, and its own packages."""

    bundle: str
    target: Target
    needed: tuple[Needed, ...]
    local: tuple[str, ...]


@dataclass
class SuiteChange:
    suite: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    published: Published | None = None


@dataclass
class SyncReport:
    fingerprint: str
    key_made: bool
    resolved: list[Resolved]
    suites: list[SuiteChange]
    unused: list[str]

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.fingerprint,
            "key_made": self.key_made,
            "bundles": [
                {
                    "bundle": r.bundle,
                    "image": r.target.image,
                    "suite": r.target.suite,
                    "base": r.target.base,
                    "packages": {n.name: n.version for n in r.needed},
                    "local": list(r.local),
                }
                for r in self.resolved
            ],
            "suites": [
                {
                    "suite": s.suite,
                    "added": s.added,
                    "removed": s.removed,
                    "published": bool(s.published and s.published.changed),
                    "packages": s.published.packages if s.published else 0,
                }
                for s in self.suites
            ],
            "unused": self.unused,
        }


def _where(bundle: BundleFile, package: str) -> tuple[int, str]:
    """The line and key of ``package`` in the bundle (a listed package, a local .deb), else its name."""
    for i, spec in enumerate(bundle.specs):
        if spec.name == package:
            return bundle.line_of("packages", i), f"packages[{i}]"
    for i, deb in enumerate(bundle.debs):
        if deb.info.package == package:
            return bundle.line_of("debs", i), f"debs[{i}]"
    return bundle.line, "packages"


def _on(target: Target) -> str:
    uris = ", ".join(sorted({f"{e.uri} {e.suite}" for e in target.archive})) or "no archive"
    return f"image {target.image} ({target.suite}: {uris})"


def check_bundle(bundle: BundleFile, target: Target, apt: BundleApt) -> tuple[Resolution, list[Problem]]:
    """Every package of ``bundle`` in ``target``'s archive with a fitting version, then the whole bundle
    simulated on the image's packages. The resolution is only meaningful without problems."""
    problems: list[Problem] = []
    specs = bundle.specs
    policy = apt.policy([spec.name for spec in specs])
    for i, spec in enumerate(specs):
        line, key = bundle.line_of("packages", i), f"packages[{i}]"
        candidate, versions = policy.get(spec.name, (None, []))
        archive = f"the archive of {_on(target)}"
        message = None
        if spec.name not in policy:
            message = f"package {spec.name!r} is not in {archive}"
        elif candidate is None:
            message = f"package {spec.name!r} has no installable version in {archive} (a virtual package?)"
        elif spec.op == "==" and spec.version not in versions:
            message = f"{spec.name} {spec.version} is not in {archive} (it has {', '.join(versions)})"
        elif spec.op not in (None, "==") and spec.version and not apt.compare(candidate, spec.op, spec.version):
            message = f"{spec.name} {candidate} of {archive} is not {spec.op} {spec.version}"
        if message is not None:
            problems.append(Problem(bundle.file, line, key, message))
    if problems:
        return Resolution(), problems
    resolution = apt.resolve(bundle.install_arguments(), [(d.path, d.info) for d in bundle.debs])
    for package, why in resolution.problems:
        line, key = _where(bundle, package) if package else (bundle.line, "packages")
        subject = f"package {package!r}" if package else f"bundle {bundle.name!r}"
        problems.append(Problem(bundle.file, line, key, f"{subject} on {_on(target)}: {why}"))
    return resolution, problems


def check_archive(
    bundles: BundleSet, placed: Mapping[str, Sequence[Placed]], apt_for: AptFor
) -> tuple[list[Resolved], list[Problem]]:
    """Every bundle checked on every image it goes onto (see the module docstring)."""
    resolved: list[Resolved] = []
    problems: list[Problem] = []
    for bundle in bundles.bundles:
        for place in placed.get(bundle.name, ()):
            if place.refused is not None:
                used = "; ".join(f"recipe {u.recipe} ({u.file}:{u.line})" for u in place.uses)
                problems.append(Problem(bundle.file, bundle.line, "name", f"used by {used}: {place.refused}"))
                continue
            resolution, found = check_bundle(bundle, place.target, apt_for(place.target))
            problems += found
            if not found:
                resolved.append(Resolved(bundle.name, place.target, resolution.needed, resolution.local))
    return resolved, problems


def sync(bundles: BundleSet, placed: Mapping[str, Sequence[Placed]], repo: Repository, apt_for: AptFor) -> SyncReport:
    """Check, then mirror (see the module docstring). ConfigError with every problem, before any change."""
    used = {name: [p for p in places if p.uses] for name, places in placed.items()}
    resolved, problems = check_archive(bundles, used, apt_for)
    if problems:
        raise ConfigError(problems)
    fingerprint, made = repo.publish_key()
    by_suite: dict[str, list[Resolved]] = {}
    for item in resolved:
        by_suite.setdefault(item.target.suite, []).append(item)
    changes = []
    for suite in sorted(set(by_suite) | set(repo.suites())):
        changes.append(_sync_suite(suite, by_suite.get(suite, []), bundles, repo, apt_for, fingerprint))
    unused = [b.name for b in bundles.bundles if not used.get(b.name)]
    return SyncReport(fingerprint, made, resolved, changes, unused)


def _sync_suite(
    suite: str,
    items: Sequence[Resolved],
    bundles: BundleSet,
    repo: Repository,
    apt_for: AptFor,
    fingerprint: str,
) -> SuiteChange:
    change = SuiteChange(suite)
    present = repo.pool_files(suite)
    wanted: dict[str, tuple[Path | None, Target, Needed | None]] = {}
    for item in items:
        for needed in item.needed:
            wanted.setdefault(needed.pool_name, (None, item.target, needed))
        bundle = bundles.get(item.bundle)
        for deb in bundle.debs if bundle else ():
            wanted.setdefault(deb.info.pool_name, (deb.path, item.target, None))
    to_fetch: dict[str, tuple[Target, list[Needed]]] = {}
    for name, (source, target, item_needed) in sorted(wanted.items()):
        if name in present:
            continue
        if source is not None:
            repo.add(suite, source, name)
            change.added.append(name)
        elif item_needed is not None:
            to_fetch.setdefault(target.key, (target, []))[1].append(item_needed)
    for target, needed_list in to_fetch.values():
        with tempfile.TemporaryDirectory(dir=repo.root.parent, prefix=f".{repo.root.name}-fetch-") as tmp:
            for path in apt_for(target).fetch(needed_list, Path(tmp)):
                repo.add(suite, path, path.name)
                change.added.append(path.name)
    change.added.sort()
    change.published = repo.publish(suite, fingerprint, wanted)
    change.removed = sorted(set(present) - set(wanted))
    repo.remove(suite, change.removed)  # once the index without them is out
    return change
