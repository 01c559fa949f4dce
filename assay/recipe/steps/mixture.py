"""mixture: a training-free mixture of the corpus' domains."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from assay.common.embed import EMBEDDER_HELP
from assay.common.tokenizer import MAX_VOCAB_SIZE, MIN_VOCAB_SIZE
from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, embedder_id, register_step
from assay.util.files import write_json


@register_step
class MixtureStep(Step):
    """A training-free mixture: natural, uniform, temperature, UniMax or BiMix's entropy."""

    outputs = ("mixture",)
    references: ClassVar[dict[str, str]] = {"tokenizer": "tokenizer"}
    verb = "mixture"

    kind: Literal["mixture"] = "mixture"
    method: Literal["natural", "uniform", "temperature", "unimax", "entropy"] = Field(
        description="natural, uniform, temperature, unimax or entropy."
    )
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")
    tokenizer: str | None = Field(
        None, description="A tokenizer step or folder (default: train one)."
    )
    vocab_size: int = Field(
        2048, ge=MIN_VOCAB_SIZE, le=MAX_VOCAB_SIZE, description="Of a trained tokenizer."
    )
    t: float = Field(2.0, gt=0, description="temperature: p ~ n^(1/t).")
    budget: float | None = Field(None, gt=0, description="unimax: the token budget.")
    max_epochs: float = Field(1.0, gt=0, description="unimax: epoch cap.")
    entropy: Literal["unigram", "joint", "conditional", "von_neumann"] = Field(
        "conditional",
        description="entropy: unigram, joint or conditional (BiMix's choice) of token bigrams, "
        "or von_neumann of document embeddings.",
    )
    embedder: str | None = Field(
        None, description=f"entropy von_neumann: the embedder. {EMBEDDER_HELP}"
    )
    max_docs: int = Field(
        2000, ge=2, description="entropy von_neumann: documents embedded per domain."
    )
    seed: int | None = Field(None, description="Seed (default: the recipe's).")

    def plan(self, ctx: Any) -> Any:
        from assay.common.embed import Embedder
        from assay.mixing.baselines import baseline_mixture
        from assay.workflows.proxy_batch import token_cache_for

        corpus, fp = ctx.corpus(self.corpus)
        identity = {"corpus": fp, "upstream": ctx.upstream(self.tokenizer)}
        vne = self.method == "entropy" and self.entropy == "von_neumann"
        if vne:
            identity["embedder"] = embedder_id(self.embedder)

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            seed = ctx.seed(self.seed)
            cache, _ = token_cache_for(
                corpus,
                ctx.step_dir,
                tokenizer=ctx.ref(self.tokenizer, "tokenizer"),
                vocab_size=self.vocab_size,
                seed=seed,
            )
            mix, info = baseline_mixture(
                self.method,
                cache,
                temperature_t=self.t,
                budget=self.budget,
                max_epochs=self.max_epochs,
                entropy=self.entropy,
                seed=seed,
                corpus=corpus if vne else None,
                embedder=Embedder(self.embedder) if vne else None,
                max_docs=self.max_docs,
            )
            mix.save(ctx.step_dir / "mixture.yaml")
            summary = {"method": self.method, "mixture": mix.to_dict(), **info}
            write_json(ctx.step_dir / "mixture.json", summary)
            return {"mixture": str(ctx.step_dir / "mixture.yaml")}, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary, outputs = outcome.summary, outcome.outputs
        mix = ", ".join(f"{d} {w:.3f}" for d, w in summary["mixture"].items())
        console.print(f"{summary['method']}: {mix} -> {outputs['mixture']}", highlight=False)
