"""Load and check a folder of recipes, reporting every problem at once as FILE:LINE: key: message.

Given a hook catalog (provision.hooks), each recipe's ``hooks:`` are checked against the hooks' headers too
(provision.recipes.hookcheck), once the recipe is otherwise valid, and the loaded recipe carries the headers
its plan is rendered with. Without one, hook names and parameters are taken as they are.

The folder's ``bundles/`` (provision.bundles) are loaded with it: their own problems are the set's, and each
recipe's ``bundles:`` must name them (provision.recipes.bundleplan); the loaded recipe carries the plan
entries its bundles become."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from provision import yamlsrc
from provision.bundles import FOLDER, BundleFile, BundleSet, check_folder
from provision.errors import ConfigError, Problem
from provision.hooks import Catalog, Header
from provision.recipes import templates
from provision.recipes.bundleplan import check_bundles
from provision.recipes.conditions import Condition, ConditionError, compile_condition
from provision.recipes.hookcheck import check_hooks
from provision.recipes.schema import Recipe

log = logging.getLogger(__name__)

MAX_RECIPE_BYTES = 256 * 1024  # a recipe is a page; yamlsrc.MAX_CHARS bounds the reading too


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    file: str
    line: int
    conditions: tuple[Condition, ...]
    hooks: tuple[Header, ...] = ()  # the header of each of recipe.hooks, when loaded with a catalog
    bundles: tuple[BundleFile, ...] = ()  # recipe.bundles, loaded
    bundle_hooks: tuple[dict[str, Any], ...] = ()  # the plan entries of the bundles, after the recipe's hooks

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def specificity(self) -> int:
        return len(self.conditions)


@dataclass(frozen=True)
class RecipeSet:
    directory: str
    recipes: tuple[LoadedRecipe, ...]
    bundles: BundleSet = field(default_factory=lambda: BundleSet(""))

    @property
    def default(self) -> LoadedRecipe | None:
        return next((r for r in self.recipes if r.recipe.default), None)

    def get(self, name: str) -> LoadedRecipe | None:
        return next((r for r in self.recipes if r.name == name), None)


def _template_fields(recipe: Recipe) -> list[tuple[tuple[str | int, ...], str]]:
    fields: list[tuple[tuple[str | int, ...], str]] = []
    if recipe.hostname is not None:
        fields.append((("hostname",), recipe.hostname))
    if recipe.image is not None:
        fields.append((("image",), recipe.image))
    if recipe.erase is not None and recipe.erase.lot is not None:
        fields.append((("erase", "lot"), recipe.erase.lot))
    for i, hook in enumerate(recipe.hooks):
        fields.extend(templates.walk_strings(hook.params, ("hooks", i, "params")))
    return fields


def load_file(
    path: Path, display: str | None = None, catalog: Catalog | None = None, bundles: BundleSet | None = None
) -> tuple[LoadedRecipe | None, list[Problem]]:
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            return None, [Problem(name, None, "", f"file is {size} bytes; recipes are limited to {MAX_RECIPE_BYTES}")]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, None, "", f"cannot read: {exc}")]
    return load_text(text, name, catalog, bundles)


def load_text(
    text: str, name: str, catalog: Catalog | None = None, bundles: BundleSet | None = None
) -> tuple[LoadedRecipe | None, list[Problem]]:
    """One recipe from its YAML text (``name``: the file shown in problems). Never raises: YAML and templates
    are read with bounded work (provision.yamlsrc, provision.recipes.sandbox). With ``catalog``, its hooks
    are checked against the hooks' headers; its bundles must be ``bundles``' (none: no bundle is known)."""
    doc = yamlsrc.load(text, name)
    problems = list(doc.problems)
    if doc.data is None and not problems:
        return None, [Problem(name, 1, "", "empty file: a recipe is a YAML mapping with at least 'name'")]
    if doc.data is not None and not isinstance(doc.data, dict):
        return None, [*problems, Problem(name, doc.line_of(()), "", "a recipe must be a YAML mapping")]
    if doc.data is None:
        return None, problems

    conditions: list[Condition] = []
    match = doc.data.get("match")
    if isinstance(match, dict):
        for fact, spec in match.items():
            try:
                conditions.append(compile_condition(fact, spec))
            except ConditionError as exc:
                problems.append(Problem(name, doc.line_of(("match", fact)), f"match.{fact}", str(exc)))

    try:
        recipe = Recipe.model_validate(doc.data)
    except ValidationError as exc:
        return None, problems + yamlsrc.validation_problems(doc.file, doc, exc)

    budget = templates.Budget()  # the trial renders of one file share one render's time
    for where, source in _template_fields(recipe):
        try:
            templates.check(source, budget)
        except templates.TemplateProblem as exc:
            problems.append(Problem(name, doc.line_of(where), yamlsrc.dotted(where), str(exc)))
    if not recipe.default and not recipe.match:
        problems.append(
            Problem(name, doc.line_of(()), "match", "a recipe without match conditions must be 'default: true'")
        )
    if problems:
        return None, problems
    headers: tuple[Header, ...] = ()
    if catalog is not None:
        headers, problems = check_hooks(recipe, doc, catalog)
    found, entries, bundle_problems = check_bundles(recipe, doc, bundles or BundleSet(""), catalog)
    problems += bundle_problems
    if problems:
        return None, problems
    return LoadedRecipe(recipe, name, doc.line_of(()) or 1, tuple(conditions), headers, found, entries), []


def recipe_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def check_dir(directory: Path, catalog: Catalog | None = None) -> tuple[RecipeSet, list[Problem]]:
    """Load every recipe that is valid and collect the problems of the others and of the set (with
    ``catalog``: their hooks checked against it), the folder's bundles with them."""
    if not directory.is_dir():
        return RecipeSet(str(directory), ()), [Problem(str(directory), None, "", "not a directory")]
    bundles, problems = check_folder(directory / FOLDER, catalog)
    loaded: list[LoadedRecipe] = []
    files = recipe_files(directory)
    if not files:
        problems.append(Problem(str(directory), None, "", "no recipe files (*.yaml) found"))
    for path in files:
        recipe, found = load_file(path, catalog=catalog, bundles=bundles)
        problems.extend(found)
        if recipe is not None:
            loaded.append(recipe)
    seen: dict[str, LoadedRecipe] = {}
    for rec in loaded:
        if rec.name in seen:
            first = seen[rec.name]
            problems.append(
                Problem(
                    rec.file,
                    rec.line,
                    "name",
                    f"recipe {rec.name!r} is already defined in {first.file}:{first.line}",
                )
            )
        else:
            seen[rec.name] = rec
    defaults = [r for r in loaded if r.recipe.default]
    for extra in defaults[1:]:
        problems.append(
            Problem(
                extra.file,
                extra.line,
                "default",
                f"only one default recipe is allowed; {defaults[0].file} is one",
            )
        )
    log.debug("loaded %d recipes from %s, %d problems", len(loaded), directory, len(problems))
    return RecipeSet(str(directory), tuple(loaded), bundles), problems


def load_dir(directory: Path, catalog: Catalog | None = None) -> RecipeSet:
    """Load a recipe folder; any problem anywhere raises ConfigError carrying all of them."""
    recipes, problems = check_dir(directory, catalog)
    if problems:
        raise ConfigError(problems)
    return recipes
