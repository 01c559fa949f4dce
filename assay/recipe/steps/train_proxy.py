"""train_proxy: one proxy LM trained on a mixture of the corpus' domains, then measured."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from rich.table import Table

from assay.recipe.step import register_step
from assay.recipe.steps._common import ProxySettings


def parse_mixture(v: Any) -> Any:
    """'news=0.5,code=0.3' as a mapping; anything else (a name, a step, a file) as it is."""
    if isinstance(v, str) and "=" in v:
        try:
            return {k.strip(): float(w) for k, w in (p.split("=", 1) for p in v.split(","))}
        except ValueError:
            raise ValueError(f"mixture {v!r}: expected domain=weight pairs") from None
    return v


@register_step
class TrainProxyStep(ProxySettings):
    """Train one proxy LM on `tokens` tokens of a mixture of the corpus' domains; report its
    held-out bits per byte per domain (and lm-eval tasks)."""

    outputs = ("run", "model", "runs_table")
    references: ClassVar[dict[str, str]] = {"tokenizer": "tokenizer", "mixture": "mixture"}
    verb = "train-proxy"

    kind: Literal["train_proxy"] = "train_proxy"
    mixture: dict[str, float] | str = Field(
        "natural",
        description="'natural', 'uniform', domain=weight pairs (news=0.5,code=0.5), a mixture "
        "file, or a search, bimix or mixture step.",
    )
    tokens: int = Field(ge=1, description="Training tokens.")
    tasks: list[str] = Field(
        default_factory=list, description="lm-eval tasks to run at the end (assay_mmlu_dev, ...)."
    )
    runs_table: str | None = Field(
        None, description="Parquet runs table to append to (default: the run directory's)."
    )

    @field_validator("mixture", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return parse_mixture(v)

    def plan(self, ctx: Any) -> Any:
        from assay.proxies.train import train_proxy

        corpus, heldout, identity = self.mixing_inputs(ctx)
        mixture = self.mixture
        if isinstance(mixture, str) and ctx.is_step(mixture):
            identity["mixture"] = ctx.upstream(mixture)
        if isinstance(mixture, str):
            mixture = ctx.ref(mixture, "mixture")
        runs_table = self.runs_table or ctx.run_dir / "runs.parquet"

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            run = train_proxy(
                corpus,
                mixture,
                self.tokens,
                self.preset,
                ctx.seed(self.seed),
                out_dir=ctx.step_dir / "run",
                tokenizer=ctx.ref(self.tokenizer, "tokenizer"),
                heldout=heldout,
                eval_docs=self.eval_docs,
                config=self.train,
                tasks=self.tasks or None,
                runs_table=runs_table,
                progress=ctx.runner.progress,
            )
            summary = {
                "bpb": run.bpb,
                "tasks": run.tasks,
                "params": run.params,
                "tokens": run.tokens,
                "tokens_per_second": run.tokens_per_second,
                "train_loss": run.train_loss,
                "effective_mixture": run.effective_mixture,
                "cap_note": run.data.get("cap_note"),
            }
            outputs = {"run": run.out_dir, "model": run.model_dir, "runs_table": str(runs_table)}
            return outputs, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        outputs = outcome.outputs
        from assay.proxies.train import ProxyRun

        print_proxy_run(ProxyRun.load(outputs["run"]).to_dict(), console)


def print_proxy_run(r: dict[str, Any], console: Any) -> None:
    console.print(
        f"trained {r['preset']} ({r['params']['total']:,} parameters) on {r['tokens']:,} tokens "
        f"in {r['steps']} steps at {r['tokens_per_second']:,.0f} tokens/s; final train loss "
        f"{r['train_loss']:.3f} -> {r['out_dir']}"
    )
    if r["data"].get("cap_note"):
        console.print(f"[yellow]{r['data']['cap_note']}[/]")
    if r["bpb"]:
        t = Table(title="held-out bits per byte")
        for c in ("domain", "weight", "bits per byte"):
            t.add_column(c)
        for d, b in r["bpb"].items():
            t.add_row(d, f"{r['effective_mixture'].get(d, 0.0):.3f}", f"{b:.3f}")
        console.print(t)
    for task, m in r.get("tasks", {}).items():
        console.print(f"{task}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))
