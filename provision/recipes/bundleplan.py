"""A recipe's ``bundles:`` checked against the recipe folder's bundles, and made into plan entries.

Each bundle becomes one entry of the plan's hooks, appended after the recipe's own hooks in the order the
recipe lists the bundles: the built-in ``bundle`` hook, whose parameters say what to install::

    {"name": "bundle", "where": "target",
     "params": {"bundle": "science", "packages": ["geogebra", "kalzium"], "timeout": 900,
                "repo_url": "", "suite": "", "key": ""},
     "timeout": 960, "on_failure": "fail"}

followed, when the bundle names one, by its own post-install hook (no parameters but its defaults, its
header's timeout and on_failure). ``repo_url``, ``suite`` and ``key`` stay empty in the plan: the hook takes
the server the PC booted from (``provision.server=`` of the live environment's kernel command line) with
``/repo/``, the installed system's codename, and the repository's key from ``<repo_url>provision.gpg``; a
server that knows better may fill them in the entry before it runs the hook: provision.postinstall gives
``key`` the repository's armored public key when it has one (docs/bundles.md).
"""

from __future__ import annotations

from typing import Any

from provision import yamlsrc
from provision.bundles import HOOK_MARGIN, BundleFile, BundleSet
from provision.errors import Problem
from provision.hooks import Catalog, ParamProblem
from provision.recipes.schema import Recipe

BUNDLE_HOOK = "bundle"


def _entries(bundle: BundleFile, catalog: Catalog | None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {
        "bundle": bundle.name,
        "packages": bundle.install_arguments(),
        "timeout": bundle.bundle.timeout,
    }
    timeout = bundle.bundle.timeout + HOOK_MARGIN
    on_failure = bundle.bundle.on_failure
    own = bundle.bundle.hook
    if catalog is None:
        entries = [{"name": BUNDLE_HOOK, "where": None, "params": params, "timeout": timeout, "on_failure": on_failure}]
        if own is not None:
            entries.append({"name": own, "where": None, "params": {}, "timeout": None, "on_failure": None})
        return entries
    header = catalog.get(BUNDLE_HOOK)
    if header is None:
        folders = ", ".join(catalog.folders)
        raise ParamProblem(f"the built-in hook {BUNDLE_HOOK!r} is not in the hook catalog ({folders})")
    entries = [
        {
            "name": BUNDLE_HOOK,
            "where": header.header.where.value,
            "params": header.header.resolve(params),
            "timeout": timeout,
            "on_failure": on_failure,
        }
    ]
    found = catalog.get(own) if own is not None else None
    if found is not None:
        h = found.header
        entries.append(
            {"name": h.name, "where": h.where.value, "params": h.resolve({}), "timeout": h.timeout,
             "on_failure": h.on_failure.value}
        )  # fmt: skip
    return entries


def check_bundles(
    recipe: Recipe, doc: yamlsrc.Located, bundles: BundleSet, catalog: Catalog | None
) -> tuple[tuple[BundleFile, ...], tuple[dict[str, Any], ...], list[Problem]]:
    """The bundles ``recipe`` lists, their plan entries, and the problems (an unknown bundle, located in the
    recipe file; the entries are then incomplete and must not be used)."""
    found: list[BundleFile] = []
    entries: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for i, name in enumerate(recipe.bundles):
        line, key = doc.line_of(("bundles", i)), f"bundles[{i}]"
        bundle = bundles.get(name)
        if bundle is None:
            known = ", ".join(bundles.names) or "none"
            where = bundles.folder or "the recipe folder's bundles/"
            problems.append(Problem(doc.file, line, key, f"unknown bundle {name!r} (known in {where}: {known})"))
            continue
        try:
            entries += _entries(bundle, catalog)
        except ParamProblem as exc:
            problems.append(Problem(doc.file, line, key, f"bundle {name!r}: {exc}"))
            continue
        found.append(bundle)
    return tuple(found), tuple(entries), problems
