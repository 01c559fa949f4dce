"""preselect: predictive strength over a model family, distilled into fastText, then scoring."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from rich.table import Table

from assay.proxies.train import TrainConfig
from assay.recipe.spec import CorpusSpec, TargetSpec
from assay.recipe.step import Step, folder_id, register_step, targets_identity
from assay.recipe.steps._common import check_preset, print_validation, score_all
from assay.selection.preselect import PreSelectSettings
from assay.util.config import Strict


class FamilyModel(Strict):
    """One model of PreSelect's family."""

    path: str = Field(description="A local causal LM folder (or GGUF folder).")
    score: float | None = Field(
        None, description="Its benchmark score, higher is better (default: from the targets)."
    )
    gguf_file: str | None = Field(None, description="The .gguf file in a GGUF folder.")
    name: str | None = Field(None, description="A name for reports.")

    @model_validator(mode="before")
    @classmethod
    def _path_and_score(cls, v: Any) -> Any:
        """`PATH[:SCORE]` (as on the command line) is a model and, optionally, its score."""
        if isinstance(v, str):
            path, sep, tail = v.rpartition(":")
            if sep and path:
                try:
                    return {"path": path, "score": float(tail)}
                except ValueError:
                    pass
            return {"path": v}
        return v


class FamilySpec(Strict):
    """PreSelect's model family: given models, or proxies that assay trains on the corpus."""

    models: list[FamilyModel] = Field(
        default_factory=list,
        description="The family as PATH[:SCORE] (at least 3); none: train proxies on the corpus.",
    )
    vary: Literal["tokens", "preset", "mixture"] = Field(
        "mixture", description="What varies between trained proxies."
    )
    n: int = Field(5, ge=3, description="Trained proxies.")
    tokens: int = Field(200_000, ge=1, description="Training tokens per proxy.")
    preset: str = Field("tiny", description="Proxy size (vary: tokens or mixture).")
    presets: list[str] = Field(
        default_factory=lambda: ["tiny", "xs", "s"], description="Sizes (vary: preset)."
    )
    concentration: float = Field(1.0, gt=0, description="Dirichlet concentration (vary: mixture).")
    tokenizer: str | None = Field(
        None, description="A tokenizer step or folder (default: train one)."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training settings.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        return check_preset(v)

    @field_validator("models")
    @classmethod
    def _enough(cls, v: list[FamilyModel]) -> list[FamilyModel]:
        from assay.selection.preselect import MIN_MODELS

        if v and len(v) < MIN_MODELS:
            raise ValueError(f"PreSelect needs at least {MIN_MODELS} models (got {len(v)})")
        return v


@register_step
class PreSelectStep(Step, PreSelectSettings):
    """Fit PreSelect (Shum et al. 2025): keep text whose losses rank a model family as its
    benchmarks do; distil the labels into fastText; score the corpus."""

    outputs = ("scores", "model")
    references: ClassVar[dict[str, str]] = {"family.tokenizer": "tokenizer"}
    verb = "preselect"

    kind: Literal["preselect"] = "preselect"
    family: FamilySpec = Field(default_factory=FamilySpec, description="The model family.")
    targets: TargetSpec | None = Field(
        None, description="Target examples that give models without a score one."
    )
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    @model_validator(mode="after")
    def _scores_or_targets(self) -> PreSelectStep:
        models = self.family.models
        if self.targets is None and (not models or any(m.score is None for m in models)):
            raise ValueError(
                "preselect needs each family model's benchmark score, or targets to compute "
                "them from"
            )
        return self

    def settings(self, seed: int) -> PreSelectSettings:
        """The library's settings of this step, with the seed resolved."""
        values = {k: getattr(self, k) for k in PreSelectSettings.model_fields}
        return PreSelectSettings(**{**values, "seed": seed})

    def plan(self, ctx: Any) -> Any:
        from assay.selection.base import load_scorer
        from assay.workflows.family import train_corpus_family
        from assay.workflows.preselect import fit_preselect

        corpus, fp = ctx.corpus(self.corpus)
        fam = self.family
        identity: dict[str, Any] = {
            "corpus": fp,
            "targets": targets_identity(self.targets) if self.targets else None,
            "models": [{**m.model_dump(), "weights": folder_id(m.path)} for m in fam.models],
            "family": fam.model_dump(exclude={"models"}),
            "upstream": ctx.upstream(fam.tokenizer),
        }

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            model_dir = ctx.step_dir / "model"
            if (model_dir / "scorer.json").exists() and not redo:
                scorer = load_scorer(model_dir)
            else:
                seed = ctx.seed(self.seed)
                if fam.models:
                    models = [m.model_dump(exclude_none=True) for m in fam.models]
                else:
                    models = train_corpus_family(
                        corpus,
                        ctx.step_dir / "family",
                        vary=fam.vary,
                        n=fam.n,
                        tokens=fam.tokens,
                        preset=fam.preset,
                        presets=fam.presets,
                        concentration=fam.concentration,
                        tokenizer=ctx.ref(fam.tokenizer, "tokenizer"),
                        config=fam.train,
                        seed=seed,
                        progress=ctx.runner.progress,
                    )
                targets = self.targets
                scorer = fit_preselect(
                    corpus,
                    models,
                    self.settings(seed),
                    targets=targets.source if targets else None,
                    fields=targets.fields if targets else None,
                    max_targets=targets.max_items if targets else None,
                ).save(model_dir)
            return score_all(scorer, corpus, ctx.step_dir, ctx, {"fit": scorer.report})

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary = outcome.summary
        print_preselect(summary["fit"], None, console)


def print_preselect(rep: dict[str, Any], family: dict[str, Any] | None, console: Any) -> None:
    p = rep["preselect"]
    if family:
        t = Table(title="model family, worst to best")
        for c in ("model", "benchmark score", "bits per char (calibration)"):
            t.add_column(c)
        for m in sorted(family["models"], key=lambda m: m["rank"]):
            t.add_row(m["name"], f"{m['benchmark_score']:.4g}", f"{m['mean_bpc']:.3f}")
        console.print(t)
    else:
        console.print("model family, worst to best: " + ", ".join(p["order"]))
    console.print(
        f"{p['perfect']:,} of {p['usable_docs']:,} calibration documents have perfect predictive "
        f"strength ({p['pairs']}/{p['pairs']} model pairs); {p['positives']:,} positives "
        f"({p['positive_rule'].replace('_', ' ')}) and {p['negatives']:,} negatives"
    )
    print_validation(rep["fasttext"], console)
