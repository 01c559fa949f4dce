"""Recipes: a YAML list of steps, validated with pydantic, with dotted overrides.

    name: quickstart
    corpus: {paths: [data/demo/train]}
    steps:
      - demo_corpus: {out: data/demo}
      - score: {name: quality, scorer: fasttext, fit: {positive: {paths: [...]}}}
      - select: {scores: [quality], column: quality, keep: 0.3, by: chars}

A step is written either `- <kind>: {...}` or `- {kind: <kind>, ...}`. Its name defaults to its
kind; two steps of one kind need explicit names. Overrides address top-level keys or steps by
name: `assay run recipes/quickstart.yaml select.keep=0.2 runner.workers=2`. Values are parsed as
YAML, so `keep=0.2`, `paths=[a,b]` and `id_field=null` do what they look like.

The step kinds and their options come from the step registry (`assay.recipe.steps`); unknown
keys, non-finite numbers and booleans for numbers are errors (`assay.util.config.Strict`).
Recipe and step names are plain identifiers: they name folders of the run directory.
"""

from __future__ import annotations

import copy
import os
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

import assay.recipe.steps  # noqa: F401  (registers the built-in steps)
from assay.errors import ConfigError, MissingError
from assay.recipe.spec import CorpusSpec, RunnerSpec, Scale, check_name
from assay.recipe.step import STEPS, Step, kinds_with
from assay.util.config import Strict

AnyStep = Annotated[typing.Union[tuple(STEPS.values())], Field(discriminator="kind")]  # noqa: UP007


def field_values(step: Step, dotted: str) -> list[str]:
    """The string (or strings) at a dotted field path of a step, or none."""
    node: Any = step
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return []
    if isinstance(node, str):
        return [node]
    return [v for v in node if isinstance(v, str)] if isinstance(node, list) else []


def check_references(step: Step, seen: dict[str, type[Step]]) -> None:
    """Fields that name earlier steps must name steps that write what the field needs."""
    for spec_field in ("corpus", "heldout"):
        spec = getattr(step, spec_field, None)
        if isinstance(spec, CorpusSpec) and spec.step is not None:
            ref = spec.step
            if ref not in seen or ref == step.name:
                raise ValueError(
                    f"step {step.name!r}: {spec_field}.step names {ref!r}, which is not an "
                    "earlier step"
                )
            if seen[ref].corpus_output is None:
                kinds = [k for k, c in STEPS.items() if c.corpus_output]
                raise ValueError(
                    f"step {step.name!r}: {spec_field}.step names {ref!r}, a "
                    f"{seen[ref].kind_name()} step; it must be a {' or '.join(kinds)} step"
                )
    for dotted, output in step.references.items():
        for ref in field_values(step, dotted):
            if ref in seen and ref != step.name and output not in seen[ref].outputs:
                raise ValueError(
                    f"step {step.name!r}: {dotted} names {ref!r}, a {seen[ref].kind_name()} step; "
                    f"it must be a {' or '.join(kinds_with(output))} step"
                )


class Recipe(Strict):
    name: str
    description: str = ""
    seed: int = 0
    run_dir: str | None = None
    corpus: CorpusSpec | None = None
    runner: RunnerSpec = Field(default_factory=RunnerSpec)
    scale: Scale | None = Field(
        None, description="Input sizes for `assay run --dry-run`'s estimate; a run ignores it."
    )
    steps: list[AnyStep]  # type: ignore[valid-type]

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return check_name(v, "recipe name")

    @model_validator(mode="after")
    def _check_steps(self) -> Recipe:
        if not self.steps:
            raise ValueError("a recipe needs at least one step")
        if self.corpus is not None and self.corpus.step is not None:
            raise ValueError("the recipe-level corpus cannot name a step; give paths")
        seen: dict[str, type[Step]] = {}
        for step in self.steps:
            if step.name in seen:
                raise ValueError(
                    f"two steps are named {step.name!r}: give each step a distinct name"
                )
            if step.reads_corpus and getattr(step, "corpus", None) is None and not self.corpus:
                raise ValueError(
                    f"step {step.name!r} needs a corpus: set the recipe's corpus or the step's"
                )
            step.check_recipe(seen)
            check_references(step, seen)
            seen[step.name] = type(step)
        return self

    @property
    def resolved_run_dir(self) -> str:
        """The run directory: a local path, or a remote URL (`s3://...`)."""
        return self.run_dir or f"runs/{self.name}"


