"""dsir: importance weights of hashed n-grams, target against raw (DSIR), then scoring."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.recipe.spec import CorpusSpec, TargetSpec
from assay.recipe.step import Step, register_step, targets_identity
from assay.recipe.steps._common import fitted, score_all
from assay.selection.dsir import DSIRSettings


@register_step
class DSIRStep(Step, DSIRSettings):
    """Fit DSIR (Xie et al. 2023): bag-of-hashed-n-gram models of the target examples and of a
    pool sample; score the corpus by log importance weight. Resample with `select --policy
    gumbel --tau 1` on its column."""

    outputs = ("scores", "model")
    verb = "dsir"

    kind: Literal["dsir"] = "dsir"
    targets: TargetSpec = Field(description="The target examples.")
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    def settings(self, seed: int) -> DSIRSettings:
        """The library's settings of this step, with the seed resolved."""
        values = {k: getattr(self, k) for k in DSIRSettings.model_fields}
        return DSIRSettings(**{**values, "seed": seed})

    def plan(self, ctx: Any) -> Any:
        from assay.selection.dsir import fit_dsir

        corpus, fp = ctx.corpus(self.corpus)
        identity = {"corpus": fp, "targets": targets_identity(self.targets)}

        def fit() -> Any:
            return fit_dsir(
                corpus,
                self.targets.source,
                self.settings(ctx.seed(self.seed)),
                fields=self.targets.fields,
                max_targets=self.targets.max_items,
            )

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            scorer = fitted(ctx.step_dir / "model", redo, fit)
            return score_all(scorer, corpus, ctx.step_dir, ctx, {"fit": scorer.report})

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        rep = outcome.summary["fit"]
        console.print(
            f"{rep['targets']:,} target examples ({rep['target_ngrams']:,} n-grams) against "
            f"{rep['raw_documents']:,} sampled documents ({rep['raw_ngrams']:,} n-grams) in "
            f"{rep['num_buckets']:,} buckets"
        )
