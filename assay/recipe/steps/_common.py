"""Pieces several step files share: scoring a corpus with a fitted scorer, a token cache for
the mixing steps, the inputs (and, for train_proxy, the settings) of the steps that train
proxies, printing helpers."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from assay.io.corpus import Corpus
from assay.recipe.spec import CorpusSpec
from assay.recipe.step import Step
from assay.workflows.proxy_batch import ProxyOptions
from assay.workflows.proxy_batch import check_preset as check_preset


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def print_validation(fasttext_report: dict[str, Any], console: Any) -> None:
    val = fasttext_report.get("validation", {})
    if val:
        console.print(
            f"classifier held-out accuracy {val['accuracy']:.3f}, ROC AUC {val['auc']:.3f} "
            f"(n={val['n']})"
        )
    else:
        console.print("too few documents for a held-out check of the classifier")


def seeded(scorer: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """A scorer's parameters with the recipe's seed for a scorer that takes one and was not
    given one, so that a recipe run with another seed is another random draw."""
    from assay.selection.base import scorer_class

    accepts = inspect.signature(scorer_class(scorer).__init__).parameters
    return {"seed": seed, **params} if "seed" in accepts and "seed" not in params else params


def fitted(model_dir: Path, redo: bool, fit: Any) -> Any:
    """The scorer saved in `model_dir` (a finished fit is never redone), else `fit()` saved
    there."""
    from assay.selection.base import load_scorer

    if (model_dir / "scorer.json").exists() and not redo:
        return load_scorer(model_dir)
    return fit().save(model_dir)


def score_all(
    scorer: Any, corpus: Corpus, step_dir: Path, ctx: Any, summary: dict[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Score the whole corpus with a (fitted, saved) scorer; the step's outputs and summary."""
    from assay.io.scores import describe_scores
    from assay.selection.score import score_corpus

    scores_dir = step_dir / "scores"
    result = score_corpus(scorer, corpus, scores_dir, runner=ctx.runner)
    summary.update(
        docs=result.docs_out,
        skipped=result.skipped,
        docs_per_second=result.to_dict()["docs_per_second"],
        columns=scorer.columns,
        distribution=describe_scores(scores_dir, corpus),
    )
    outputs = {"scores": str(scores_dir)}
    if scorer.path:
        outputs["model"] = scorer.path
    return outputs, summary


def shard_paths(corpus: Corpus | None) -> list[str] | None:
    """The files of a corpus, for proxy workers that reopen it in another process (the shards
    of a view by their view, which gives them their labels)."""
    if corpus is None:
        return None
    paths = [str(getattr(s, "view", "") or getattr(s, "path", s.name)) for s in corpus.shards]
    return list(dict.fromkeys(paths))


class ProxyInputs(Step):
    """What the steps that train proxies read: the corpus, held-out text and tokenizer (their
    settings are the library's: `ProxyOptions` and the models that extend it)."""

    references: ClassVar[dict[str, str]] = {"tokenizer": "tokenizer"}

    corpus: CorpusSpec | None = Field(None, description="The corpus (default: the recipe's).")
    heldout: CorpusSpec | None = Field(
        None, description="Held-out corpus with the same domains: per-domain bits per byte."
    )
    tokenizer: str | None = Field(
        None, description="A tokenizer step or folder (default: train one on the corpus)."
    )

    def mixing_inputs(self, ctx: Any) -> tuple[Corpus, Corpus | None, dict[str, Any]]:
        corpus, fp = ctx.corpus(self.corpus)
        heldout, heldout_fp = ctx.corpus(self.heldout) if self.heldout else (None, None)
        identity = {"corpus": fp, "heldout": heldout_fp, "upstream": ctx.upstream(self.tokenizer)}
        return corpus, heldout, identity

    def token_cache(
        self, ctx: Any, corpus: Corpus, step_dir: Path, vocab_size: int
    ) -> tuple[Any, str]:
        """The corpus tokenized once for a mixing step, and the tokenizer folder it used."""
        from assay.workflows.proxy_batch import token_cache_for

        return token_cache_for(
            corpus,
            step_dir,
            tokenizer=ctx.ref(self.tokenizer, "tokenizer"),
            vocab_size=vocab_size,
            seed=ctx.seed(self.seed),
        )


class ProxySettings(ProxyInputs, ProxyOptions):
    """The inputs and the shared proxy settings (size, held-out documents, training, seed)."""
