"""ngram_lm: an n-gram language model of a reference set (CCNet), then the corpus' perplexities."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.recipe.spec import CorpusSpec, TargetSpec
from assay.recipe.step import Step, register_step, targets_identity
from assay.recipe.steps._common import fitted, score_all
from assay.selection.ngram_lm import NgramLMSettings


@register_step
class NgramLMStep(Step, NgramLMSettings):
    """Train an interpolated modified Kneser-Ney n-gram model on reference texts (CCNet) and
    score the corpus by perplexity, lower = closer to the reference. CCNet's head, middle and
    tail: `select --mode bottom`, `middle` or `top` on its column."""

    outputs = ("scores", "model")
    verb = "ngram-lm"

    kind: Literal["ngram_lm"] = "ngram_lm"
    reference: TargetSpec = Field(
        description="The reference texts the model is trained on (a file of records with a "
        "text field, or a built-in benchmark)."
    )
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    def settings(self, seed: int) -> NgramLMSettings:
        """The library's settings of this step, with the seed resolved."""
        values = {k: getattr(self, k) for k in NgramLMSettings.model_fields}
        return NgramLMSettings(**{**values, "seed": seed})

    def plan(self, ctx: Any) -> Any:
        from assay.selection.ngram_lm import fit_ngram_lm

        corpus, fp = ctx.corpus(self.corpus)
        identity = {"corpus": fp, "reference": targets_identity(self.reference)}

        def fit() -> Any:
            return fit_ngram_lm(
                self.reference.source,
                self.settings(ctx.seed(self.seed)),
                fields=self.reference.fields,
                max_items=self.reference.max_items,
            )

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            scorer = fitted(ctx.step_dir / "model", redo, fit)
            return score_all(scorer, corpus, ctx.step_dir, ctx, {"fit": scorer.report})

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        rep = outcome.summary["fit"]
        console.print(
            f"{rep['order']}-gram model of {rep['reference_texts']:,} reference texts "
            f"({rep['reference_tokens']:,} tokens; n-grams per order {rep['ngrams']})"
        )
