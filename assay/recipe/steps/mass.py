"""mass: a skill graph from a reference set (MASS), then scoring by the skills a text covers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.recipe.spec import CorpusSpec, TargetSpec
from assay.recipe.step import Step, folder_id, register_step, targets_identity
from assay.recipe.steps._common import fitted, score_all
from assay.recipe.steps.betr import EMBEDDER_HELP


@register_step
class MassStep(Step):
    """Fit MASS: skills from a reference set (tags, keyphrases or sentence clusters) merged by
    similarity into a graph; a document scores by the skills it covers. Score the corpus."""

    outputs = ("scores", "model")
    verb = "mass"

    kind: Literal["mass"] = "mass"
    reference: TargetSpec = Field(description="The reference examples.")
    tags_field: str | None = Field(None, description="Record field holding each example's tags.")
    skills: Literal["auto", "tags", "keyphrase", "cluster"] = Field(
        "auto",
        description="Where skills come from: 'auto' (tags when the reference has them, e.g. the "
        "CHAMP concepts, else keyphrases), 'tags', 'keyphrase' or 'cluster'.",
    )
    embedder: str | None = Field(None, description=EMBEDDER_HELP)
    merge_threshold: float = Field(
        0.9, gt=0, le=1, description="Skills more similar than this merge."
    )
    min_cooccurrence: int = Field(
        1, ge=1, description="Fewest examples two skills share for an edge between them."
    )
    top_k: int | None = Field(10, ge=1, description="Skills kept per document.")
    aggregation: Literal["quadratic", "linear"] = Field(
        "quadratic", description="'quadratic' s^T(diag(w)+E)s or 'linear' w^T s."
    )
    column: str = Field("mass", description="Name of the score column.")
    seed: int | None = Field(None, description="Seed of keyphrase and cluster skills.")
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    def plan(self, ctx: Any) -> Any:
        from assay.selection.mass import fit_mass

        corpus, fp = ctx.corpus(self.corpus)
        identity = {
            "corpus": fp,
            "reference": targets_identity(self.reference),
            "embedder": folder_id(self.embedder),
        }

        def fit() -> Any:
            return fit_mass(
                self.reference.source,
                fields=self.reference.fields,
                tags_field=self.tags_field,
                skills=self.skills,
                max_items=self.reference.max_items,
                seed=ctx.seed(self.seed),
                progress=ctx.runner.progress,
                column=self.column,
                embedder={"model": self.embedder},
                merge_threshold=self.merge_threshold,
                min_cooccurrence=self.min_cooccurrence,
                top_k=self.top_k,
                aggregation=self.aggregation,
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
        console.print(
            f"{rep['reference_examples']:,} reference examples, skills from "
            f"{rep['skills_source']}: {rep['raw_skills']:,} skills merged into "
            f"{rep['merged_skills']:,}, {rep['edges']:,} edges; {rep['aggregation']} score over "
            f"each document's top {rep['top_k']} skills"
        )
        top = ", ".join(f"{s['name']} ({s['weight']:.3f})" for s in rep["top_skills"][:8])
        console.print(f"heaviest skills: {top}", highlight=False, soft_wrap=True)
