"""search: a mixture search with proxies (CLIMB's iterations or RegMix's one round)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.recipe.step import register_step
from assay.recipe.steps._common import ProxySettings, shard_paths


@register_step
class SearchStep(ProxySettings):
    """Search a mixture of the corpus' domains: proxies trained on Dirichlet proposals, a
    predictor of the objective, and CLIMB's iterations or RegMix's average of its best."""

    outputs = ("mixture", "search", "runs_table", "tokenizer")
    verb = "search"

    kind: Literal["search"] = "search"
    method: Literal["climb", "regmix"] = Field(
        "climb", description="'climb' (iterative) or 'regmix' (one round)."
    )
    objective: str = Field(
        "bpb.domain_mean",
        description="Runs-table column to minimise: bpb.domain_mean, bpb.<domain>, bpb.mean, "
        "or -task.<task>.<metric>.",
    )
    tokens: int = Field(ge=1, description="Training tokens of each proxy.")
    runs: int = Field(14, ge=3, description="Proxy runs in all.")
    split: list[float] = Field(
        default_factory=lambda: [4.0, 2.0, 1.0],
        description="Share of the runs per iteration (CLIMB's 4:2:1).",
    )
    tasks: list[str] = Field(default_factory=list, description="lm-eval tasks of each proxy.")
    predictor: Literal["auto", "lightgbm", "linear"] = Field(
        "auto",
        description="'lightgbm' (CLIMB/RegMix), 'linear', or 'auto': whichever ranks the runs "
        "so far better (k-fold Spearman).",
    )
    candidates: int = Field(10_000, ge=10, description="Mixtures the predictor ranks.")
    regmix_top_k: int = Field(16, ge=1, description="RegMix: average the predictor's top k.")
    temperature: float = Field(
        0.5, gt=0, description="Prior of the proposals: token counts ** temperature."
    )
    strengths: tuple[float, float, int] = Field(
        (0.1, 5.0, 15), description="Dirichlet strengths of the proposals: low, high, steps."
    )
    max_epochs: float | None = Field(
        None, gt=0, description="No proposal repeats a domain more than this."
    )
    floor: float = Field(2e-4, ge=0, lt=1, description="Least share of a domain in a proposal.")

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
                objective=self.objective,
                tokenizer=tokenizer,
                tokens=self.tokens,
                runs=self.runs,
                split=self.split,
                method=self.method,
                preset=self.preset,
                heldout=shard_paths(heldout),
                eval_docs=self.eval_docs,
                tasks=self.tasks,
                train=self.train.model_dump(),
                predictor=self.predictor,
                candidates=self.candidates,
                regmix_top_k=self.regmix_top_k,
                seed=ctx.seed(self.seed),
                runner=ctx.runner,
                temperature=self.temperature,
                strengths=self.strengths,
                max_epochs=self.max_epochs,
                floor=self.floor,
                plot=True,
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
