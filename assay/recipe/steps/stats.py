"""stats: documents, characters and lengths of a corpus, per group."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from rich.table import Table

from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, register_step
from assay.recipe.steps._common import pct
from assay.util.files import write_json


@register_step
class StatsStep(Step):
    """Count documents and characters of a corpus, per group and length bucket."""

    outputs = ("stats",)
    verb = "stats"

    kind: Literal["stats"] = "stats"
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")
    group_by: str | None = Field("domain", description="Column to break counts down by.")

    def plan(self, ctx: Any) -> Any:
        from assay.exec.stats import corpus_stats

        corpus, fp = ctx.corpus(self.corpus)

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            stats = corpus_stats(corpus, group_by=self.group_by, runner=ctx.runner)
            write_json(ctx.step_dir / "stats.json", stats)
            return {"stats": str(ctx.step_dir / "stats.json")}, stats

        return {"corpus": fp}, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary = outcome.summary
        r = summary
        console.print(
            f"[bold]{r['docs']:,}[/] documents, {r['chars']:,} characters in {r['shards']} shards "
            f"(mean {r['mean_chars']:,.0f} chars)"
        )
        if r["skipped"]:
            console.print(f"skipped: {r['skipped']}")
        if r["groups"]:
            t = Table(title=f"by {r['group_by']}")
            for c in (r["group_by"], "docs", "share of docs", "chars", "share of chars"):
                t.add_column(c)
            for g, v in r["groups"].items():
                t.add_row(
                    g,
                    f"{v['docs']:,}",
                    pct(v["docs"] / max(r["docs"], 1)),
                    f"{v['chars']:,}",
                    pct(v["chars"] / max(r["chars"], 1)),
                )
            console.print(t)
        h = Table(title="document length (characters)")
        h.add_column("range")
        h.add_column("docs")
        for k, v in r["length_histogram"].items():
            h.add_row(k, f"{v:,}")
        console.print(h)
