"""decontaminate: index target examples' word n-grams, score the corpus, report the overlap, and
(with `drop`) write the corpus without the contaminated documents for the later steps."""

from __future__ import annotations

from pathlib import Path
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
    contam_item) and write contamination.json beside the scores. With --drop, also write the
    corpus without them (clean/): a later step that reads this step as its corpus reads that;
    without, it reads the corpus unchanged."""

    outputs = ("scores", "model", "clean")
    corpus_output = "clean"
    verb = "decontaminate"

    kind: Literal["decontaminate"] = "decontaminate"
    targets: TargetSpec = Field(description="The target examples (benchmark items).")
    also_targets: list[str] = Field(
        default_factory=list,
        description="More benchmark text to decontaminate against, e.g. the evaluation set: "
        "built-in benchmarks or .jsonl/.json/.parquet files, every example, default fields "
        "(text, else question and answer).",
    )
    drop: bool = Field(
        False,
        description="Write the corpus without the contaminated documents (clean/), which later "
        "steps read as this step's corpus; false: report only, later steps read the corpus as "
        "it is.",
    )
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")
    seed: int | None = Field(
        None, description="Seed of the target sample (targets.max_items); default: the recipe's."
    )

    def plan(self, ctx: Any) -> Any:
        from assay.selection.decontam import fit_decontam, write_contamination_report

        corpus, fp = ctx.corpus(self.corpus)
        also = [targets_identity(TargetSpec(source=s))["source"] for s in self.also_targets]
        identity = {"corpus": fp, "targets": targets_identity(self.targets), "also": also}
        settings = DecontamSettings(**{k: getattr(self, k) for k in DecontamSettings.model_fields})
        unchanged = _passed_through(self.corpus or ctx.default_corpus, corpus)

        def fit() -> Any:
            return fit_decontam(
                self.targets.source,
                settings,
                fields=self.targets.fields,
                max_targets=self.targets.max_items,
                seed=ctx.seed(self.seed),
                also=self.also_targets,
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
            if self.drop:
                result = _drop_contaminated(corpus, outputs["scores"], ctx, redo)
                outputs["clean"] = result.out_dir
                summary["removed"] = result.docs - result.kept_docs
            elif unchanged is not None:
                outputs["clean"] = unchanged
                summary["removed"] = 0
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
        for row in summary["items"][:5]:
            where = f"{row['source']}[{row['source_item']}]" if "source" in row else row["item"]
            n = row["documents"]
            console.print(f"  {where}: {n:,} document{'' if n == 1 else 's'}", highlight=False)
        if "removed" in summary:
            console.print(
                f"removed {summary['removed']:,} documents -> {outcome.outputs['clean']}",
                highlight=False,
            )


def _drop_contaminated(corpus: Any, scores: str, ctx: Any, redo: bool) -> Any:
    """Write the documents that share no n-gram with a target to clean/ (a select)."""
    from assay.selection.decontam import NGRAMS_COLUMN
    from assay.selection.select import SelectConfig, select

    cfg = SelectConfig(
        column=NGRAMS_COLUMN, policy="threshold", threshold=0, mode="bottom", group_by=None
    )
    out = ctx.step_dir / "clean"
    return select(corpus, [scores], out, cfg, runner=ctx.runner, overwrite=redo)


def _passed_through(spec: CorpusSpec | None, corpus: Any) -> str | None:
    """What a later step reads as this step's corpus when nothing is dropped: the corpus itself,
    when it is one path (a folder, file or glob, or an earlier step's output); else nothing."""
    if len(corpus.inputs) == 1:
        return str(corpus.inputs[0])
    if spec is not None and spec.step is None and len(spec.paths) == 1:
        return str(Path(spec.paths[0]))
    return None
