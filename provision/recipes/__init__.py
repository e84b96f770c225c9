"""Recipes: YAML files that say what to do with each class of machine (see docs/recipes.md)."""

from provision.recipes.conditions import Condition, ConditionError, Outcome, compile_condition
from provision.recipes.loader import LoadedRecipe, RecipeSet, check_dir, load_dir, load_file
from provision.recipes.schema import Action, Health, Hook, Recipe, TargetDisk, Wipe
from provision.recipes.select import Candidate, Decision, Plan, render_plan, select
from provision.recipes.uses import bundle_uses

__all__ = [
    "Action",
    "Candidate",
    "Condition",
    "ConditionError",
    "Decision",
    "Health",
    "Hook",
    "LoadedRecipe",
    "Outcome",
    "Plan",
    "Recipe",
    "RecipeSet",
    "TargetDisk",
    "Wipe",
    "bundle_uses",
    "check_dir",
    "compile_condition",
    "load_dir",
    "load_file",
    "render_plan",
    "select",
]
