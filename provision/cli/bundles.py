"""`provision bundles list|check|sync`: the software bundles of a recipe folder (``DIR/bundles/*.yaml``).

``check`` asks apt whether each bundle installs on each image its recipes write; ``sync`` mirrors what they
need into the server's repository (docs/bundles.md).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import DEFAULT_STATE, Parser, dump
from provision.cli.facts import default_recipes_dir
from provision.cli.hooks import folders
from provision.errors import ConfigError

CHECK_LISTS_MAX_AGE = 24 * 3600.0
SYNC_LISTS_MAX_AGE = 3600.0  # the nightly sync sees last hour's archive, as the image rebuild does


@dataclass
class Loaded:
    recipes: Any  # provision.recipes.RecipeSet
    problems: list[Any]


def _load(args: argparse.Namespace) -> Loaded:
    from provision.hooks import check_folders
    from provision.recipes import check_dir

    catalog, problems = check_folders(folders(args.hooks))
    recipes, found = check_dir(Path(args.dir) if args.dir else _config_recipes(args), catalog)
    return Loaded(recipes, problems + found)


def _config(args: argparse.Namespace) -> Any:
    from provision.config import load_config

    overrides = {"state_dir": args.state_dir} if getattr(args, "state_dir", None) else {}
    return load_config(Path(args.config) if args.config else None, overrides)


def _config_recipes(args: argparse.Namespace) -> Path:
    return _config(args).recipes_dir if args.config else default_recipes_dir()


def _store(args: argparse.Namespace) -> Any:
    from provision.images import ImageStore

    if args.store:
        return ImageStore(Path(args.store))
    path = _config(args).images_dir if args.config or getattr(args, "state_dir", None) else DEFAULT_STATE / "images"
    return ImageStore(path) if path.is_dir() else None  # no store: every image is taken as a minimal base


def _placed(args: argparse.Namespace, loaded: Loaded, lists_max_age: float) -> tuple[Any, Any, list[str], Any]:
    """(the placed bundles, the apt pool, notes, the Debian package cache)."""
    from provision.bootfiles import DEFAULT_CACHE, DebCache
    from provision.bundles import AptPool, TargetFinder, place
    from provision.recipes import bundle_uses
    from provision.resources import data_dir

    cache = DebCache(Path(args.cache) if args.cache else DEFAULT_CACHE, lists_max_age=lists_max_age)
    images = Path(args.images) if args.images else data_dir("images")
    finder = TargetFinder(images, _store(args), cache)
    bundles = loaded.recipes.bundles
    placed, notes = place(bundles.names, bundle_uses(loaded.recipes), finder)
    return placed, AptPool(cache.cache_dir, lists_max_age), notes, cache


def _packages(bundle: Any) -> str:
    names = [str(spec) for spec in bundle.specs] + [deb.path.name for deb in bundle.debs]
    return ", ".join(names)


def cmd_bundles_list(args: argparse.Namespace, out: TextIO) -> int:
    from provision.recipes import bundle_uses

    loaded = _load(args)
    if loaded.problems:
        raise ConfigError(loaded.problems)
    uses = bundle_uses(loaded.recipes)
    bundles = loaded.recipes.bundles
    if args.json:
        dump(
            [
                {
                    "name": b.name,
                    "file": b.file,
                    "description": b.bundle.description,
                    "packages": b.bundle.packages,
                    "debs": [str(d.path) for d in b.debs],
                    "hook": b.bundle.hook,
                    "timeout": b.bundle.timeout,
                    "on_failure": b.bundle.on_failure,
                    "recipes": [{"recipe": u.recipe, "image": u.image} for u in uses.get(b.name, [])],
                }
                for b in bundles.bundles
            ],
            out,
        )
        return 0
    if not bundles.bundles:
        out.write(f"no bundles in {bundles.folder}\n")
    for i, b in enumerate(bundles.bundles):
        if i:
            out.write("\n")
        out.write(f"{b.name}  ({b.file}; apt {b.bundle.timeout} s, on_failure {b.bundle.on_failure})\n")
        if b.bundle.description:
            out.write(f"  {b.bundle.description}\n")
        out.write(f"  packages: {_packages(b)}\n")
        if b.bundle.hook:
            out.write(f"  then hook {b.bundle.hook}\n")
        used = [f"{u.recipe} ({u.image or 'image by template'})" for u in uses.get(b.name, [])]
        out.write(f"  recipes: {', '.join(used) or 'none (not mirrored by bundles sync)'}\n")
    return 0


def _resolved_line(item: Any) -> str:
    t = item.target
    needed = ", ".join(f"{n.name} {n.version}" for n in item.needed) or "nothing"
    local = f"; its own: {', '.join(item.local)}" if item.local else ""
    return f"  {item.bundle} on {t.image} ({t.suite}; {t.base}): from the archive: {needed}{local}\n"


def cmd_bundles_check(args: argparse.Namespace, out: TextIO) -> int:
    from provision.bundles import check_archive

    loaded = _load(args)
    problems = list(loaded.problems)
    bundles = loaded.recipes.bundles
    if args.offline:
        if problems:
            raise ConfigError(problems)
        out.write(f"{bundles.folder}: {len(bundles.bundles)} bundles OK (files only: the archive not asked)\n")
        return 0
    placed, apt_for, notes, cache = _placed(args, loaded, CHECK_LISTS_MAX_AGE)
    with cache.locked():
        resolved, found = check_archive(bundles, placed, apt_for)
    problems += found
    for note in notes:
        out.write(f"note: {note}\n")
    if problems:
        raise ConfigError(problems)
    out.write(f"{bundles.folder}: {len(bundles.bundles)} bundles OK\n")
    for item in resolved:
        out.write(_resolved_line(item))
    return 0


def cmd_bundles_sync(args: argparse.Namespace, out: TextIO) -> int:
    from provision.bundles import RepoKey, Repository, sync

    loaded = _load(args)
    if loaded.problems:
        raise ConfigError(loaded.problems)
    config = _config(args)
    root = Path(args.repo) if args.repo else config.repo_path
    key = RepoKey(config.state_dir / "secrets" / "repo-gnupg")
    placed, apt_for, notes, cache = _placed(args, loaded, SYNC_LISTS_MAX_AGE)
    for note in notes:
        out.write(f"note: {note}\n")
    try:
        with cache.locked():
            report = sync(loaded.recipes.bundles, placed, Repository(root, key), apt_for)
    finally:
        key.close()
    if args.json:
        dump({"repository": str(root), **report.to_dict()}, out)
        return 0
    made = ", made now" if report.key_made else ""
    out.write(f"repository {root} (key {report.fingerprint}{made})\n")
    for item in report.resolved:
        out.write(_resolved_line(item))
    for change in report.suites:
        p = change.published
        state = ("published" if p.changed else "unchanged") if p else "not indexed"
        count = p.packages if p else 0
        out.write(f"  suite {change.suite}: {len(change.added)} added, {len(change.removed)} removed; index {state} "
                  f"({count} packages)\n")  # fmt: skip
        for name in change.added:
            out.write(f"    + {name}\n")
        for name in change.removed:
            out.write(f"    - {name}\n")
    for name in report.unused:
        out.write(f"  {name}: no recipe lists it: nothing mirrored\n")
    return 0


def add_commands(sub: Any) -> None:
    bundles = sub.add_parser("bundles", help="software bundles: list, check against the archive, mirror")
    bsub = bundles.add_subparsers(dest="bundles_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)

    def command(name: str, help_text: str, description: str) -> Any:
        p = bsub.add_parser(name, help=help_text, description=description)
        p.add_argument("dir", nargs="?", metavar="DIR", help="recipe folder, its bundles in DIR/bundles/ "
                       "(default: the configuration's, else recipes/)")  # fmt: skip
        p.add_argument("--hooks", metavar="DIR", help="a site's hook folder (besides the built-in hooks)")
        p.add_argument("--config", metavar="FILE", help="the server's YAML configuration")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    def apt_options(p: Any) -> None:
        p.add_argument("--images", metavar="DIR", help="image definitions (default: images/)")
        p.add_argument("--store", metavar="DIR", help="image store: the package lists of built images (default: "
                       "the configuration's, else /var/lib/provision/images when it exists)")  # fmt: skip
        p.add_argument("--cache", metavar="DIR", help="Debian package cache (default: /var/cache/provision/debs)")

    p = command("list", "list the bundles and the recipes that use them", "List every bundle: its packages, "
                "its hook, the recipes that list it and their images.")  # fmt: skip
    p.set_defaults(func=cmd_bundles_list)
    p = command(
        "check", "check the bundles against the archive of the images that use them",
        "Check every bundle file, then ask apt whether each package is in the archive of each image whose recipe "
        "lists the bundle (a bundle no recipe lists: the machine's own suite) and whether the bundle installs on "
        "that image's packages; print FILE:LINE: key: message for each problem and exit 1 if any.",
    )  # fmt: skip
    apt_options(p)
    p.add_argument("--offline", action="store_true", help="check the files only, without asking the archive")
    p.set_defaults(func=cmd_bundles_check)
    p = command(
        "sync", "mirror what the bundles need into the server's repository",
        "Check (nothing changes on a problem), then put into the server's repository the packages each bundle "
        "needs on each image its recipes write, and the bundles' own .debs; index and sign each suite that "
        "changed; drop the files no bundle needs. Prints what was added and removed.",
    )  # fmt: skip
    apt_options(p)
    p.add_argument("--state-dir", metavar="DIR", help=f"the server's state: the repository key, repo/ and "
                   f"images/ (default: the configuration's, else {DEFAULT_STATE})")  # fmt: skip
    p.add_argument("--repo", metavar="DIR", help="the repository (default: the configuration's repo_dir, else "
                   "STATE/repo)")  # fmt: skip
    p.set_defaults(func=cmd_bundles_sync)
