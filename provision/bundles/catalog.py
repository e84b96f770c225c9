"""The bundles of a recipe folder: every ``bundles/*.yaml`` file checked, problems as ``FILE:LINE: key: message``.

A bundle file is valid when its YAML fits the schema (provision.bundles.schema), it is named after its
``name``, no package is listed twice, every local ``.deb`` is a Debian package inside the bundle's folder
(read with ``dpkg-deb``) and not listed among ``packages`` too, and its ``hook``, when it names one, is in the
hook catalog and takes no required parameter (a bundle gives its hook none). Whether each package exists
in the archive of the images that use the bundle is asked of apt by ``provision bundles check``
(provision.bundles.check): it needs the archive, these checks do not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from provision import yamlsrc
from provision.bundles.debs import DebInfo, read_deb
from provision.bundles.errors import BundleError
from provision.bundles.schema import Bundle, PackageSpec
from provision.errors import ConfigError, Problem
from provision.hooks import Catalog

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 256 * 1024
FOLDER = "bundles"  # a recipe folder's bundles: recipes/bundles/


@dataclass(frozen=True)
class LocalDeb:
    """One of a bundle's ``debs``: its file and what it holds."""

    path: Path
    info: DebInfo


@dataclass(frozen=True)
class BundleFile:
    """A valid bundle, where it came from and the line of each of its values."""

    bundle: Bundle
    path: Path
    file: str  # as problems show it
    doc: yamlsrc.Located = field(compare=False, repr=False)
    debs: tuple[LocalDeb, ...] = ()

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def line(self) -> int:
        return self.doc.line_of(("name",)) or 1

    def line_of(self, *where: str | int) -> int:
        return self.doc.line_of(where) or self.line

    @property
    def specs(self) -> list[PackageSpec]:
        return self.bundle.specs

    def install_arguments(self) -> list[str]:
        """What the PC's ``apt-get install`` is given: the packages (``NAME`` or ``NAME=VERSION``), then each
        local package pinned to its file's version."""
        return [spec.apt_argument for spec in self.specs] + [deb.info.pin for deb in self.debs]


@dataclass(frozen=True)
class BundleSet:
    """The bundles of one folder, by name."""

    folder: str
    bundles: tuple[BundleFile, ...] = ()

    def get(self, name: str) -> BundleFile | None:
        return next((b for b in self.bundles if b.name == name), None)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bundles]


