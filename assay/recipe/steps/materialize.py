"""materialize: the budgeted, epoch-capped sample of a mixture written as shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from assay.common.tokenizer import MAX_VOCAB_SIZE, MIN_VOCAB_SIZE
from assay.export.settings import MaterializeSettings
from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, register_step
from assay.recipe.steps.train_proxy import parse_mixture


def mixture_identity(ctx: Any, mixture: Any) -> Any:
    """What a result depends on of a mixture setting: an earlier step's hash, a file's
    weights, or the value itself."""
    from assay.common.mixture import Mixture

    if isinstance(mixture, str) and ctx.is_step(mixture):
        return ctx.upstream(mixture)
    if isinstance(mixture, str) and Path(ctx.ref(mixture, "mixture")).is_file():
        return Mixture.load(ctx.ref(mixture, "mixture")).to_dict()
    return mixture


def mixture_value(ctx: Any, mixture: Any) -> Any:
    """A mixture setting as the library takes it (an earlier step's or folder's file)."""
    if isinstance(mixture, str) and mixture not in ("natural", "uniform"):
        return ctx.ref(mixture, "mixture")
    return mixture


@register_step
class MaterializeStep(Step, MaterializeSettings):
    """Write the sample of a mixture that a token budget buys, no domain repeated beyond
    max_epochs: text shards and/or Megatron .bin/.idx and datatrove .ds files, one folder per
    domain, and materialize.json (give it to `assay export`)."""

    outputs = ("materialized", "tokenizer")
    references: ClassVar[dict[str, str]] = {"tokenizer": "tokenizer", "mixture": "mixture"}
    verb = "materialize"

    kind: Literal["materialize"] = "materialize"
    mixture: dict[str, float] | str = Field(
        description="'natural', 'uniform', domain=weight pairs (news=0.5,code=0.5), a mixture "
        "file, or a search, bimix or mixture step."
    )
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")
    tokenizer: str | None = Field(
        None, description="A tokenizer step or folder (default: train one on the corpus)."
    )
    vocab_size: int = Field(
        2048, ge=MIN_VOCAB_SIZE, le=MAX_VOCAB_SIZE, description="Of a trained tokenizer."
    )

    @field_validator("mixture", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return parse_mixture(v)

    def settings(self, seed: int) -> MaterializeSettings:
        values = {k: getattr(self, k) for k in MaterializeSettings.model_fields}
        return MaterializeSettings(**{**values, "seed": seed})

    def plan(self, ctx: Any) -> Any:
        from assay.export.materialize import materialize_mixture
        from assay.workflows.proxy_batch import token_cache_for

        corpus, fp = ctx.corpus(self.corpus)
        identity = {
            "corpus": fp,
            "mixture": mixture_identity(ctx, self.mixture),
            "upstream": ctx.upstream(self.tokenizer),
        }

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            seed = ctx.seed(self.seed)
            cache, tokenizer = token_cache_for(
                corpus,
                ctx.step_dir,
                tokenizer=ctx.ref(self.tokenizer, "tokenizer"),
                vocab_size=self.vocab_size,
                seed=seed,
            )
            folder = ctx.step_dir / "data"
            manifest = materialize_mixture(
                corpus,
                cache,
                mixture_value(ctx, self.mixture),
                folder,
                self.settings(seed),
                tokenizer_name=str(tokenizer),
            )
            summary = {k: v for k, v in manifest.items() if k not in ("identity", "domains")}
            summary["domains"] = {
                d: {k: v for k, v in info.items() if k != "files"}
                for d, info in manifest["domains"].items()
            }
            return {"materialized": str(folder), "tokenizer": str(tokenizer)}, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        s = outcome.summary
        total = sum(info["tokens"] for info in s["domains"].values())
        console.print(
            f"{total:,} tokens"
            + (f" for a budget of {s['budget']:,}" if s.get("budget") else " (every document once)")
            + f" -> {outcome.outputs['materialized']}",
            highlight=False,
        )
        for d, info in s["domains"].items():
            console.print(
                f"  {d}: {info['tokens']:,} tokens, {info['documents']:,} documents "
                f"({info['unique_documents']:,} distinct)",
                highlight=False,
            )
        if s.get("cap_note"):
            console.print(s["cap_note"], highlight=False)