# ---------------------------------------------------------------------------------------------
# Loading


class RecipeError(ConfigError):
    pass


def _normalise_steps(steps: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(steps, list):
        raise RecipeError(f"{source}: 'steps' must be a list")
    out = []
    for i, raw in enumerate(steps):
        if isinstance(raw, dict) and "kind" not in raw and len(raw) == 1:
            ((kind, body),) = raw.items()
            if kind not in STEPS:
                raise RecipeError(
                    f"{source}: step {i + 1}: unknown step kind {kind!r}; known: {', '.join(STEPS)}"
                )
            body = dict(body or {})
            body["kind"] = kind
        elif isinstance(raw, dict) and "kind" in raw:
            body = dict(raw)
        else:
            raise RecipeError(f"{source}: step {i + 1} must be a mapping like '- score: {{...}}'")
        body.setdefault("name", body["kind"])
        out.append(body)
    return out


def _set_dotted(target: dict[str, Any], path: list[str], value: Any, full: str) -> None:
    node = target
    for key in path[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override {full!r}: {key!r} is not a mapping")
        node = child
    node[path[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a raw (normalised) recipe mapping."""
    top_level = set(Recipe.model_fields)
    steps = {s["name"]: s for s in data.get("steps", [])}
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key.path=value")
        key, raw_value = item.split("=", 1)
        path = [p for p in key.strip().split(".") if p]
        if not path:
            raise RecipeError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else ""
        except yaml.YAMLError as e:
            raise RecipeError(f"override {item!r}: value is not valid YAML ({e})") from None
        if path[0] in steps:
            if len(path) == 1:
                raise RecipeError(
                    f"override {item!r}: name a field of step {path[0]!r}, e.g. {path[0]}.keep=0.2"
                )
            _set_dotted(steps[path[0]], path[1:], value, item)
        elif path[0] in top_level and path[0] != "steps":
            _set_dotted(data, path, value, item)
        else:
            raise RecipeError(
                f"override {item!r}: {path[0]!r} is neither a recipe key "
                f"({', '.join(sorted(top_level - {'steps'}))}) nor a step "
                f"({', '.join(steps) or 'none'})"
            )
    return data


def _error_location(err: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    """Where a validation error is, with a step's name in place of its list index."""
    parts = [str(x) for x in err["loc"]]
    if len(parts) > 1 and parts[0] == "steps" and parts[1].isdigit():
        idx = int(parts[1])
        name = steps[idx].get("name", parts[1]) if idx < len(steps) else parts[1]
        rest = [p for p in parts[2:] if p not in STEPS]
        return ".".join([name, *rest]) if rest else name
    return ".".join(parts)


def parse_recipe(data: Any, overrides: list[str] | None = None, source: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping with 'name' and 'steps'")
    data = copy.deepcopy(data)  # overrides must never reach the caller's mapping
    data["steps"] = _normalise_steps(data.get("steps", []), source)
    apply_overrides(data, list(overrides or []))
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = [f"  {_error_location(err, data['steps'])}: {err['msg']}" for err in e.errors()]
        raise RecipeError(f"{source}: invalid recipe\n" + "\n".join(lines)) from None


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    p = Path(path)
    if not p.exists():
        raise MissingError(f"recipe not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML ({e})") from None
    return parse_recipe(data, overrides, source=str(p))


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe (defaults filled in) as YAML."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
