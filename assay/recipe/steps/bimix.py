"""bimix: BiMix's bivariate scaling law fitted on a few proxy runs; the optimal mixture."""

from __future__ import annotations

from typing import Any, Literal

from assay.errors import ConfigError
from assay.recipe.step import register_step
from assay.recipe.steps._common import ProxyInputs, shard_paths
from assay.workflows.bimix import BiMixSettings


@register_step
class BiMixStep(ProxyInputs, BiMixSettings):
    """Fit BiMix's law L_i(r_i, s) per domain on the evaluation curves of a few proxies; the
    proportions minimising the summed loss (per token, or bits per byte) at a token budget."""

    outputs = ("mixture", "law", "fit", "tokenizer")
    verb = "bimix"

    kind: Literal["bimix"] = "bimix"

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
                self,
                tokenizer=tokenizer,
                heldout=shard_paths(heldout),
                runner=ctx.runner,
                plot=True,
                seed=ctx.seed(self.seed),
            )
            q = fit.quality
            summary = {
                "unit": fit.law.unit,
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
        unit = r.get("unit", "bpb")
        t = Table(title=f"BiMix law ({unit}), optimum at {r['budget']:,.0f} tokens")
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
        console.print(f"predicted total {unit} by budget: {curve}")
        console.print(f"mixture: {outputs['mixture']}", highlight=False)
