"""search: a mixture search with proxies (CLIMB's iterations or RegMix's one round)."""

from __future__ import annotations

from typing import Any, Literal

from assay.recipe.step import register_step
from assay.recipe.steps._common import ProxyInputs, shard_paths
from assay.workflows.search import SearchSettings


@register_step
class SearchStep(ProxyInputs, SearchSettings):
    """Search a mixture of the corpus' domains: proxies trained on Dirichlet proposals, a
    predictor of the objective, and CLIMB's iterations or RegMix's average of its best."""

    outputs = ("mixture", "search", "runs_table", "tokenizer")
    verb = "search"

    kind: Literal["search"] = "search"

    def plan(self, ctx: Any) -> Any:
        from assay.proxies.model import get_preset
        from assay.workflows.search import search_mixture

        corpus, heldout, identity = self.mixing_inputs(ctx)

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            vocab = get_preset(self.preset).vocab_size
            cache, tokenizer = self.token_cache(ctx, corpus, ctx.step_dir, vocab)
            folder = ctx.step_dir / "search"
            result = search_mixture(
                cache.root,
                folder,
                self,
                tokenizer=tokenizer,
                heldout=shard_paths(heldout),
                runner=ctx.runner,
                plot=True,
                seed=ctx.seed(self.seed),
            )
            metrics = [r["metric"] for r in result.runs]
            summary = {
                "method": self.method,
                "objective": self.objective,
                "mixture": result.best.to_dict(),
                "iterations": result.iterations,
                "spearman": result.spearman,
                "predictor": result.predictor,
                "best_run_metric": min(metrics),
                "median_run_metric": float(sorted(metrics)[len(metrics) // 2]),
            }
            outputs = {
                "mixture": str(folder / "mixture.yaml"),
                "search": str(folder / "search.json"),
                "runs_table": str(folder / "runs.parquet"),
                "tokenizer": tokenizer,
            }
            return outputs, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary, outputs = outcome.summary, outcome.outputs
        r = summary
        sp = ", ".join(f"{k} {v:.2f}" for k, v in r["spearman"].items())
        console.print(
            f"{r['method']} over iterations {r['iterations']}; {r['objective']}: best run "
            f"{r['best_run_metric']:.4f}, median {r['median_run_metric']:.4f}; predictor "
            f"held-out Spearman: {sp}; used {r['predictor']}"
        )
        mix = ", ".join(f"{d} {w:.3f}" for d, w in r["mixture"].items())
        console.print(f"best mixture: {mix}", highlight=False)
        console.print(f"mixture: {outputs['mixture']}", highlight=False)
