"""Recipes: YAML lists of steps, validated with pydantic, run in self-describing run folders.

Each step kind is one file in `assay.recipe.steps`; `STEPS` maps kinds to their models.
"""

from assay.recipe.dryrun import Plan, plan_recipe
from assay.recipe.pipeline import RunOutcome, StepOutcome, run_recipe, run_step
from assay.recipe.recipe import Recipe, RecipeError, dump_recipe, load_recipe, parse_recipe
from assay.recipe.step import STEPS, Step, register_step

__all__ = [
    "STEPS",
    "Plan",
    "Recipe",
    "RecipeError",
    "RunOutcome",
    "Step",
    "StepOutcome",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "plan_recipe",
    "register_step",
    "run_recipe",
    "run_step",
]
