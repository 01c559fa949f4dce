"""bimix: BiMix's bivariate scaling law fitted on a few proxy runs; the optimal mixture."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.errors import ConfigError
from assay.recipe.step import register_step
from assay.recipe.steps._common import ProxySettings, shard_paths


@register_step
class BiMixStep(ProxySettings):
    """Fit BiMix's law L_i(r_i, s) per domain on the evaluation curves of a few proxies; the
    proportions minimising the summed loss at a token budget."""

    outputs = ("mixture", "law", "fit", "tokenizer")
    verb = "bimix"

    kind: Literal["bimix"] = "bimix"
    tokens: int = Field(ge=1, description="Training tokens of each fitting run.")
    runs: int = Field(5, ge=2, description="Fitting runs (different mixtures).")
    evals: int = Field(8, ge=4, description="Evaluations along each run.")
    budget: float | None = Field(
        None, gt=0, description="Token budget to optimise for (default: tokens)."
    )
    budgets: list[float] | None = Field(None, description="Budgets of the loss-budget curve.")
    weights: dict[str, float] | None = Field(
        None, description="Domain weights in the objective, domain=w."
    )
    concentration: tuple[float, float] = Field(
        (2.0, 10.0), description="Dirichlet strength range of the fitting mixtures (per domain)."
    )
    min_share: float = Field(0.01, ge=0, lt=1, description="Floor of every domain in the optimum.")

    def plan(self, ctx: Any) -> Any:
        from assay.proxies.model import get_preset
        from assay.workflows.bimix import fit_bimix

        corpus, heldout, identity = self.mixing_inputs(ctx)
        if heldout is None:
            raise ConfigError(
                f"step {self.name!r}: BiMix fits per-domain held-out losses; give heldout"
            )

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            vocab = get_preset(self.preset).vocab_size
            cache, tokenizer = self.token_cache(ctx, corpus, ctx.step_dir, vocab)
            folder = ctx.step_dir / "bimix"
            fit = fit_bimix(
                cache.root,
                folder,
                tokenizer=tokenizer,
                tokens=self.tokens,
                heldout=shard_paths(heldout),
                runs=self.runs,
                evals=self.evals,
                budget=self.budget,
                budgets=self.budgets,
                weights=self.weights,
                preset=self.preset,
                eval_docs=self.eval_docs,
                train=self.train.model_dump(),
                concentration=self.concentration,
                min_share=self.min_share,
                seed=ctx.seed(self.seed),
                runner=ctx.runner,
                plot=True,
            )
            q = fit.quality
            summary = {
                "mixture": fit.mixture.to_dict(),
                "budget": fit.budget,
                "predicted": fit.predicted,
                "law": fit.law.to_dict(),
                "extrapolation_mean_rel_error": {
                    d: v["mean_rel_error"] for d, v in q["extrapolation"].items()
                },
                "heldout_r2": q.get("heldout_r2"),
                "budget_curve": [{"tokens": c["s"], "total": c["total"]} for c in fit.curve],
            }
            outputs = {
                "mixture": str(folder / "mixture.yaml"),
                "law": str(folder / "law.json"),
                "fit": str(folder / "fit.json"),
                "tokenizer": tokenizer,
            }
            return outputs, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary, outputs = outcome.summary, outcome.outputs
        from rich.table import Table

        r = summary
        t = Table(title=f"BiMix law, optimum at {r['budget']:,.0f} tokens")
        for c in ("domain", "alpha", "beta", "B", "C", "extrap. error", "held-out R2", "share"):
            t.add_column(c)
        r2s = r.get("heldout_r2") or {}
        for d, law in r["law"].items():
            r2 = r2s.get(d)
            t.add_row(
                d,
                f"{law['alpha']:.3f}",
                f"{law['beta']:.3f}",
                f"{law['B']:.3g}",
                f"{law['C']:.3f}",
                f"{r['extrapolation_mean_rel_error'][d]:.2%}",
                "" if r2 is None else f"{r2:.3f}",
                f"{r['mixture'][d]:.3f}",
            )
        console.print(t)
        curve = ", ".join(f"{c['tokens']:,.0f}: {c['total']:.3f}" for c in r["budget_curve"])
        console.print(f"predicted total loss by budget: {curve}")
        console.print(f"mixture: {outputs['mixture']}", highlight=False)
