"""decontaminate: index target examples' word n-grams, score the corpus, report the overlap."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.recipe.spec import CorpusSpec, TargetSpec
from assay.recipe.step import Step, register_step, targets_identity
from assay.recipe.steps._common import fitted, score_all
from assay.selection.decontam import DecontamSettings


@register_step
class DecontaminateStep(Step, DecontamSettings):
    """Find documents holding benchmark text: index the target examples' word n-grams (text
    normalised as datatrove's decontamination does), score every document (contam_ngrams,
    contam_item) and write contamination.json beside the scores. Drop the contaminated
    documents with select: --column contam_ngrams --policy threshold --threshold 0 --mode
    bottom."""

    outputs = ("scores", "model")
    verb = "decontaminate"

    kind: Literal["decontaminate"] = "decontaminate"
    targets: TargetSpec = Field(description="The target examples (benchmark items).")
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")
    seed: int | None = Field(
        None, description="Seed of the target sample (targets.max_items); default: the recipe's."
    )

    def plan(self, ctx: Any) -> Any:
        from assay.selection.decontam import fit_decontam, write_contamination_report

        corpus, fp = ctx.corpus(self.corpus)
        identity = {"corpus": fp, "targets": targets_identity(self.targets)}
        settings = DecontamSettings(**{k: getattr(self, k) for k in DecontamSettings.model_fields})

        def fit() -> Any:
            return fit_decontam(
                self.targets.source,
                settings,
                fields=self.targets.fields,
                max_targets=self.targets.max_items,
                seed=ctx.seed(self.seed),
            )

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            scorer = fitted(ctx.step_dir / "model", redo, fit)
            outputs, summary = score_all(scorer, corpus, ctx.step_dir, ctx, {"fit": scorer.report})
            report = write_contamination_report(outputs["scores"], scorer)
            summary["contaminated"] = report["contaminated"]
            summary["overlapped_targets"] = len(report["items"])
            summary["items"] = [
                {k: v for k, v in row.items() if k != "text"} for row in report["items"][:20]
            ]
            return outputs, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary = outcome.summary
        fit = summary["fit"]
        console.print(
            f"{fit['targets']:,} target examples, {fit['ngrams']:,} {fit['n']}-grams indexed; "
            f"{summary['contaminated']:,} of {summary['docs']:,} documents overlap "
            f"{summary['overlapped_targets']:,} of the target examples"
            f" -> {outcome.outputs['scores']}",
            highlight=False,
            soft_wrap=True,
        )
