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

Unknown keys are errors (a typo never silently falls back to a default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assay.corpus import DEFAULT_MAX_CHARS, Corpus


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusSpec(_Strict):
    """Where a corpus is and how to read it."""

    paths: list[str]
    text_field: str = "text"
    id_field: str | None = "id"
    on_error: Literal["fail", "skip"] = "fail"
    max_chars: int | None = DEFAULT_MAX_CHARS

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def open(self) -> Corpus:
        return Corpus(
            self.paths,
            text_field=self.text_field,
            id_field=self.id_field,
            on_error=self.on_error,
            max_chars=self.max_chars,
        )


class RunnerSpec(_Strict):
    kind: Literal["local", "ray"] = "local"
    workers: int | None = Field(default=None, ge=1)
    address: str | None = None


class _Step(_Strict):
    name: str = ""


class DemoCorpusStep(_Step):
    """Build the real-text demo corpus (skipped if it is already there)."""

    kind: Literal["demo_corpus"] = "demo_corpus"
    out: str = "data/demo"
    size: Literal["small", "full"] = "full"
    heldout: float = Field(default=0.1, ge=0, lt=1)
    seed: int | None = None


class FitSpec(_Strict):
    """Train a binary scorer: positive examples vs negative ones (default: a pool sample)."""

    positive: CorpusSpec
    negative: CorpusSpec | Literal["corpus"] = "corpus"
    n: int = Field(default=10_000, ge=1)
    seed: int | None = None
    balance: bool = True


class ScoreStep(_Step):
    """Score a corpus with a registered scorer: load it (`model`), fit it (`fit`) or neither."""

    kind: Literal["score"] = "score"
    scorer: str
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    fit: FitSpec | None = None
    corpus: CorpusSpec | None = None

    @model_validator(mode="after")
    def _model_or_fit(self) -> ScoreStep:
        if self.model and self.fit:
            raise ValueError("give either model (a saved scorer) or fit, not both")
        return self


class SelectStep(_Step):
    """Keep documents by a score column; `scores` names score steps or score folders."""

    kind: Literal["select"] = "select"
    scores: list[str]
    column: str
    policy: Literal["topk", "gumbel", "threshold"] = "topk"
    keep: float | None = Field(default=None, gt=0, le=1)
    by: Literal["docs", "chars", "tokens"] = "docs"
    mode: Literal["top", "bottom", "middle"] = "top"
    threshold: float | None = None
    tau: float = Field(default=1.0, gt=0)
    seed: int | None = None
    tokenizer: str | None = None
    group_by: str | None = "domain"
    with_scores: bool = False
    format: str | None = None
    corpus: CorpusSpec | None = None

    @field_validator("scores", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class StatsStep(_Step):
    """Document counts and lengths of a corpus, per group."""

    kind: Literal["stats"] = "stats"
    corpus: CorpusSpec | None = None
    group_by: str | None = "domain"


Step = Annotated[DemoCorpusStep | ScoreStep | SelectStep | StatsStep, Field(discriminator="kind")]
STEP_KINDS = ("demo_corpus", "score", "select", "stats")


class Recipe(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    run_dir: str | None = None
    corpus: CorpusSpec | None = None
    runner: RunnerSpec = Field(default_factory=RunnerSpec)
    steps: list[Step]

    @model_validator(mode="after")
    def _check_steps(self) -> Recipe:
        if not self.steps:
            raise ValueError("a recipe needs at least one step")
        seen: dict[str, str] = {}
        for step in self.steps:
            if step.name in seen:
                raise ValueError(
                    f"two steps are named {step.name!r}: give each step a distinct name"
                )
            seen[step.name] = step.kind
            if isinstance(step, SelectStep):
                for ref in step.scores:
                    if ref not in seen and not os.path.isdir(ref):
                        raise ValueError(
                            f"step {step.name!r}: scores entry {ref!r} is neither an earlier score step "
                            f"({', '.join(n for n, k in seen.items() if k == 'score') or 'none'}) nor a folder"
                        )
                    if ref in seen and seen[ref] != "score":
                        raise ValueError(
                            f"step {step.name!r}: {ref!r} is a {seen[ref]} step, not a score step"
                        )
            needs_corpus = (
                isinstance(step, ScoreStep | SelectStep | StatsStep) and step.corpus is None
            )
            if needs_corpus and self.corpus is None:
                raise ValueError(
                    f"step {step.name!r} needs a corpus: set the recipe's corpus or the step's"
                )
        return self

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")


# ---------------------------------------------------------------------------------------------
# Loading


class RecipeError(ValueError):
    pass


def _normalise_steps(steps: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(steps, list):
        raise RecipeError(f"{source}: 'steps' must be a list")
    out = []
    for i, raw in enumerate(steps):
        if isinstance(raw, dict) and "kind" not in raw and len(raw) == 1:
            ((kind, body),) = raw.items()
            if kind not in STEP_KINDS:
                raise RecipeError(
                    f"{source}: step {i + 1}: unknown step kind {kind!r}; known: {', '.join(STEP_KINDS)}"
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
                f"({', '.join(sorted(top_level - {'steps'}))}) nor a step ({', '.join(steps) or 'none'})"
            )
    return data


def parse_recipe(data: Any, overrides: list[str] | None = None, source: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping with 'name' and 'steps'")
    data = dict(data)
    data["steps"] = _normalise_steps(data.get("steps", []), source)
    apply_overrides(data, list(overrides or []))
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            # Replace the list index of a step by its name, which is what users override.
            parts = [str(x) for x in err["loc"]]
            if len(parts) > 1 and parts[0] == "steps" and parts[1].isdigit():
                idx = int(parts[1])
                step_name = (
                    data["steps"][idx].get("name", parts[1])
                    if idx < len(data["steps"])
                    else parts[1]
                )
                rest = [p for p in parts[2:] if p not in STEP_KINDS]
                loc = ".".join([step_name, *rest]) if rest else step_name
            lines.append(f"  {loc}: {err['msg']}")
        raise RecipeError(f"{source}: invalid recipe\n" + "\n".join(lines)) from None


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"recipe not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML ({e})") from None
    return parse_recipe(data, overrides, source=str(p))


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe (defaults filled in) as YAML."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
