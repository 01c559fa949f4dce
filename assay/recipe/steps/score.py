"""score: rate every document with a registered scorer, loaded, fitted or stateless."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step, register_step
from assay.recipe.steps._common import print_validation, score_all, seeded
from assay.util.config import Strict


class FitSpec(Strict):
    """Train a binary scorer (fastText): positive examples against negative ones."""

    positive: CorpusSpec = Field(description="High-quality or target documents.")
    negative: CorpusSpec | Literal["corpus"] = Field(
        "corpus", description="Documents to contrast with (default: a sample of the corpus)."
    )
    n: int = Field(10_000, ge=1, description="Documents sampled from each side.")
    seed: int | None = Field(None, description="Seed of the samples and of fastText.")
    balance: bool = Field(True, description="Down-sample the larger class.")


@register_step
class ScoreStep(Step):
    """Score every document: scores go beside the data, keyed by id. The scorer is loaded
    (`model`), fitted on positive and negative examples (`fit`) or stateless."""

    outputs = ("scores", "model")
    references: ClassVar[dict[str, str]] = {"model": "model"}
    verb = "score"

    kind: Literal["score"] = "score"
    scorer: str | None = Field(
        None, description="A registered scorer (assay scorers lists them), e.g. doc_stats."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The scorer's parameters, as key=value."
    )
    model: str | None = Field(None, description="A saved scorer folder to score with.")
    fit: FitSpec | None = Field(None, description="Fit the scorer first.")
    seed: int | None = Field(
        None, description="For scorers that take one (random); default: the recipe's seed."
    )
    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")

    @model_validator(mode="after")
    def _model_or_fit(self) -> ScoreStep:
        if self.model and self.fit:
            raise ValueError("give either model (a saved scorer) or fit, not both")
        if not self.model and not self.scorer:
            raise ValueError("give scorer (a registered scorer) or model (a saved one)")
        return self

    def plan(self, ctx: Any) -> Any:
        from assay.selection.base import load_scorer, make_scorer

        corpus, fp = ctx.corpus(self.corpus)
        identity: dict[str, Any] = {"corpus": fp}
        seed = ctx.seed(self.seed)
        fit = self.fit
        if fit is not None:
            pos = ctx.external(fit.positive.open())
            identity["positive"] = pos.fingerprint()

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            model_dir = ctx.step_dir / "model"
            summary: dict[str, Any] = {}
            if self.model:
                scorer = load_scorer(ctx.ref(self.model, "model"))
            elif fit is not None:
                if (model_dir / "scorer.json").exists():
                    scorer = load_scorer(model_dir)
                else:
                    scorer = make_scorer(str(self.scorer), **self.params)
                    scorer = self._fit(ctx, corpus, pos, scorer)
                    scorer.save(model_dir)
                report = model_dir / "fit_report.json"
                if report.exists():
                    from assay.util.files import read_json

                    summary["fit"] = read_json(report)
            else:
                name = str(self.scorer)
                scorer = make_scorer(name, **seeded(name, self.params, seed))
            return score_all(scorer, corpus, ctx.step_dir, ctx, summary)

        return identity, run

    def _fit(self, ctx: Any, corpus: Any, pos: Any, scorer: Any) -> Any:
        from assay.selection.base import fit_binary

        fit = self.fit
        assert fit is not None
        negative = corpus if fit.negative == "corpus" else ctx.external(fit.negative.open())
        return fit_binary(
            scorer, pos, negative, n=fit.n, seed=ctx.seed(fit.seed), balance=fit.balance
        )

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary, outputs = outcome.summary, outcome.outputs
        console.print(
            f"scored {summary['docs']:,} documents (columns: {', '.join(summary['columns'])})"
            + (f"; skipped {summary['skipped']}" if summary["skipped"] else "")
            + f" -> {outputs['scores']}",
            highlight=False,
            soft_wrap=True,
        )
        if "fit" in summary and "validation" in summary["fit"]:
            print_validation(summary["fit"], console)
