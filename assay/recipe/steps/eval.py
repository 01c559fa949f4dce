"""eval: per-domain bits per byte and lm-eval tasks of a model."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from rich.table import Table

from assay.common.lm import DeviceSettings
from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, register_step
from assay.util.files import write_json


@register_step
class EvalStep(Step, DeviceSettings):
    """Evaluate a model (a train_proxy or mates step, or a local model folder): held-out bits
    per byte per domain and lm-eval task metrics."""

    outputs = ("eval",)
    references: ClassVar[dict[str, str]] = {"model": "model"}
    reads_corpus = False
    verb = "eval"
    positional: ClassVar[str] = "model"

    kind: Literal["eval"] = "eval"
    model: str = Field(description="A model folder (or GGUF folder), or a train_proxy step.")
    gguf_file: str | None = Field(None, description="The .gguf file in a GGUF folder.")
    heldout: CorpusSpec | None = Field(None, description="Held-out corpus for bits per byte.")
    eval_docs: int | None = Field(200, ge=1, description="Held-out documents per domain.")
    tasks: list[str] = Field(
        default_factory=list, description="lm-eval tasks: assay_mmlu_dev, assay_champ, ..."
    )
    limit: int | None = Field(None, ge=1, description="Items per task (default: all).")
    seq_len: int = Field(256, ge=2, description="Tokens per evaluation window.")

    def plan(self, ctx: Any) -> Any:
        from assay.eval import evaluate_model

        heldout, heldout_fp = ctx.corpus(self.heldout) if self.heldout else (None, None)
        model_path = ctx.ref(self.model, "model")
        identity = {"heldout": heldout_fp, "upstream": ctx.upstream(self.model)}

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            result = evaluate_model(
                model_path,
                heldout=heldout,
                tasks=self.tasks,
                gguf_file=self.gguf_file,
                eval_docs=self.eval_docs,
                limit=self.limit,
                seq_len=self.seq_len,
                device=self.device,
                dtype=self.dtype,
            )
            write_json(ctx.step_dir / "eval.json", result)
            return {"eval": str(ctx.step_dir / "eval.json")}, result

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary = outcome.summary
        r = summary
        console.print(f"{r['model']}: {r['params']['total']:,} parameters")
        if "bpb" in r:
            t = Table(title=f"held-out bits per byte (mean {r['bpb_mean']:.3f})")
            for c in ("domain", "bits per byte", "loss per token", "docs"):
                t.add_column(c)
            for d, v in r["heldout"].items():
                t.add_row(d, f"{v['bpb']:.3f}", f"{v['loss']:.3f}", f"{v['docs']}")
            console.print(t)
        for task, m in r.get("tasks", {}).items():
            console.print(f"{task}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))
