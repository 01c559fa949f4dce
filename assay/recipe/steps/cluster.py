"""cluster: an unlabeled corpus into domains (CLIMB's stage A)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from assay.mixing.cluster import ClusterSettings
from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, embedder_id, register_step


@register_step
class ClusterStep(Step, ClusterSettings):
    """Embed, k-means, prune and merge an unlabeled corpus into domains; write a side-car
    `domain` per document, a view of the corpus with those domains (nothing copied), and each
    domain's size and top terms."""

    outputs = ("corpus", "domains", "clusters", "heldout")
    corpus_output = "corpus"
    references: ClassVar[dict[str, str]] = {"prune.scores": "scores"}
    verb = "cluster"

    kind: Literal["cluster"] = "cluster"
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")
    heldout: CorpusSpec | None = Field(
        None, description="Also label this corpus (a held-out split) with the same domains."
    )

    def plan(self, ctx: Any) -> Any:
        from assay.mixing.cluster import assign_domains, cluster_corpus, read_clusters

        corpus, fp = ctx.corpus(self.corpus)
        heldout, heldout_fp = ctx.corpus(self.heldout) if self.heldout else (None, None)
        prune = self.prune
        identity = {
            "corpus": fp,
            "heldout": heldout_fp,
            "embedder": embedder_id(self.embedder),
            "upstream": ctx.upstream(prune.scores) if prune else None,
        }

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            out = ctx.step_dir / "clusters"
            if redo or not (out / "_clusters.json").exists():
                cluster_corpus(
                    corpus,
                    out,
                    self,
                    prune={**prune.model_dump(), "scores": ctx.ref(prune.scores, "scores")}
                    if prune
                    else None,
                    seed=ctx.seed(self.seed),
                    runner=ctx.runner,
                    overwrite=redo,
                )
            outputs = {
                "corpus": str(out / "corpus"),
                "domains": str(out / "domains"),
                "clusters": str(out / "_clusters.json"),
            }
            if heldout is not None:
                outputs["heldout"] = assign_domains(
                    heldout, out, ctx.step_dir / "heldout", runner=ctx.runner, overwrite=redo
                )
            report = read_clusters(out)
            keys = ("docs", "tokens_estimate", "top_terms")
            summary = {
                "k_init": report["k_init"],
                "kept_clusters": report["kept_clusters"],
                "domains": {d: {k: v[k] for k in keys} for d, v in report["domains"].items()},
            }
            return outputs, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary, outputs = outcome.summary, outcome.outputs
        from rich.table import Table

        t = Table(title=f"{len(summary['domains'])} domains from {summary['k_init']} clusters")
        for c in ("domain", "docs", "tokens (est.)", "top terms"):
            t.add_column(c)
        for name, d in summary["domains"].items():
            terms = ", ".join(d["top_terms"][:8])
            t.add_row(name, f"{d['docs']:,}", f"{d['tokens_estimate']:,}", terms)
        console.print(t)
        console.print(f"corpus with these domains (a view): {outputs['corpus']}", highlight=False)
        if "heldout" in outputs:
            console.print(
                f"held-out corpus with these domains: {outputs['heldout']}", highlight=False
            )
