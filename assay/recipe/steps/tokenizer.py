"""tokenizer: a byte-level BPE trained on a corpus sample, shared by later proxy steps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assay.common.tokenizer import MAX_VOCAB_SIZE, MIN_VOCAB_SIZE
from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, register_step


@register_step
class TokenizerStep(Step):
    """Train a byte-level BPE tokenizer on a uniform sample of a corpus (for proxies)."""

    outputs = ("tokenizer",)
    verb = "train-tokenizer"

    kind: Literal["tokenizer"] = "tokenizer"
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")
    vocab_size: int = Field(
        2048, ge=MIN_VOCAB_SIZE, le=MAX_VOCAB_SIZE, description="Vocabulary size."
    )
    sample_docs: int = Field(20_000, ge=1, description="Documents sampled to train on.")
    seed: int | None = Field(None, description="Seed of the sample (default: the recipe's).")

    def plan(self, ctx: Any) -> Any:
        from assay.common.tokenizer import train_tokenizer

        corpus, fp = ctx.corpus(self.corpus)

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            folder = ctx.step_dir / "tokenizer"
            if not (folder / "tokenizer.json").exists():
                train_tokenizer(
                    corpus,
                    self.vocab_size,
                    folder,
                    sample_docs=self.sample_docs,
                    seed=ctx.seed(self.seed),
                )
            return {"tokenizer": str(folder)}, {"vocab_size": self.vocab_size}

        return {"corpus": fp}, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary, outputs = outcome.summary, outcome.outputs
        console.print(
            f"trained a {summary['vocab_size']:,}-token tokenizer -> {outputs['tokenizer']}",
            highlight=False,
        )
