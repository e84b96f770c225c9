"""The images a bundle goes onto, as apt must see them: their suite, their archive, the packages they hold.

Recipes say which bundles go with which image (``Use``: a recipe, its file and line, its image reference). An
image's suite and archive come from its definition (``images/NAME.yaml``: ``suite``, default the machine's
codename, and ``components``; the archive is the machine's own, as the image builder derives it); its packages
from the provenance of the version the recipe names in the image store (``packages``, recorded by the
builder; the current version for a plain ``NAME``). An image without a definition (imported by hand) is taken
as the machine's own suite; one without a built version in the store as a minimal base. A busybox (``tiny``)
image has no apt: a bundle on it is a problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.bootfiles import DebCache
from provision.builder.definition import DebianDefinition, LoadedDefinition, TinyDefinition, check_definitions
from provision.builder.resolve import machine_archive
from provision.bundles.resolve import MINIMAL_BASE, Target
from provision.errors import ProvisionError
from provision.images import ImageStore


@dataclass(frozen=True)
class Use:
    """A recipe that lists a bundle, and the image it writes (None: named by a template, unknown before a
    machine is chosen)."""

    recipe: str
    file: str
    line: int
    image: str | None


@dataclass(frozen=True)
class Placed:
    """A bundle on one image: the target apt resolves against, the recipes that put it there, or why it cannot
    go there (``refused``)."""

    target: Target
    uses: tuple[Use, ...]
    refused: str | None = None


class TargetFinder:
    """Image references -> targets, from the definitions folder, the image store and the machine's apt."""

    def __init__(
        self,
        images_dir: Path,
        store: ImageStore | None,
        cache: DebCache,
        *,
        etc_apt: Path = Path("/etc/apt"),
    ) -> None:
        self.cache = cache
        self.store = store
        self.etc_apt = etc_apt
        loaded, _problems = check_definitions(images_dir) if images_dir.is_dir() else ([], [])
        self.definitions: dict[str, LoadedDefinition] = {d.name: d for d in loaded}
        self.images_dir = images_dir

    def host(self, image: str = "(no recipe)") -> Target:
        """The machine's own suite and archive, a minimal base: for a bundle no recipe uses."""
        suite = self.cache.codename
        archive = machine_archive(suite, ["main"], self.cache.codename, self.etc_apt)
        return Target(image, suite, tuple(archive), None, f"a minimal base ({MINIMAL_BASE}) of {suite}")

    def installed(self, ref: str) -> tuple[dict[str, str] | None, str]:
        """The packages of the version ``ref`` names, and where they come from."""
        if self.store is None:
            return None, "no image store"
        try:
            version = self.store.resolve(ref)
        except ProvisionError as exc:
            return None, f"no version in the image store ({exc})"
        packages = version.index.provenance.get("packages")
        if not isinstance(packages, dict) or not packages:
            return None, f"{version.ref} records no package list"
        return {str(k): str(v) for k, v in packages.items()}, f"the packages of {version.ref}"

    def find(self, ref: str) -> tuple[Target, str | None]:
        """The target of image ``ref`` and, when a bundle cannot go onto it, why."""
        name = ref.split("@", 1)[0]
        definition = self.definitions.get(name)
        if definition is not None and isinstance(definition.spec, TinyDefinition):
            target = Target(ref, self.cache.codename, (), {}, "a busybox image")
            return target, f"image {name} is a busybox image (builder tiny, {definition.path}): it has no apt"
        if definition is not None and isinstance(definition.spec, DebianDefinition):
            spec = definition.spec
            suite = spec.suite or self.cache.codename
            archive = machine_archive(suite, spec.components, self.cache.codename, self.etc_apt)
            note = ""
        else:
            suite = self.cache.codename
            archive = machine_archive(suite, ["main"], suite, self.etc_apt)
            note = f"; no definition {name}.yaml in {self.images_dir}: taken as {suite}"
        installed, base = self.installed(ref)
        if installed is None:
            base = f"a minimal base ({MINIMAL_BASE}) of {suite}: {base}"
        return Target(ref, suite, tuple(archive), installed, base + note), None


def place(
    bundles: Iterable[str], uses: Mapping[str, Sequence[Use]], finder: TargetFinder
) -> tuple[dict[str, list[Placed]], list[str]]:
    """Each bundle's images (a bundle no recipe uses: the machine's own suite, for ``bundles check``), and notes
    on what could not be known (an image named by a template)."""
    placed: dict[str, list[Placed]] = {}
    notes: list[str] = []
    cache: dict[str, tuple[Target, str | None]] = {}
    for bundle in bundles:
        by_image: dict[str, list[Use]] = {}
        for use in uses.get(bundle, ()):
            if use.image is None:
                notes.append(
                    f"bundle {bundle}: recipe {use.recipe} ({use.file}:{use.line}) names its image with a template: "
                    "not resolved for it"
                )
                continue
            by_image.setdefault(use.image, []).append(use)
        entries = []
        for ref, image_uses in by_image.items():
            if ref not in cache:
                cache[ref] = finder.find(ref)
            target, refused = cache[ref]
            entries.append(Placed(target, tuple(image_uses), refused))
        if not uses.get(bundle):
            entries.append(Placed(finder.host(), ()))
        placed[bundle] = entries
    return placed, notes
