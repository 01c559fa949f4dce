"""betr: benchmark-targeted ranking of a pool sample, distilled into fastText, then scoring."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.recipe.spec import CorpusSpec, TargetSpec
from assay.recipe.step import Step, folder_id, register_step, targets_identity
from assay.recipe.steps._common import fitted, print_validation, score_all

EMBEDDER_HELP = (
    "Embedding model: a local sentence-transformers or model2vec folder, or 'static' (distilled "
    "from the bundled MiniLM once, cached); default all-MiniLM-L6-v2."
)


@register_step
class BETRStep(Step):
    """Fit BETR (Mizrahi et al. 2025): rank a pool sample by embedding similarity to target
    examples, label the best-ranked documents positive, distil into fastText; score the corpus."""

    outputs = ("scores", "model")
    verb = "betr"

    kind: Literal["betr"] = "betr"
    targets: TargetSpec = Field(description="The target examples.")
    sample: int = Field(
        10_000, ge=1, description="Pool documents ranked against the targets (a uniform sample)."
    )
    embedder: str | None = Field(None, description=EMBEDDER_HELP)
    long_docs: Literal["truncate", "mean"] = Field(
        "truncate",
        description="Documents longer than the embedder's context: 'truncate' or 'mean' "
        "(average of chunk embeddings).",
    )
    aggregation: Literal["max", "mean"] = Field(
        "max",
        description="'max' (a document's best rank over the examples, as in the paper) or "
        "'mean' (mean log inverse rank).",
    )
    positive_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the ranked sample labelled positive."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="fastText settings.")
    column: str = Field("betr", description="Name of the score column.")
    seed: int | None = Field(None, description="Seed of the sample, labels and fastText.")
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    def plan(self, ctx: Any) -> Any:
        from assay.selection.betr import fit_betr

        corpus, fp = ctx.corpus(self.corpus)
        identity = {
            "corpus": fp,
            "targets": targets_identity(self.targets),
            "embedder": folder_id(self.embedder),
        }

        def fit() -> Any:
            return fit_betr(
                corpus,
                self.targets.source,
                sample=self.sample,
                fields=self.targets.fields,
                max_targets=self.targets.max_items,
                seed=ctx.seed(self.seed),
                progress=ctx.runner.progress,
                column=self.column,
                embedder={"model": self.embedder, "long_docs": self.long_docs},
                aggregation=self.aggregation,
                positive_fraction=self.positive_fraction,
                params=self.params,
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
