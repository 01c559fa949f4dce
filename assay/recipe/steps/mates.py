"""mates: staged pretraining with MATES selection (or its random twin)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from assay.proxies.train import TrainConfig
from assay.recipe.spec import TargetSpec
from assay.recipe.step import folder_id, register_step, targets_identity
from assay.recipe.steps._common import ProxySettings
from assay.recipe.steps.betr import EMBEDDER_HELP
from assay.workflows.mates import mates_train_config


@register_step
class MatesStep(ProxySettings):
    """Staged pretraining with MATES (Yu et al. 2024): each stage probes the proxy's data
    influence, learns it, and keeps the pool's most helpful documents by Gumbel top-k."""

    outputs = ("run", "model")
    verb = "mates"

    kind: Literal["mates"] = "mates"
    reference: TargetSpec = Field(description="Reference (target) examples.")
    method: Literal["mates", "random"] = Field(
        "mates", description="'mates', or 'random' (the same staged run, random selection)."
    )
    group: bool = Field(False, description="Group-MATES: relational influence, greedy selection.")
    stage_tokens: int = Field(ge=1, description="Training tokens per stage.")
    stages: int = Field(2, ge=1, description="Stages (consume-once pools of the corpus).")
    keep: float = Field(0.2, gt=0, le=1, description="Share of each stage's pool kept.")
    tau: float = Field(0.5, gt=0, description="Gumbel top-k temperature.")
    probes: int = Field(300, ge=10, description="Oracle probes per stage.")
    embedder: str | None = Field(None, description=EMBEDDER_HELP)
    train: TrainConfig = Field(
        default_factory=mates_train_config,
        description="Training settings (default: one WSD schedule over all stages).",
    )

    @field_validator("train", mode="before")
    @classmethod
    def _over_mates_defaults(cls, v: Any) -> Any:
        """Settings given in a recipe apply over the staged defaults, not TrainConfig's."""
        return {**mates_train_config().model_dump(), **v} if isinstance(v, dict) else v

    def plan(self, ctx: Any) -> Any:
        from assay.workflows.mates import run_mates

        corpus, heldout, identity = self.mixing_inputs(ctx)
        identity["reference"] = targets_identity(self.reference)
        identity["embedder"] = folder_id(self.embedder)

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            result = run_mates(
                corpus,
                ctx.step_dir / "mates",
                reference=self.reference.source,
                fields=self.reference.fields,
                max_reference=self.reference.max_items,
                stage_tokens=self.stage_tokens,
                stages=self.stages,
                keep=self.keep,
                tau=self.tau,
                probes=self.probes,
                preset=self.preset,
                seed=ctx.seed(self.seed),
                tokenizer=ctx.ref(self.tokenizer, "tokenizer"),
                heldout=heldout,
                eval_docs=self.eval_docs,
                config=self.train,
                embedder={"model": self.embedder},
                method=self.method,
                group=self.group,
                runner=ctx.runner,
                progress=ctx.runner.progress,
            )
            stages = [_stage_summary(st) for st in result.stages]
            summary = {
                "bpb": result.heldout_bpb,
                "reference_loss": result.reference_loss,
                "stages": stages,
            }
            return {"run": result.final_run["out_dir"], "model": result.model_dir}, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary, outputs = outcome.summary, outcome.outputs
        for st in summary["stages"]:
            rho, rate = st.get("spearman"), st.get("probes_per_second")
            console.print(
                f"  {outcome.name} stage {st['stage']} ({st['method']}): "
                f"kept {st['kept_docs']:,} documents, "
                f"reference loss {st['reference_loss']:.4f}"
                + (f", influence Spearman {rho:.3f}" if rho is not None else "")
                + (f", {rate:.1f} probes/s" if rate else "")
            )
        if summary["bpb"]:
            console.print(
                "held-out bits per byte: "
                + ", ".join(f"{d} {v:.4f}" for d, v in sorted(summary["bpb"].items()))
            )
        console.print(f"final model: {outputs['model']}", highlight=False)


def _stage_summary(st: Any) -> dict[str, Any]:
    return {
        "stage": st.stage,
        "method": st.method,
        "kept_docs": st.kept_docs,
        "kept_tokens": st.kept_tokens,
        "reference_loss": st.reference_loss,
        "probes_per_second": st.probing.get("probes_per_second"),
        "spearman": st.influence_model.get("spearman"),
    }
