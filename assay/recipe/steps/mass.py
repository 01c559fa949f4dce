"""mass: a skill graph from target examples (MASS), then scoring by the skills a text covers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field

from assay.recipe.spec import CorpusSpec, TargetSpec
from assay.recipe.step import Step, embedder_id, register_step, targets_identity
from assay.recipe.steps._common import fitted, score_all
from assay.selection.mass.scorer import MassSettings


@register_step
class MassStep(Step, MassSettings):
    """Fit MASS: skills from target examples (tags, keyphrases or sentence clusters) merged by
    similarity into a graph; a document scores by the skills it covers. Score the corpus.
    Keyphrase skills are the phrases more frequent in the targets than in a sample of the
    corpus (`background_docs`), each embedded from the target sentences it occurs in."""

    outputs = ("scores", "model")
    verb = "mass"

    kind: Literal["mass"] = "mass"
    # `reference`, its name before assay said "targets" everywhere, is still read
    targets: TargetSpec = Field(
        validation_alias=AliasChoices("targets", "reference"),
        description="The target examples (the paper's reference set).",
    )
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    def settings(self, seed: int) -> MassSettings:
        """The library's settings of this step, with the seed resolved."""
        values = {k: getattr(self, k) for k in MassSettings.model_fields}
        return MassSettings(**{**values, "seed": seed})

    def plan(self, ctx: Any) -> Any:
        from assay.selection.mass import fit_mass

        corpus, fp = ctx.corpus(self.corpus)
        identity = {
            "corpus": fp,
            "targets": targets_identity(self.targets),
            "embedder": embedder_id(self.embedder),
        }

        def fit() -> Any:
            return fit_mass(
                self.targets.source,
                self.settings(ctx.seed(self.seed)),
                fields=self.targets.fields,
                max_items=self.targets.max_items,
                background=corpus,
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
        console.print(
            f"{rep['reference_examples']:,} reference examples, skills from "
            f"{rep['skills_source']}: {rep['raw_skills']:,} skills merged into "
            f"{rep['merged_skills']:,}, {rep['edges']:,} edges; {rep['aggregation']} score over "
            f"each document's top {rep['top_k']} skills"
        )
        top = ", ".join(f"{s['name']} ({s['weight']:.3f})" for s in rep["top_skills"][:8])
        console.print(f"heaviest skills: {top}", highlight=False, soft_wrap=True)
