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

Unknown keys are errors (a typo never silently falls back to a default), and so are numbers
that are not finite (`.nan`, `.inf`) and booleans where a number is expected (`keep: true`).
Recipe and step names are plain identifiers: they name folders of the run directory.
"""

from __future__ import annotations

import copy
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from assay.common.tokenizer import MAX_VOCAB_SIZE, MIN_VOCAB_SIZE
from assay.io.corpus import Corpus
from assay.io.shards import DEFAULT_MAX_CHARS

#: A recipe or step name: it becomes a folder name, and a dotted override's first part.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type accepts true/false as such (not as the number 1 or 0)."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(a) for a in typing.get_args(annotation))
    return origin is Literal and any(isinstance(a, bool) for a in typing.get_args(annotation))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if isinstance(value, bool) and field and not _admits_bool(field.annotation):
                    raise ValueError(f"{key}: expected a number or text, not {str(value).lower()}")
        return data


def check_name(name: str, what: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise ValueError(
            f"{what} {name!r} must be a plain name (letters, digits, '_' and '-', starting with "
            "a letter or digit): it names a folder of the run directory"
        )
    return name


class CorpusSpec(_Strict):
    """Where a corpus is (files, folders, globs, or the output of an earlier step) and how to read it."""

    paths: list[str] = Field(default_factory=list)
    step: str | None = None  # an earlier demo_corpus (its train split), select or cluster step
    output: str | None = None  # which of the step's outputs, e.g. heldout (default: its corpus)
    text_field: str = "text"
    id_field: str | None = "id"
    on_error: Literal["fail", "skip"] = "fail"
    max_chars: int | None = DEFAULT_MAX_CHARS

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _paths_or_step(self) -> CorpusSpec:
        if bool(self.paths) == bool(self.step):
            raise ValueError("a corpus gives either paths or step (the name of an earlier step)")
        return self

    def open(self, paths: list[str] | None = None) -> Corpus:
        return Corpus(
            paths or self.paths,
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

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return check_name(v, "step name")


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
    seed: int | None = None  # for scorers that take one (random); default: the recipe's seed
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
    mode: Literal["top", "bottom", "middle", "high", "low", "medium"] = "top"
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


class TokenizerStep(_Step):
    """Train a byte-level BPE tokenizer on a sample of a corpus (shared by later proxy steps)."""

    kind: Literal["tokenizer"] = "tokenizer"
    corpus: CorpusSpec | None = None
    vocab_size: int = Field(default=2048, ge=MIN_VOCAB_SIZE, le=MAX_VOCAB_SIZE)
    sample_docs: int = Field(default=20_000, ge=1)
    seed: int | None = None


class TrainProxyStep(_Step):
    """Train one proxy LM on a mixture of the corpus' domains and measure it."""

    kind: Literal["train_proxy"] = "train_proxy"
    corpus: CorpusSpec | None = None
    mixture: dict[str, float] | str = "natural"  # also: a search, bimix or mixture step
    tokens: int = Field(ge=1)
    preset: str = "tiny"
    seed: int | None = None
    tokenizer: str | None = None  # a tokenizer step, a folder, or none (train one)
    heldout: CorpusSpec | None = None
    eval_docs: int | None = Field(default=200, ge=1)
    tasks: list[str] = Field(default_factory=list)
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig fields: lr, batch_size, ...
    runs_table: str | None = None

    @field_validator("train")
    @classmethod
    def _train_config(cls, v: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import fields

        from assay.proxies.train import TrainConfig

        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(
                f"unknown training settings {unknown}; known: {', '.join(sorted(known))}"
            )
        TrainConfig(**v)  # range checks
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        from assay.proxies.model import get_preset

        get_preset(v)
        return v


class EvalStep(_Step):
    """Per-domain bits per byte and lm-eval tasks for a model (a train_proxy step or a folder)."""

    kind: Literal["eval"] = "eval"
    model: str
    gguf_file: str | None = None
    heldout: CorpusSpec | None = None
    eval_docs: int | None = Field(default=200, ge=1)
    tasks: list[str] = Field(default_factory=list)
    limit: int | None = None
    seq_len: int = Field(default=256, ge=2)


class TargetSpec(_Strict):
    """Target examples: a built-in benchmark (assay_champ, assay_mmlu_dev) or a file."""

    source: str
    fields: list[str] | None = None
    max_items: int | None = Field(default=None, ge=1)


class BETRStep(_Step):
    """Fit BETR (benchmark-targeted ranking -> fastText) on a pool sample, score the corpus."""

    kind: Literal["betr"] = "betr"
    targets: TargetSpec
    sample: int = Field(default=10_000, ge=1)
    embedder: str | None = None  # None: all-MiniLM-L6-v2; "static": distilled from it; a folder
    long_docs: Literal["truncate", "mean"] = "truncate"
    aggregation: Literal["max", "mean"] = "max"
    positive_fraction: float = Field(default=0.1, gt=0, lt=1)
    params: dict[str, Any] = Field(default_factory=dict)  # fastText settings
    column: str = "betr"
    seed: int | None = None
    corpus: CorpusSpec | None = None


class MassStep(_Step):
    """Fit MASS (a skill graph from a reference set) and score the corpus with it."""

    kind: Literal["mass"] = "mass"
    reference: TargetSpec
    tags_field: str | None = None  # per-example skill tags in a reference file
    skills: Literal["auto", "tags", "keyphrase", "cluster"] = "auto"
    embedder: str | None = None  # None: all-MiniLM-L6-v2; "static": distilled from it; a folder
    merge_threshold: float = Field(default=0.9, gt=0, le=1)
    min_cooccurrence: int = Field(default=1, ge=1)
    top_k: int | None = Field(default=10, ge=1)
    aggregation: Literal["quadratic", "linear"] = "quadratic"
    column: str = "mass"
    seed: int | None = None
    corpus: CorpusSpec | None = None


class MatesStep(_Step):
    """Staged pretraining with MATES selection (or its random twin, `method: random`)."""

    kind: Literal["mates"] = "mates"
    reference: TargetSpec
    method: Literal["mates", "random"] = "mates"
    group: bool = False  # Group-MATES: relational influence and cluster-wise greedy selection
    stage_tokens: int = Field(ge=1)
    stages: int = Field(default=2, ge=1)
    keep: float = Field(default=0.2, gt=0, le=1)
    tau: float = Field(default=0.5, gt=0)
    probes: int = Field(default=300, ge=10)
    preset: str = "tiny"
    tokenizer: str | None = None
    heldout: CorpusSpec | None = None
    eval_docs: int | None = Field(default=200, ge=1)
    embedder: str | None = None  # None: all-MiniLM-L6-v2; "static"; a folder
    train: dict[str, Any] = Field(default_factory=dict)  # over mates_train_config()
    seed: int | None = None
    corpus: CorpusSpec | None = None

    _check_train = field_validator("train")(TrainProxyStep._train_config.__func__)  # type: ignore[attr-defined]
    _check_preset = field_validator("preset")(TrainProxyStep._preset.__func__)  # type: ignore[attr-defined]


class FamilyModel(_Strict):
    path: str
    score: float | None = None  # benchmark score, higher is better; else from the targets
    gguf_file: str | None = None
    name: str | None = None


class FamilySpec(_Strict):
    """PreSelect's model family: given models, or proxies that assay trains on the corpus."""

    models: list[FamilyModel] = Field(default_factory=list)
    vary: Literal["tokens", "preset", "mixture"] = "mixture"
    n: int = Field(default=5, ge=3)
    tokens: int = Field(default=200_000, ge=1)
    preset: str = "tiny"
    presets: list[str] = Field(default_factory=lambda: ["tiny", "xs", "s"])
    concentration: float = Field(default=1.0, gt=0)
    tokenizer: str | None = None  # a tokenizer step or folder (default: train one)
    train: dict[str, Any] = Field(default_factory=dict)


class PreSelectStep(_Step):
    """Fit PreSelect (predictive strength over a model family -> fastText), score the corpus."""

    kind: Literal["preselect"] = "preselect"
    family: FamilySpec = Field(default_factory=FamilySpec)
    targets: TargetSpec | None = None
    calibration: int = Field(default=2_000, ge=1)
    positive_fraction: float = Field(default=0.1, gt=0, le=0.5)
    params: dict[str, Any] = Field(default_factory=dict)
    column: str = "preselect"
    seed: int | None = None
    corpus: CorpusSpec | None = None

    @model_validator(mode="after")
    def _scores_or_targets(self) -> PreSelectStep:
        if self.targets is None and (
            not self.family.models or any(m.score is None for m in self.family.models)
        ):
            raise ValueError(
                "preselect needs each family model's benchmark score, or targets to compute them from"
            )
        return self


class PruneSpec(_Strict):
    """Drop clusters whose mean score is below a threshold (CLIMB drops quality < 3 of 5)."""

    scores: str  # a score step or a scores folder
    column: str
    below: float


class ClusterStep(_Step):
    """Embed, k-means, prune and merge an unlabeled corpus into domains (CLIMB stage A)."""

    kind: Literal["cluster"] = "cluster"
    corpus: CorpusSpec | None = None
    heldout: CorpusSpec | None = None  # labelled with the same domains (for per-domain eval)
    embedder: str | None = None  # None: all-MiniLM-L6-v2; "static": distilled from it; a folder
    long_docs: Literal["truncate", "mean"] = "truncate"
    k_init: int | None = Field(default=None, ge=2)
    sample: int = Field(default=20_000, ge=2)
    merge_distance: float | None = Field(default=None, ge=0)
    n_domains: int | None = Field(default=None, ge=1)
    min_cluster_share: float = Field(default=0.0, ge=0, lt=1)  # smaller clusters join a neighbour
    prune: PruneSpec | None = None
    seed: int | None = None


class _MixingStep(_Step):
    """Settings shared by the steps that train proxies on mixtures of a corpus' domains."""

    corpus: CorpusSpec | None = None
    heldout: CorpusSpec | None = None
    tokenizer: str | None = None  # a tokenizer step or folder (default: train one)
    preset: str = "tiny"
    eval_docs: int | None = Field(default=200, ge=1)
    train: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None

    _check_train = field_validator("train")(TrainProxyStep._train_config.__func__)  # type: ignore[attr-defined]
    _check_preset = field_validator("preset")(TrainProxyStep._preset.__func__)  # type: ignore[attr-defined]


class SearchStep(_MixingStep):
    """CLIMB (iterative bootstrapping) or RegMix (one round) mixture search with proxies."""

    kind: Literal["search"] = "search"
    method: Literal["climb", "regmix"] = "climb"
    objective: str = "bpb.domain_mean"  # a runs-table column, minimised; '-' negates
    tokens: int = Field(ge=1)  # per proxy
    runs: int = Field(default=14, ge=3)
    split: list[float] = Field(default_factory=lambda: [4.0, 2.0, 1.0])
    tasks: list[str] = Field(default_factory=list)
    predictor: Literal["auto", "lightgbm", "linear"] = "auto"  # auto: best held-out Spearman
    candidates: int = Field(default=10_000, ge=10)
    regmix_top_k: int = Field(default=16, ge=1)
    temperature: float = Field(default=0.5, gt=0)  # prior: token counts ** temperature
    strengths: tuple[float, float, int] = (0.1, 5.0, 15)
    max_epochs: float | None = Field(default=None, gt=0)
    floor: float = Field(default=2e-4, ge=0, lt=1)


class BiMixStep(_MixingStep):
    """Fit BiMix's bivariate law on a few proxy runs; the optimal mixture for a budget."""

    kind: Literal["bimix"] = "bimix"
    tokens: int = Field(ge=1)  # per fitting run
    runs: int = Field(default=5, ge=2)
    evals: int = Field(default=8, ge=4)
    budget: float | None = Field(default=None, gt=0)  # tokens (default: tokens)
    budgets: list[float] | None = None
    weights: dict[str, float] | None = None
    concentration: tuple[float, float] = (2.0, 10.0)
    min_share: float = Field(default=0.01, ge=0, lt=1)  # floor of every domain in the optimum


class MixtureStep(_Step):
    """A training-free mixture: natural, uniform, temperature, UniMax or entropy (BiMix CE)."""

    kind: Literal["mixture"] = "mixture"
    method: Literal["natural", "uniform", "temperature", "unimax", "entropy"]
    corpus: CorpusSpec | None = None
    tokenizer: str | None = None
    # of the tokenizer trained when none is given
    vocab_size: int = Field(default=2048, ge=MIN_VOCAB_SIZE, le=MAX_VOCAB_SIZE)
    t: float = Field(default=2.0, gt=0)
    budget: float | None = Field(default=None, gt=0)
    max_epochs: float = Field(default=1.0, gt=0)
    entropy: Literal["unigram", "joint", "conditional"] = "conditional"
    seed: int | None = None


class CompareStep(_Step):
    """Print and save the held-out metrics of several train_proxy steps side by side."""

    kind: Literal["compare"] = "compare"
    runs: list[str]
    target: str | None = None  # the domain (bits per byte) the comparison is about


Step = Annotated[
    DemoCorpusStep
    | ScoreStep
    | SelectStep
    | StatsStep
    | TokenizerStep
    | TrainProxyStep
    | EvalStep
    | BETRStep
    | PreSelectStep
    | CompareStep
    | ClusterStep
    | SearchStep
    | BiMixStep
    | MixtureStep
    | MassStep
    | MatesStep,
    Field(discriminator="kind"),
]
STEP_KINDS = (
    "demo_corpus", "score", "select", "stats", "tokenizer", "train_proxy", "eval", "betr",
    "preselect", "compare", "cluster", "search", "bimix", "mixture", "mass",
    "mates",
)  # fmt: skip
#: steps that write a scores folder a select step can use
SCORE_KINDS = ("score", "betr", "preselect", "mass")
#: which kinds of earlier step another step's field may name
_REFERENCES = {
    "corpus.step": ("demo_corpus", "select", "cluster"),
    "heldout.step": ("demo_corpus", "select", "cluster"),
    "mixture": ("search", "bimix", "mixture"),
    "prune.scores": SCORE_KINDS,
    "tokenizer": ("tokenizer",),
    "family.tokenizer": ("tokenizer",),
    "model": ("train_proxy", "mates"),
}


class Recipe(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    run_dir: str | None = None
    corpus: CorpusSpec | None = None
    runner: RunnerSpec = Field(default_factory=RunnerSpec)
    steps: list[Step]

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return check_name(v, "recipe name")

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
                            f"({', '.join(n for n, k in seen.items() if k in SCORE_KINDS) or 'none'}) nor a folder"
                        )
                    if ref in seen and seen[ref] not in SCORE_KINDS:
                        raise ValueError(
                            f"step {step.name!r}: {ref!r} is a {seen[ref]} step, not a score step"
                        )
            if isinstance(step, CompareStep):
                for ref in step.runs:
                    if seen.get(ref) not in ("train_proxy", "mates"):
                        raise ValueError(
                            f"step {step.name!r}: runs entry {ref!r} is not an earlier train_proxy or mates step"
                        )
            corpus_steps = (
                ScoreStep
                | SelectStep
                | StatsStep
                | TokenizerStep
                | TrainProxyStep
                | BETRStep
                | PreSelectStep
                | ClusterStep
                | SearchStep
                | BiMixStep
                | MixtureStep
                | MassStep
                | MatesStep
            )
            if isinstance(step, corpus_steps) and step.corpus is None and self.corpus is None:
                raise ValueError(
                    f"step {step.name!r} needs a corpus: set the recipe's corpus or the step's"
                )
            for field_path, kinds in _REFERENCES.items():
                ref = _get(step, field_path)
                if ref is None:
                    continue
                if ref in seen and ref != step.name:
                    if seen[ref] not in kinds:
                        raise ValueError(
                            f"step {step.name!r}: {field_path} names {ref!r}, a {seen[ref]} step; "
                            f"it must be a {' or '.join(kinds)} step"
                        )
                elif field_path.endswith(".step"):
                    raise ValueError(
                        f"step {step.name!r}: {field_path} names {ref!r}, which is not an earlier step"
                    )
        if self.corpus is not None and self.corpus.step is not None:
            raise ValueError("the recipe-level corpus cannot name a step; give paths")
        return self

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")


def _get(step: Any, dotted: str) -> Any:
    node = step
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node if isinstance(node, str) else None


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
    data = copy.deepcopy(data)  # overrides must never reach the caller's mapping
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
