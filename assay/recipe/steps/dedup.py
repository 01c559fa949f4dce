"""dedup: mark exact and near (MinHash + LSH) duplicates as side-car score columns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, register_step
from assay.selection.dedup import DedupSettings


@register_step
class DedupStep(Step, DedupSettings):
    """Mark duplicates: exact copies of the normalised text (dup_exact, dup_group) and near
    copies by MinHash over word 5-grams with LSH at a Jaccard threshold (dup_near,
    dup_cluster), in a scores folder. Keep one of each group with select: --column dup_near
    (or dup_exact) --policy threshold --threshold 0 --mode bottom."""

    outputs = ("scores",)
    verb = "dedup"

    kind: Literal["dedup"] = "dedup"
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    def plan(self, ctx: Any) -> Any:
        from assay.selection.dedup import dedup_corpus

        corpus, fp = ctx.corpus(self.corpus)
        settings = DedupSettings(**{k: getattr(self, k) for k in DedupSettings.model_fields})

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            scores = ctx.step_dir / "scores"
            summary = dedup_corpus(corpus, scores, settings, runner=ctx.runner, overwrite=redo)
            return {"scores": str(scores)}, summary

        return {"corpus": fp}, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        s = outcome.summary
        parts = []
        if "exact_duplicates" in s:
            parts.append(f"{s['exact_duplicates']:,} exact copies in {s['exact_groups']:,} groups")
        if "near_duplicates" in s:
            parts.append(
                f"{s['near_duplicates']:,} near copies in {s['near_clusters']:,} clusters "
                f"({s['bands']} bands of {s['rows']} rows)"
            )
        console.print(
            f"{s['docs']:,} documents: {'; '.join(parts)} -> {outcome.outputs['scores']}",
            highlight=False,
            soft_wrap=True,
        )
