"""betr: benchmark-targeted ranking of a pool sample, distilled into fastText, then scoring."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.recipe.spec import CorpusSpec, TargetSpec
from assay.recipe.step import Step, embedder_id, register_step, targets_identity
from assay.recipe.steps._common import fitted, print_validation, score_all
from assay.selection.betr import BETRSettings


@register_step
class BETRStep(Step, BETRSettings):
    """Fit BETR (Mizrahi et al. 2025): rank a pool sample by embedding similarity to target
    examples, label the best-ranked documents positive, distil into fastText; score the corpus."""

    outputs = ("scores", "model")
    verb = "betr"

    kind: Literal["betr"] = "betr"
    targets: TargetSpec = Field(description="The target examples.")
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    def settings(self, seed: int) -> BETRSettings:
        """The library's settings of this step, with the seed resolved."""
        values = {k: getattr(self, k) for k in BETRSettings.model_fields}
        return BETRSettings(**{**values, "seed": seed})

    def plan(self, ctx: Any) -> Any:
        from assay.selection.betr import fit_betr

        corpus, fp = ctx.corpus(self.corpus)
        identity = {
            "corpus": fp,
            "targets": targets_identity(self.targets),
            "embedder": embedder_id(self.embedder),
        }

        def fit() -> Any:
            return fit_betr(
                corpus,
                self.targets.source,
                self.settings(ctx.seed(self.seed)),
                fields=self.targets.fields,
                max_targets=self.targets.max_items,
                progress=ctx.runner.progress,
            )

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            scorer = fitted(ctx.step_dir / "model", redo, fit)
            summary = {"fit": {k: v for k, v in scorer.report.items() if k != "embedder"}}
            return score_all(scorer, corpus, ctx.step_dir, ctx, summary)

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary = outcome.summary
        rep = summary["fit"]
        worst = rep.get("worst_positive_rank")
        console.print(
            f"{rep['targets']:,} target examples ranked {rep['sample']:,} sampled documents "
            f"({rep['aggregation']} aggregation); {rep['positives']:,} positives"
            + (f" (worst positive rank {worst:,})" if worst is not None else "")
        )
        print_validation(rep["fasttext"], console)
