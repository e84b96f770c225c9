"""Which images each bundle goes onto: the image recipes that list it (``provision bundles check|sync``)."""

from __future__ import annotations

from provision.bundles import Use
from provision.recipes import templates
from provision.recipes.loader import RecipeSet
from provision.recipes.schema import Action


def bundle_uses(recipes: RecipeSet) -> dict[str, list[Use]]:
    """bundle name -> the image recipes that list it, with the image each writes (None when a template names
    it: which image it is depends on the machine)."""
    uses: dict[str, list[Use]] = {}
    for loaded in recipes.recipes:
        r = loaded.recipe
        if r.action is not Action.IMAGE:
            continue
        image = None if r.image is None or templates.has_template(r.image) else r.image
        for name in r.bundles:
            uses.setdefault(name, []).append(Use(r.name, loaded.file, loaded.line, image))
    return uses
