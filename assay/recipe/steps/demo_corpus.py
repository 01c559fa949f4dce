"""demo_corpus: build the real-text demo corpus from pip-installed packages."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from assay.recipe.step import Step, register_step


@register_step
class DemoCorpusStep(Step):
    """Build the real-text demo corpus (news, math, code, reference) from pip-installed
    packages; skipped if it is already there."""

    outputs = ("train", "heldout")
    corpus_output = "train"
    reads_corpus = False
    verb = "demo-corpus"
    #: the command line takes `out` as its positional argument
    positional: ClassVar[str] = "out"

    kind: Literal["demo_corpus"] = "demo_corpus"
    out: str = Field("data/demo", description="Folder to write train/ and heldout/ shards into.")
    size: Literal["small", "full"] = Field(
        "full", description="'full' (about 6k documents) or 'small' (100 per domain, for tests)."
    )
    heldout: float = Field(0.1, ge=0, lt=1, description="Share of each domain held out.")
    seed: int | None = Field(
        None, description="Seed of the per-domain subsample and the held-out split."
    )

    def plan(self, ctx: Any) -> Any:
        from assay.demo import build_demo_corpus

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            manifest = build_demo_corpus(
                self.out,
                size=self.size,
                heldout=self.heldout,
                seed=ctx.seed(self.seed),
                overwrite=redo,
            )
            outputs = {"train": manifest["train"], "heldout": manifest["heldout"]}
            return outputs, {"domains": manifest["domains"]}

        return {}, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary = outcome.summary
        d = summary["domains"]
        console.print(
            "demo corpus: " + ", ".join(f"{k} {v['train_docs']:,} docs" for k, v in d.items())
        )
