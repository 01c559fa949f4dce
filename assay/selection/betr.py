"""BETR: benchmark-targeted ranking, distilled into fastText (Mizrahi et al. 2025,
"Language Models Improve When Pretraining Data Matches Target Tasks").

1. Embed every target example on its own (question, answer and any supporting fields joined)
   and a sample of the pool, raw.
2. Each target example ranks the sampled documents by cosine similarity (rank 1 = closest).
   A document's score is its best value over examples: `max_i v(rank_ij)` (default), which the
   paper found far better than averaging (62.2 vs 58.2 Core at 7B) or than a centroid (58.3).
   `mean` averages `log2(1 / rank)` over examples instead.
3. The top `positive_fraction` of the sample (10%) are positives, the rest negatives
   (down-sampled to balance), and a fastText classifier learns to tell them apart.
4. The classifier scores the whole corpus (through `score_corpus`, so any runner).

With max aggregation only each example's top-K neighbours matter, so ranks come from blocked
matrix products keeping a running top-K (`assay.embed.cosine_topk`); K grows until the
documents with a finite best rank cover the positives. Memory is O(examples x K), never
examples x sample. Mean aggregation needs every rank and sorts one block of examples at a time.

The paper keeps 10% of tokens at its scale and finds the best rate grows with compute:
`betr_keep_rate(flops)` gives its fit, F = 4e-5 * C^0.25 percent.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from assay.common.embed import EMBEDDER_HELP, Embedder, cosine_topk, describe
from assay.errors import ConfigError, InputError
from assay.selection.base import NotFittedError, Scorer, embedder_settings, register_scorer
from assay.selection.fasttext import FastTextScorer, adapt_to_sample
from assay.util.config import Strict
from assay.util.files import atomic_path, read_json, write_json
from assay.util.hashing import stable_hash64

#: the paper's fastText settings (tuned with 1,000 Optuna trials at 10M documents)
BETR_PARAMS: dict[str, Any] = {
    "lr": 0.03,
    "dim": 128,
    "ws": 10,
    "minCount": 5,
    "epoch": 5,
    "wordNgrams": 2,
}
Aggregation = Literal["max", "mean"]
AGGREGATIONS: tuple[str, ...] = typing.get_args(Aggregation)
MIN_SAMPLE = 40


class BETRSettings(Strict):
    """BETR's options: what `fit_betr` takes, and (with its targets and corpus) the `betr` step.

    From Python, `embedder` may also be a dict of `Embedder` settings (`{"model": ...,
    "cache": False}`); a `long_docs` in it wins over the `long_docs` setting.
    """

    sample: int = Field(
        10_000, ge=1, description="Pool documents ranked against the targets (a uniform sample)."
    )
    embedder: str | dict[str, Any] | None = Field(None, description=EMBEDDER_HELP)
    long_docs: Literal["truncate", "mean"] = Field(
        "truncate",
        description="Documents longer than the embedder's context: 'truncate' or 'mean' "
        "(average of chunk embeddings).",
    )
    aggregation: Aggregation = Field(
        "max",
        description="'max' (a document's best rank over the examples, as in the paper) or "
        "'mean' (mean log inverse rank).",
    )
    positive_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the ranked sample labelled positive."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="fastText settings.")
    column: str = Field("betr", description="Name of the score column.")
    seed: int | None = Field(None, description="Seed of the sample, labels and fastText.")

    def embedder_config(self) -> dict[str, Any]:
        """The `Embedder` settings the scorer keeps: the model (or the dict), and `long_docs` when
        it was given (a `betr` step always gives it). Left out, the embedder's own default
        (truncate) applies and the scorer's settings do not name it, as in scorers fitted
        before `long_docs` was one of `fit_betr`'s options: same settings, same `get_config()`."""
        config = embedder_settings(self.embedder)
        if "long_docs" in self.model_fields_set:
            config.setdefault("long_docs", self.long_docs)
        return config


#: the defaults BETRScorer shares with the settings (declared once, in BETRSettings)
_DEFAULT = BETRSettings()


def betr_keep_rate(flops: float) -> float:
    """The paper's compute-optimal share of tokens to keep, as a fraction (clipped to (0, 1])."""
    return float(min(1.0, max(1e-4, 4e-5 * flops**0.25 / 100)))


