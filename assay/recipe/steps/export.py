"""export: a mixture as the data configuration of a trainer (Megatron, OLMo-core, nanotron,
Hugging Face datasets, LitGPT)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from assay.export.settings import ExportSettings
from assay.recipe.step import Step, folder_id, register_step
from assay.recipe.steps.materialize import mixture_identity, mixture_value
from assay.recipe.steps.train_proxy import parse_mixture


@register_step
class ExportStep(Step, ExportSettings):
    """Write what a trainer reads for a mixture over tokenized files: Megatron's --data-path
    blend (data_args.txt), OLMo-core's source mixture, nanotron's dataset folders and weights,
    the probabilities of datasets' interleave_datasets, or LitGPT's litdata datasets and data
    module; each domain's share capped at max_epochs passes for the budget."""

    outputs = ("export",)
    references: ClassVar[dict[str, str]] = {"mixture": "mixture", "source": "materialized"}
    reads_corpus: ClassVar[bool] = False
    positional: ClassVar[str] = "mixture"
    verb = "export"

    kind: Literal["export"] = "export"
    mixture: dict[str, float] | str = Field(
        "natural",
        description="'natural' (the source's own proportions), 'uniform', domain=weight pairs, "
        "a mixture file, or a search, bimix or mixture step.",
    )
    source: str = Field(
        description="A materialize step or folder, or a folder of tokenized files with one "
        "sub-folder per domain (Megatron .bin/.idx or datatrove .ds)."
    )

    @field_validator("mixture", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return parse_mixture(v)

    def settings(self, seed: int) -> ExportSettings:
        values = {k: getattr(self, k) for k in ExportSettings.model_fields}
        return ExportSettings(**{**values, "seed": seed})

    def plan(self, ctx: Any) -> Any:
        from assay.export.export import export_mixture

        source = ctx.ref(self.source, "materialized")
        identity = {
            "mixture": mixture_identity(ctx, self.mixture),
            "source": ctx.upstream(self.source) if ctx.is_step(self.source) else folder_id(source),
        }

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            folder = ctx.step_dir / "export"
            summary = export_mixture(
                mixture_value(ctx, self.mixture),
                source,
                folder,
                self.settings(ctx.seed(self.seed)),
            )
            return {"export": str(folder)}, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        s = outcome.summary
        shares = ", ".join(f"{d} {w:.3f}" for d, w in s["shares"].items())
        console.print(f"{s['target']}: {shares} -> {outcome.outputs['export']}", highlight=False)
        if s.get("capped_domains"):
            console.print(
                f"the epoch cap ({s['max_epochs']:g}) bound for {', '.join(s['capped_domains'])}",
                highlight=False,
            )
