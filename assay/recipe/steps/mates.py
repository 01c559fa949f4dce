"""mates: staged pretraining with MATES selection (or its random twin)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field

from assay.recipe.spec import SplitTargetSpec
from assay.recipe.step import embedder_id, register_step, targets_identity
from assay.recipe.steps._common import ProxyInputs
from assay.workflows.mates import MatesSettings


@register_step
class MatesStep(ProxyInputs, MatesSettings):
    """Staged pretraining with MATES (Yu et al. 2024): each stage probes the proxy's data
    influence, learns it, and keeps the pool's most helpful documents by Gumbel top-k."""

    outputs = ("run", "model")
    verb = "mates"

    kind: Literal["mates"] = "mates"
    targets: SplitTargetSpec = Field(
        description="The target examples (whose loss the selection lowers).",
        validation_alias=AliasChoices("targets", "reference"),
    )

    def plan(self, ctx: Any) -> Any:
        from assay.selection.base import embedder_settings
        from assay.workflows.mates import run_mates

        corpus, heldout, identity = self.mixing_inputs(ctx)
        if self.influence_model == "finetune":  # the encoder's content, as the embedder's
            identity["encoder"] = embedder_id(self.finetune.encoder)
        identity["reference"] = targets_identity(self.targets)  # the key it had: same hashes
        identity["embedder"] = embedder_id(self.embedder)
        if self._scores_continuations():  # the oracle changed: not the steps run before it
            identity["reference_scoring"] = "continuation"

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            result = run_mates(
                corpus,
                ctx.step_dir / "mates",
                self,
                targets=self.targets.source,
                fields=self.targets.fields,
                max_targets=self.targets.max_items,
                context_fields=self.targets.context_fields,
                continuation_fields=self.targets.continuation_fields,
                tokenizer=ctx.ref(self.tokenizer, "tokenizer"),
                heldout=heldout,
                runner=ctx.runner,
                progress=ctx.runner.progress,
                seed=ctx.seed(self.seed),
                # as Embedder settings ({"model": name}): what the run records in mates_config.json
                embedder=embedder_settings(self.embedder),
            )
            stages = [_stage_summary(st) for st in result.stages]
            summary = {
                "bpb": result.heldout_bpb,
                "reference_loss": result.reference_loss,
                "stages": stages,
            }
            return {"run": result.final_run["out_dir"], "model": result.model_dir}, summary

        return identity, run

    def _scores_continuations(self) -> bool:
        """Whether the reference loss scores continuations only (see `run_mates`)."""
        from assay.common.targets import BUILTIN_SPLIT

        if self.reference_scoring != "continuation":
            return False
        t = self.targets
        return t.continuation_fields is not None or (t.source in BUILTIN_SPLIT and t.fields is None)

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