def rank_scores(
    targets: np.ndarray, sample: np.ndarray, *, aggregation: str = "max", min_ranked: int = 0
) -> dict[str, np.ndarray]:
    """Per-document BETR score from unit embeddings (targets x dim, sample x dim).

    max: `best_rank` (1 = some example's nearest document; len(sample)+1 = outside every
    example's top K), `best_cosine` and `best_target`; `score` = -best_rank with ties broken by
    the cosine. K doubles until at least `min_ranked` documents have a finite rank.
    mean: `score` = mean over examples of log2(1 / rank).
    """
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, not {aggregation!r}")
    n, m = len(sample), len(targets)
    if aggregation == "mean":
        total = np.zeros(n, dtype=np.float64)
        block = max(1, min(m, (1 << 24) // max(n, 1)))  # ~64 MB of similarities at a time
        for a in range(0, m, block):
            sims = targets[a : a + block] @ sample.T
            order = np.argsort(-sims, axis=1, kind="stable")
            ranks = np.empty_like(order)
            np.put_along_axis(ranks, order, np.arange(1, n + 1)[None, :], axis=1)
            total += (-np.log2(ranks)).sum(axis=0)
        return {"score": (total / m).astype(np.float64)}
    k = max(8, int(np.ceil(2 * max(min_ranked, 1) / m)))
    while True:
        idx, sim = cosine_topk(targets, sample, min(k, n))
        best_rank = np.full(n, n + 1, dtype=np.int64)
        best_cos = np.full(n, -np.inf, dtype=np.float32)
        best_target = np.full(n, -1, dtype=np.int64)
        # visit (example, rank) pairs from worst to best so the best write wins; among equal
        # ranks, the higher cosine wins (written last)
        ranks = np.broadcast_to(np.arange(1, idx.shape[1] + 1), idx.shape)
        rows = np.broadcast_to(np.arange(m)[:, None], idx.shape)
        order = np.lexsort((sim.ravel(), -ranks.ravel()))
        flat_idx = idx.ravel()[order]
        best_rank[flat_idx] = ranks.ravel()[order]
        best_cos[flat_idx] = sim.ravel()[order]
        best_target[flat_idx] = rows.ravel()[order]
        ranked = int((best_rank <= n).sum())
        if ranked >= min(min_ranked, n) or k >= n:
            break
        k *= 2
    # -rank, tie-broken by cosine in (-1, 1) scaled well below one rank step
    score = -best_rank.astype(np.float64) + np.where(best_rank <= n, best_cos, -1.0) * 0.49
    return {
        "score": score,
        "best_rank": best_rank,
        "best_cosine": best_cos,
        "best_target": best_target,
        "k": np.asarray(k),
    }


@register_scorer("betr")
class BETRScorer(Scorer):
    """Benchmark-targeted ranking labels distilled into fastText; `score` is P(target-like).

    >>> scorer = BETRScorer().fit(load_targets("assay_champ"), corpus.sample(5000)["text"])
    """

    def __init__(
        self,
        column: str = _DEFAULT.column,
        embedder: dict[str, Any] | str | None = _DEFAULT.embedder,
        aggregation: str = _DEFAULT.aggregation,
        positive_fraction: float = _DEFAULT.positive_fraction,
        params: dict[str, Any] | None = None,
        adapt_to_sample: bool = True,
    ):
        super().__init__(column)
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, not {aggregation!r}")
        if not 0 < positive_fraction < 1:
            raise ConfigError(f"positive_fraction must be in (0, 1), not {positive_fraction}")
        self.embedder = embedder_settings(embedder)
        self.aggregation = aggregation
        self.positive_fraction = positive_fraction
        self.params = {**BETR_PARAMS, **(params or {})}
        self.adapt_to_sample = adapt_to_sample
        self.classifier: FastTextScorer | None = None
        self.report: dict[str, Any] = {}
        self.labels: dict[str, np.ndarray] = {}

    @property
    def is_fitted(self) -> bool:
        return self.classifier is not None

    @property
    def portable(self) -> bool:
        return self.classifier is None

    def make_embedder(self) -> Embedder:
        return Embedder(**self.embedder)

    def fit(
        self,
        targets: Sequence[str],
        sample: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> BETRScorer:
        """Label `sample` (pool documents) by their rank against `targets`, then train fastText."""
        targets = [t for t in targets if t and t.strip()]
        sample = list(sample)
        if not targets:
            raise InputError("BETR needs target examples: the target set is empty")
        if ids is not None and len(ids) != len(sample):
            raise InputError(f"{len(ids)} ids for {len(sample)} sample documents")
        n_pos = round(self.positive_fraction * len(sample))
        if len(sample) < MIN_SAMPLE or n_pos < 10:
            need = max(MIN_SAMPLE, int(np.ceil(10 / self.positive_fraction)))
            raise ConfigError(
                f"the pool sample is too small to train BETR's classifier: {len(sample)} "
                f"documents give {n_pos} positives at positive_fraction={self.positive_fraction}; "
                f"sample at least {need} documents"
            )
        embedder = self.make_embedder()
        t_vecs = embedder.embed(targets, progress=progress)
        s_vecs = embedder.embed(sample, progress=progress)
        ranks = rank_scores(t_vecs, s_vecs, aggregation=self.aggregation, min_ranked=n_pos)
        # order by score, ties by a seeded hash of the document (stable across runs)
        keys = ids if ids is not None else [str(i) for i in range(len(sample))]
        tie = stable_hash64(list(keys), seed)
        order = np.lexsort((tie, -ranks["score"]))
        label = np.zeros(len(sample), dtype=np.int8)
        label[order[:n_pos]] = 1
        params = dict(self.params)
        if self.adapt_to_sample:
            params = adapt_to_sample(params, 2 * n_pos)
        self.classifier = FastTextScorer(column=self.column, params=params).fit(
            (sample[i] for i in order[:n_pos]),
            (sample[i] for i in order[n_pos:]),
            seed=seed,
            balance=True,
        )
        self.labels = {"id": np.asarray(keys, dtype=object), "label": label, **ranks}
        self.labels.pop("k", None)
        self.report = {
            "targets": len(targets),
            "sample": len(sample),
            "positives": n_pos,
            "aggregation": self.aggregation,
            "embedder": describe(embedder),
            "fasttext": self.classifier.report,
            "fasttext_params_used": params,
        }
        if self.aggregation == "max":
            self.report["top_k_per_target"] = int(ranks["k"])
            self.report["worst_positive_rank"] = int(ranks["best_rank"][order[n_pos - 1]])
            self.report["positive_cosine_mean"] = float(ranks["best_cosine"][label == 1].mean())
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if self.classifier is None:
            raise NotFittedError("BETRScorer is not fitted: call fit() or load a saved one")
        return self.classifier.score(texts)

    def _save_state(self, folder: Path) -> None:
        self.classifier._save_state(folder)  # model.bin (+ fit_report.json of the classifier)
        write_json(folder / "fit_report.json", self.report)
        if self.labels:
            import polars as pl

            cols = {k: v for k, v in self.labels.items() if k != "id"}
            frame = pl.DataFrame({"id": [str(i) for i in self.labels["id"]], **cols})
            with atomic_path(folder / "labels.parquet") as tmp:
                frame.write_parquet(tmp)

    def _load_state(self, folder: Path) -> None:
        clf = FastTextScorer(column=self.column, params=self.params)
        clf._load_state(folder)
        self.classifier = clf
        if (folder / "fit_report.json").exists():
            self.report = read_json(folder / "fit_report.json")


def fit_betr(
    corpus: Any,
    targets: Any,
    settings: BETRSettings | None = None,
    *,
    fields: Sequence[str] | None = None,
    max_targets: int | None = None,
    progress: bool = False,
    **options: Any,
) -> BETRScorer:
    """Fit BETR on a uniform sample of `corpus` (seeded hash of the id) against `targets`
    (a file, a built-in benchmark name or a list of texts; see `load_targets`).

    `settings` (or keyword arguments such as sample=, embedder=, aggregation=, params=; they
    override `settings`) are `BETRSettings`; a seed of None is 0.
    """
    from assay.common.targets import load_targets

    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = BETRSettings.model_validate({**base, **options})
    seed = 0 if cfg.seed is None else cfg.seed
    examples = load_targets(targets, fields, max_items=max_targets, seed=seed)
    frame = corpus.sample(cfg.sample, seed=seed)
    # the texts once, as Python strings (the embedder takes them so); the frame goes
    texts, ids = frame.get_column("text").to_list(), frame.get_column("id").to_list()
    del frame
    scorer = BETRScorer(
        column=cfg.column,
        embedder=cfg.embedder_config(),
        aggregation=cfg.aggregation,
        positive_fraction=cfg.positive_fraction,
        params=cfg.params,
    )
    return scorer.fit(examples, texts, ids=ids, seed=seed, progress=progress)
