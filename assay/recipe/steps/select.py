"""select: keep the best documents by a score column (top-k, threshold or Gumbel top-k), after
an optional filter expression, over all documents or per group (stratified)."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from rich.table import Table

from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, register_step
from assay.recipe.steps._common import pct
from assay.selection.select import SelectConfig


@register_step
class SelectStep(Step, SelectConfig):
    """Keep documents by a score column; the kept shards keep their input names."""

    outputs = ("selected",)
    corpus_output = "selected"
    references: ClassVar[dict[str, str]] = {"scores": "scores"}
    verb = "select"

    kind: Literal["select"] = "select"
    scores: list[str] = Field(
        description="Score steps of the recipe, or scores folders (from assay score)."
    )
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    @field_validator("scores", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def check_recipe(self, earlier: dict[str, type[Step]]) -> None:
        for ref in self.scores:
            if ref in earlier and "scores" not in earlier[ref].outputs:
                raise ValueError(
                    f"step {self.name!r}: {ref!r} is a {earlier[ref].kind_name()} step, not a "
                    "score step"
                )
            if ref not in earlier and not os.path.isdir(ref):
                names = [n for n, c in earlier.items() if "scores" in c.outputs]
                raise ValueError(
                    f"step {self.name!r}: scores entry {ref!r} is neither an earlier score step "
                    f"({', '.join(names) or 'none'}) nor a folder"
                )

    def config(self, seed: int) -> SelectConfig:
        values = {k: getattr(self, k) for k in SelectConfig.model_fields}
        return SelectConfig(**{**values, "seed": seed})

    def plan(self, ctx: Any) -> Any:
        from assay.selection.select import select

        corpus, fp = ctx.corpus(self.corpus)
        score_dirs = [ctx.ref(r, "scores") for r in self.scores]
        identity = {"corpus": fp, "upstream": {r: ctx.upstream(r) for r in self.scores}}
        cfg = self.config(ctx.seed(self.seed))

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            out = ctx.step_dir / "selected"
            result = select(corpus, score_dirs, out, cfg, runner=ctx.runner, overwrite=redo)
            return {"selected": str(out)}, result.to_dict()

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary = outcome.summary
        r, by = summary, summary["config"]["by"]
        console.print(
            f"kept [bold]{r['kept_docs']:,}[/] of {r['docs']:,} documents = "
            f"{pct(r['kept_fraction'])} of {by}"
            + (
                f" (score cutoff {r['score_cutoff']:.4g})"
                if r.get("score_cutoff") is not None
                else ""
            )
            + f" -> {r['out_dir']}"
        )
        if r.get("passed_docs") is not None:
            share = pct(r["passed_weight"] / max(r["weight"], 1e-12))
            console.print(
                f"{r['passed_docs']:,} documents ({share} of {by}) passed the filter "
                f"{r['config']['where']!r}"
            )
        if r["skipped"]:
            console.print(f"skipped: {r['skipped']}")
        if r["groups"] and len(r["groups"]) > 1:
            t = Table(title=f"kept per {r['config'].get('group_by') or 'group'}")
            filtered = r.get("passed_docs") is not None
            cols = ["group", "docs", *(["passed docs"] if filtered else [])]
            cols += ["kept docs", "kept % docs"] + ([] if by == "docs" else [f"kept % {by}"])
            for c in cols:
                t.add_column(c)
            for g, v in r["groups"].items():
                row = [
                    g,
                    f"{v['docs']:,}",
                    *([f"{v['passed_docs']:,}"] if filtered else []),
                    f"{v['kept_docs']:,}",
                    pct(v["kept_docs"] / max(v["docs"], 1)),
                ]
                if by != "docs":
                    row.append(pct(v["kept_weight"] / max(v["weight"], 1e-12)))
                t.add_row(*row)
            console.print(t)