def bundle_files(folder: Path) -> list[Path]:
    """The bundle files of ``folder`` (``*.yaml``, ``*.yml``; not recursive), sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _local_debs(bundle: Bundle, path: Path, doc: yamlsrc.Located) -> tuple[list[LocalDeb], list[Problem]]:
    file = doc.file
    folder = path.parent.resolve()
    debs: list[LocalDeb] = []
    problems: list[Problem] = []
    listed = {spec.name for spec in bundle.specs}
    for i, rel in enumerate(bundle.debs):
        line, key = doc.line_of(("debs", i)), f"debs[{i}]"
        deb = path.parent / rel
        if deb.is_symlink() or not deb.resolve().is_relative_to(folder):
            problems.append(Problem(file, line, key, f"{rel}: a link or outside the bundle's folder {folder}"))
            continue
        if not deb.is_file():
            problems.append(Problem(file, line, key, f"{rel}: no such file in {path.parent}"))
            continue
        try:
            info = read_deb(deb)
        except BundleError as exc:
            problems.append(Problem(file, line, key, f"{rel}: {exc}"))
            continue
        if info.package in listed:
            message = f"{rel} holds package {info.package!r}, which packages lists too: name it in one place"
            problems.append(Problem(file, line, key, message))
            continue
        other = next((d for d in debs if d.info.package == info.package), None)
        if other is not None:
            message = f"{rel} holds package {info.package!r} again (as {other.path.name} does)"
            problems.append(Problem(file, line, key, message))
            continue
        debs.append(LocalDeb(deb, info))
    return debs, problems


def _hook_problems(bundle: Bundle, doc: yamlsrc.Located, catalog: Catalog | None) -> list[Problem]:
    if bundle.hook is None or catalog is None:
        return []
    line = doc.line_of(("hook",))
    found = catalog.get(bundle.hook)
    if found is None:
        known = ", ".join(catalog.names) or "none"
        return [Problem(doc.file, line, "hook", f"unknown hook {bundle.hook!r} (known: {known})")]
    required = [name for name, param in found.header.params.items() if param.required]
    if required:
        message = f"hook {bundle.hook!r} requires {', '.join(required)}: a bundle's hook runs with no parameters"
        return [Problem(doc.file, line, "hook", message)]
    return []


def load_text(
    text: str, path: Path, file: str, catalog: Catalog | None = None
) -> tuple[BundleFile | None, list[Problem]]:
    """One bundle from its YAML ``text`` (``path``: where its local .debs are found from; ``file``: the name
    problems show). Never raises: every problem is returned, located."""
    doc = yamlsrc.load(text, file)
    problems = list(doc.problems)
    if doc.data is None and not problems:
        problems.append(Problem(file, 1, "", "empty file: a bundle is a YAML mapping with name and packages"))
    if doc.data is not None and not isinstance(doc.data, dict):
        problems.append(Problem(file, doc.line_of(()), "", "a bundle must be a YAML mapping"))
    if problems:
        return None, problems
    try:
        bundle = Bundle.model_validate(doc.data)
    except ValidationError as exc:
        return None, yamlsrc.validation_problems(file, doc, exc)
    stem = path.name.rsplit(".", 1)[0]
    if bundle.name != stem:
        message = f"{bundle.name!r} differs from the file's name {path.name!r}: a bundle is named after its file"
        problems.append(Problem(file, doc.line_of(("name",)), "name", message))
    seen: dict[str, int] = {}
    for i, spec in enumerate(bundle.specs):
        if spec.name in seen:
            message = f"package {spec.name!r} is already listed as packages[{seen[spec.name]}]"
            problems.append(Problem(file, doc.line_of(("packages", i)), f"packages[{i}]", message))
        seen.setdefault(spec.name, i)
    debs, found = _local_debs(bundle, path, doc)
    problems += found + _hook_problems(bundle, doc, catalog)
    if problems:
        return None, problems
    return BundleFile(bundle, path, file, doc, tuple(debs)), []


def load_file(path: Path, catalog: Catalog | None = None) -> tuple[BundleFile | None, list[Problem]]:
    file = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            return None, [Problem(file, None, "", f"file is {size} bytes; a bundle is at most {MAX_BUNDLE_BYTES}")]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(file, None, "", f"cannot read: {exc}")]
    return load_text(text, path, file, catalog)


def check_folder(folder: Path, catalog: Catalog | None = None) -> tuple[BundleSet, list[Problem]]:
    """Every valid bundle of ``folder`` and the problems of the others (a missing folder has no bundles: a
    recipe folder need not have any). With ``catalog``, the bundles' hooks are checked against it."""
    if not folder.exists():
        return BundleSet(str(folder)), []
    if not folder.is_dir():
        return BundleSet(str(folder)), [Problem(str(folder), None, "", "not a directory")]
    try:
        paths = bundle_files(folder)
    except OSError as exc:
        return BundleSet(str(folder)), [Problem(str(folder), None, "", f"cannot list: {exc.strerror or exc}")]
    loaded: list[BundleFile] = []
    problems: list[Problem] = []
    for path in paths:
        bundle, found = load_file(path, catalog)
        problems += found
        if bundle is None:
            continue
        first = next((b for b in loaded if b.name == bundle.name), None)
        if first is not None:
            message = f"bundle {bundle.name!r} is already defined in {first.file}:{first.line}"
            problems.append(Problem(bundle.file, bundle.line, "name", message))
            continue
        loaded.append(bundle)
    log.debug("%d bundles from %s, %d problems", len(loaded), folder, len(problems))
    return BundleSet(str(folder), tuple(loaded)), problems


def load_folder(folder: Path, catalog: Catalog | None = None) -> BundleSet:
    """The bundles of ``folder``; any problem raises ConfigError with all of them."""
    bundles, problems = check_folder(folder, catalog)
    if problems:
        raise ConfigError(problems)
    return bundles
