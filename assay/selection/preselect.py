"""PreSelect: keep the documents whose losses predict benchmark scores (Shum et al., ICML 2025).

"Predictive Data Selection: The Data That Predicts Is the Data That Teaches" (arXiv 2503.00808).
A document is good training data when a family of models ranks on it, by loss, the same way it
ranks on the benchmarks: the better model has the lower loss. The method has three steps:

1. **Losses.** Every model of the family scores a calibration sample of the pool, giving its bits
   per character on each document (`bits_per_char`, `family_losses`).
2. **Predictive strength** (`predictive_strength`). With the models ordered by benchmark score,
   worst to best, a document's score is the share of model pairs (i worse than j) where the worse
   model has the higher loss: 1.0 when the loss order is exactly the benchmark order.
3. **Distillation** (`PreSelectScorer`). Documents with a perfect score are the positives, as
   many documents from the bottom of the ranking are the negatives, and a fastText classifier
   learns to tell them apart. It then scores the whole pool at fastText speed; its P(positive) is
   the PreSelect score.

Selection itself is `assay.selection.select`. The official code keeps the top 10% *by
characters* (it sums `len(text)` down the ranking until 10% of all characters is reached), so the
faithful cut is `select(..., column="preselect", keep=0.1, by="chars")`.

The paper's family is six Llama models (7B to 65B) and their average benchmark accuracy. Offline,
a family can be proxies trained by assay, and `family_benchmark_scores` defines each one's
"benchmark score" as minus its bits per character on target examples. Checkpoints of a single
training run make a poor family: a better-trained model is better on almost every document, so
nearly all documents are perfectly concordant and the labels say little about the target. Models
whose target ranking differs from their general ranking (different data mixtures, different
sizes) are what makes the predictive strength discriminate.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from pydantic import Field

from assay.common.lm import DeviceSettings
from assay.common.losses import LN2
from assay.errors import ConfigError, InputError
from assay.selection.base import NotFittedError, Scorer, register_scorer
from assay.selection.fasttext import (
    DEFAULT_PARAMS,
    MIN_DOCS_PER_CLASS,
    FastTextScorer,
    adapt_to_sample,
)
from assay.util.files import atomic_path, read_json, write_json

#: The official classifier call: `fasttext.train_supervised(epoch=3, lr=0.1, wordNgrams=2)`. It
#: leaves the rest at fastText's defaults, which assay's share (`DEFAULT_PARAMS`: dim 100,
#: minCount 1, 2M buckets, softmax); only the thread count is assay's (`training_threads`).
PRESELECT_PARAMS: dict[str, Any] = {"lr": 0.1, "epoch": 3, "wordNgrams": 2}

#: The fewest models for which a rank agreement means anything: with two, every document scores
#: 0 or 1 (the paper uses six).
MIN_MODELS = 3

#: Documents per call to the reference model: bounds the memory that tokens and windows take.
CHUNK_DOCS = 4096

CALIBRATION_FILE = "calibration.parquet"
FAMILY_FILE = "family.json"
REPORT_FILE = "fit_report.json"
CLASSIFIER_DIR = "classifier"

#: A model of the family: a local causal LM folder, {"path": ..., "gguf_file": ..., "name": ...},
#: or a `ProxyRun` (its `model_dir`).
ModelSpec = Union[str, "os.PathLike[str]", Mapping[str, Any], Any]


class PreSelectSettings(DeviceSettings):
    """PreSelect's options: what `fit_preselect` (assay.workflows.preselect) takes, and (with the
    model family, its targets and corpus) the `preselect` step. `device` and `dtype` are where
    the family's models compute their losses (a GPU in bfloat16 when there is one)."""

    calibration: int = Field(
        2_000, ge=1, description="Pool documents every model scores (a uniform sample)."
    )
    positive_fraction: float = Field(
        0.1,
        gt=0,
        le=0.5,
        description="Share labelled positive when too few documents have perfect strength.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="fastText settings.")
    column: str = Field("preselect", description="Name of the score column.")
    seed: int | None = Field(None, description="Seed of the samples, labels and fastText.")


#: the defaults PreSelectScorer shares with the settings (declared once, in PreSelectSettings)
_DEFAULT = PreSelectSettings()


# ---------------------------------------------------------------------------------------------
# Losses


def model_spec(model: ModelSpec) -> dict[str, Any]:
    """A model spec as {"path", "gguf_file", "name"} (name may be None)."""
    if isinstance(model, Mapping):
        if "path" not in model:
            raise ConfigError(f"a model given as a mapping needs a 'path' key: {dict(model)}")
        unknown = set(model) - {"path", "gguf_file", "name", "score"}
        if unknown:
            raise ConfigError(f"unknown keys in model spec: {sorted(unknown)}")
        return {
            "path": str(model["path"]),
            "gguf_file": model.get("gguf_file"),
            "name": model.get("name"),
        }
    if isinstance(model, (str, os.PathLike)):
        return {"path": str(model), "gguf_file": None, "name": None}
    if isinstance(getattr(model, "model_dir", None), str):  # a ProxyRun
        return {"path": model.model_dir, "gguf_file": None, "name": None}
    raise ConfigError(
        f"a model is a path, a mapping with a 'path' or a ProxyRun, not {type(model).__name__}"
    )


def bits_per_char(
    model: str | os.PathLike,
    texts: Sequence[str],
    *,
    gguf_file: str | None = None,
    batch_tokens: int = 8192,
    seq_len: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> np.ndarray:
    """Each document's total NLL under a local causal LM (on `device` in `dtype`: by default a
    GPU in bfloat16 when there is one, else the CPU in float32), in bits per character (float64).

    Why characters: the models of a family need not share a tokenizer, and loss per token is not
    comparable across tokenizers. Dividing the summed NLL by the document's length in characters
    (Python `len`, as in the official code) is. Within one document the divisor is the same for
    every model, so the PreSelect ranking would be the same with total loss; the normalisation
    matters for the numbers users compare (and for `family_benchmark_scores`).

    Every document is scored on its own (no context from its neighbours; the official code's
    packed, strided evaluation lets context cross document boundaries). Empty documents are
    undefined and come back as NaN.
    """
    from assay.selection.perplexity import PerplexityScorer

    scorer = PerplexityScorer(
        str(model),
        gguf_file=gguf_file,
        batch_tokens=batch_tokens,
        seq_len=seq_len,
        device=device,
        dtype=dtype,
    )
    texts = list(texts)
    chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    out = np.full(len(texts), np.nan, dtype=np.float64)
    todo = np.flatnonzero(chars > 0)
    for a in range(0, len(todo), CHUNK_DOCS):
        idx = todo[a : a + CHUNK_DOCS]
        nll = scorer.score_details([texts[i] for i in idx])["nll"]
        out[idx] = nll / (chars[idx] * LN2)
    return out


def family_losses(
    models: Sequence[ModelSpec],
    texts: Sequence[str],
    *,
    batch_tokens: int = 8192,
    seq_len: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> np.ndarray:
    """Bits per character of every model on every document: shape (n_models, n_docs), float64.

    A model is a local causal LM folder (a trained proxy's `model_dir`, or the `ProxyRun`
    itself) or a mapping `{"path": ..., "gguf_file": ...}` for a GGUF file. The models are
    loaded one at a time, on `device` in `dtype` (see `bits_per_char`).
    """
    texts = list(texts)
    rows = []
    for m in models:
        s = model_spec(m)
        rows.append(
            bits_per_char(
                s["path"],
                texts,
                gguf_file=s["gguf_file"],
                batch_tokens=batch_tokens,
                seq_len=seq_len,
                device=device,
                dtype=dtype,
            )
        )
    return np.stack(rows) if rows else np.zeros((0, len(texts)), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Predictive strength


def _names(n: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"model {i}" for i in range(n)]
    if len(names) != n:
        raise ConfigError(f"{len(names)} model names for {n} models")
    return [str(x) for x in names]


def _check_scores(benchmark_scores: Any, names: Sequence[str] | None) -> np.ndarray:
    """Validated benchmark scores (float64): at least three, finite and pairwise distinct."""
    scores = np.asarray(benchmark_scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ConfigError(
            f"benchmark scores must be one number per model, got shape {scores.shape}"
        )
    n = len(scores)
    if n < MIN_MODELS:
        raise ConfigError(
            f"PreSelect needs at least {MIN_MODELS} models (got {n}): with fewer, every "
            "document's predictive strength is 0 or 1"
        )
    label = _names(n, names)
    if not np.isfinite(scores).all():
        bad = [label[i] for i in np.flatnonzero(~np.isfinite(scores))]
        raise ConfigError(f"benchmark scores must be finite; not for {', '.join(bad)}")
    order = np.argsort(scores, kind="stable")
    tied = np.flatnonzero(np.diff(scores[order]) == 0)
    if len(tied):
        pairs = ", ".join(
            f"{label[order[k]]} and {label[order[k + 1]]} ({scores[order[k]]:g})" for k in tied
        )
        raise ConfigError(
            f"benchmark scores must be distinct, so that the models have an order; tied: {pairs}"
        )
    return scores


def _check_family(
    losses: np.ndarray, benchmark_scores: Any, names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (losses, scores) as float64 arrays; raises ConfigError (the scores) or
    InputError (the losses) with the reason."""
    scores = _check_scores(benchmark_scores, names)
    n = len(scores)
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[0] != n:
        raise InputError(
            f"losses must have shape (n_models, n_docs) = ({n}, n_docs), got {losses.shape}"
        )
    if not np.isfinite(losses).all():
        rows, cols = np.nonzero(~np.isfinite(losses))
        raise InputError(
            f"losses must be finite: {len(rows)} values are not (first: "
            f"{_names(n, names)[rows[0]]}, document {cols[0]})"
        )
    return losses, scores


def _concordant_pairs(losses: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per document, the number of model pairs (i worse, j better) with loss_i > loss_j."""
    ordered = losses[np.argsort(scores, kind="stable")]
    count = np.zeros(losses.shape[1], dtype=np.int64)
    n = len(ordered)
    for i in range(n):
        for j in range(i + 1, n):
            count += ordered[i] > ordered[j]
    return count


def predictive_strength(
    losses: np.ndarray,
    benchmark_scores: Sequence[float] | np.ndarray,
    *,
    model_names: Sequence[str] | None = None,
) -> np.ndarray:
    """PreSelect's per-document score, in [0, 1] (float32).

    `losses` has one row per model and one column per document (normalised losses such as bits
    per character; any per-document scale works since only the order within a column counts).
    With the models sorted by `benchmark_scores` ascending (S_1 < ... < S_N), a document scores

        score(d) = 1/Z * sum_{i<j} 1[loss_i(d) > loss_j(d)],   Z = N(N-1)/2

    the share of concordant pairs, a Kendall-style rank agreement. The paper prefers it to a
    correlation of the values because per-document losses are noisy. Equal losses count as not
    concordant. Needs at least three models, finite and pairwise distinct benchmark scores
    (`model_names` name the tied ones in the error) and finite losses.
    """
    losses, scores = _check_family(losses, benchmark_scores, model_names)
    z = len(scores) * (len(scores) - 1) // 2
    return (_concordant_pairs(losses, scores) / z).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The distilled scorer


def _default_names(specs: Sequence[dict[str, Any]] | None, n: int) -> list[str]:
    """Column-friendly model names: given names, else the model's folder (or GGUF file) name."""
    if not specs:
        return [f"model_{i}" for i in range(n)]
    names = []
    for s in specs:
        if s.get("name"):
            names.append(str(s["name"]))
            continue
        p = Path(s["path"])
        if s.get("gguf_file"):
            names.append(Path(str(s["gguf_file"])).stem)
        elif p.name == "model" and p.parent.name:  # a proxy run's `model_dir`
            names.append(p.parent.name)
        else:
            names.append(p.name or str(p))
    if len(set(names)) != len(names):
        return [f"model_{i}" for i in range(n)]
    return names


def _losses_of(
    texts: list[str],
    specs: list[dict[str, Any]] | None,
    benchmark_scores: Any,
    model_names: Sequence[str] | None,
    losses: np.ndarray | None,
    where: dict[str, Any],
) -> np.ndarray:
    """The family's losses (n_models x n_docs, float64): given, or computed with the models
    (the family is checked first, before minutes of scoring with it)."""
    n_docs = len(texts)
    if losses is None:
        if specs is None:
            raise ConfigError("give the model family (models=) or precomputed losses (losses=)")
        if len(benchmark_scores) != len(specs):
            raise ConfigError(f"{len(benchmark_scores)} benchmark scores for {len(specs)} models")
        _check_scores(benchmark_scores, model_names or _default_names(specs, len(specs)))
        losses = family_losses(specs, texts, **where)
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[1] != n_docs:
        raise InputError(
            f"losses must have shape (n_models, {n_docs}) for {n_docs} texts, got {losses.shape}"
        )
    return losses


def _family_names(
    specs: list[dict[str, Any]] | None, n_models: int, model_names: Sequence[str] | None
) -> list[str]:
    """The models' names: given, or from the specs; checked against the losses' rows."""
    if specs is not None and len(specs) != n_models:
        raise ConfigError(f"{len(specs)} models but losses for {n_models}")
    names = (
        [str(x) for x in model_names]
        if model_names is not None
        else _default_names(specs, n_models)
    )
    if len(names) != n_models or len(set(names)) != n_models:
        raise ConfigError(f"model_names must be {n_models} distinct names, got {names}")
    return names


def _usable_documents(
    texts: list[str], losses: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the documents that count (non-empty, with finite losses), and the masks of
    the non-empty and of the finite ones."""
    n_docs, n_models = len(texts), losses.shape[0]
    nonempty = np.fromiter((bool(t and t.strip()) for t in texts), dtype=bool, count=n_docs)
    finite = np.isfinite(losses).all(axis=0) if n_models else np.ones(n_docs, dtype=bool)
    usable = np.flatnonzero(nonempty & finite)
    need = 2 * MIN_DOCS_PER_CLASS
    if len(usable) < need:
        raise InputError(
            f"too few calibration documents: {len(usable)} usable of {n_docs} (non-empty, "
            f"with finite losses); PreSelect needs at least {need} ({MIN_DOCS_PER_CLASS} "
            "positives and as many negatives), and far more to learn anything"
        )
    return usable, nonempty, finite


def _family_summary(
    names: list[str],
    specs: list[dict[str, Any]] | None,
    scores: np.ndarray,
    used_losses: np.ndarray,
    pairs: int,
) -> dict[str, Any]:
    """`family.json`: every model (path, benchmark score, rank, mean bits per character) and
    their order, worst to best."""
    order = np.argsort(scores, kind="stable")
    model_rows = []
    for i, name in enumerate(names):
        spec = specs[i] if specs is not None else {}
        model_rows.append(
            {
                "name": name,
                "path": spec.get("path"),
                "gguf_file": spec.get("gguf_file"),
                "benchmark_score": float(scores[i]),
                "rank": int(np.flatnonzero(order == i)[0]),  # 0 = worst
                "mean_bpc": float(used_losses[i].mean()),
            }
        )
    return {
        "models": model_rows,
        "order": [names[i] for i in order],
        "pairs": pairs,
        "benchmark_scores": "higher is better; order is worst to best",
    }


def _per_document(
    n_docs: int, usable: np.ndarray, strength: np.ndarray, pos: np.ndarray, neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every calibration document's predictive strength (NaN if unusable) and label (1
    positive, 0 negative, -1 neither)."""
    label = np.full(n_docs, -1, dtype=np.int8)
    label[usable[pos]] = 1
    label[usable[neg]] = 0
    full_strength = np.full(n_docs, np.nan, dtype=np.float32)
    full_strength[usable] = strength
    return full_strength, label


def _strength_summary(
    concordant: np.ndarray,
    pairs: int,
    strength: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    rule: str,
) -> dict[str, Any]:
    """The fit report's account of the predictive strengths and of the labels drawn from them."""
    hist = np.bincount(concordant, minlength=pairs + 1)
    return {
        "pairs": pairs,
        "perfect": int(hist[pairs]),
        "histogram": {f"{k}/{pairs}": int(c) for k, c in enumerate(hist)},
        "mean_strength": round(float(strength.mean()), 4),
        "positive_rule": rule,
        "positives": len(pos),
        "negatives": len(neg),
        "positive_min_strength": float(strength[pos].min()),
        "negative_max_strength": float(strength[neg].max()),
    }


def _rank(key: np.ndarray, seed: int, descending: bool) -> np.ndarray:
    """Indices sorted by `key`, ties broken by a seeded random permutation."""
    tiebreak = np.random.default_rng(seed).permutation(len(key))
    primary = -key if descending else key
    return np.lexsort((tiebreak, primary))


@register_scorer("preselect")
class PreSelectScorer(Scorer):
    """PreSelect's fastText classifier, trained on predictive-strength labels.

    >>> scorer = PreSelectScorer().fit(sample_texts, models=[m1, m2, m3, m4], benchmark_scores=s)
    >>> scorer.score(pool_texts)  # P(positive), higher = more "predictive" text

    `params` override the fastText settings (the official ones: 3 epochs, lr 0.1, bigrams).
    Positives are the documents with perfect predictive strength, as in the paper, provided there
    are at least `min_positives` of them (never fewer than fastText's minimum of 10); otherwise
    the top `positive_fraction` of the ranking, with a warning. Negatives are as many documents
    from the bottom of the ranking.
    """

    def __init__(
        self,
        column: str = _DEFAULT.column,
        params: dict[str, Any] | None = None,
        positive_fraction: float = _DEFAULT.positive_fraction,
        min_positives: int = MIN_DOCS_PER_CLASS,
        adapt_to_sample: bool = True,
    ):
        super().__init__(column)
        if not 0 < positive_fraction <= 0.5:
            raise ConfigError(f"positive_fraction must be in (0, 0.5], not {positive_fraction}")
        if min_positives < 1:
            raise ConfigError(f"min_positives must be positive, not {min_positives}")
        self.params = {**DEFAULT_PARAMS, **PRESELECT_PARAMS, **(params or {})}
        self.positive_fraction = float(positive_fraction)
        self.min_positives = int(min_positives)
        self.adapt_to_sample = bool(adapt_to_sample)
        self._clf = FastTextScorer(column=self.column, params=self.params)  # validates params
        self.report: dict[str, Any] = {}
        self.family: dict[str, Any] = {}
        #: per calibration document: id, chars, bpc.<model>, predictive_strength, label
        self.calibration: Any = None  # a polars DataFrame after fit

    @property
    def is_fitted(self) -> bool:
        return self._clf.is_fitted

    @property
    def portable(self) -> bool:
        return self._clf.portable

    @property
    def classifier(self) -> FastTextScorer:
        """The inner fastText classifier."""
        return self._clf

    def fit(
        self,
        texts: Sequence[str],
        models: Sequence[ModelSpec] | None = None,
        benchmark_scores: Sequence[float] | np.ndarray | None = None,
        *,
        losses: np.ndarray | None = None,
        ids: Sequence[str] | None = None,
        model_names: Sequence[str] | None = None,
        seed: int = 0,
        batch_tokens: int = 8192,
        seq_len: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> PreSelectScorer:
        """Label a calibration sample by predictive strength, then train the classifier.

        `texts` is the calibration sample (the paper: ~900K documents, 300 from each of the
        3,000 most frequent domains; any uniform sample of the pool works). `models` are the
        family (paths or {"path", "gguf_file", "name"}), and `benchmark_scores` one number per
        model, higher meaning better (`family_benchmark_scores` makes them from target text).
        Give `losses` (n_models x n_docs, e.g. from `family_losses`) to skip scoring with the
        models; `models` are then only recorded. `ids` name the documents in
        `calibration.parquet`, `model_names` its `bpc.<name>` columns. The models run on
        `device` in `dtype` (default: a GPU in bfloat16 when there is one, else the CPU).

        Empty documents and documents with a non-finite loss are left out (label -1).
        """
        texts = list(texts)
        n_docs = len(texts)
        if benchmark_scores is None:
            raise ConfigError("PreSelect needs benchmark_scores: one number per model")
        specs = [model_spec(m) for m in models] if models is not None else None
        where = {"batch_tokens": batch_tokens, "seq_len": seq_len, "device": device, "dtype": dtype}
        losses = _losses_of(texts, specs, benchmark_scores, model_names, losses, where)
        n_models = losses.shape[0]
        names = _family_names(specs, n_models, model_names)
        ids = [str(x) for x in ids] if ids is not None else [str(i) for i in range(n_docs)]
        if len(ids) != n_docs:
            raise InputError(f"{len(ids)} ids for {n_docs} texts")
        if np.ndim(benchmark_scores) != 1 or len(benchmark_scores) != n_models:
            raise ConfigError(
                f"benchmark_scores must hold one number per model ({n_models}), got "
                f"{np.shape(benchmark_scores)}"
            )
        _check_scores(benchmark_scores, names)
        usable, nonempty, finite = _usable_documents(texts, losses)
        used_losses, scores = _check_family(losses[:, usable], benchmark_scores, names)
        z = n_models * (n_models - 1) // 2
        concordant = _concordant_pairs(used_losses, scores)
        strength = (concordant / z).astype(np.float32)

        if concordant.min() == concordant.max():
            raise InputError(
                f"every calibration document has the same predictive strength "
                f"({concordant[0]}/{z}): the family's losses do not tell documents apart"
            )
        pos, neg, rule = self._labels(concordant, z, seed)

        params = adapt_to_sample(self.params, 2 * len(pos)) if self.adapt_to_sample else self.params
        self._clf = FastTextScorer(column=self.column, params=params)
        self._clf.fit((texts[usable[i]] for i in pos), (texts[usable[i]] for i in neg), seed=seed)

        full_strength, label = _per_document(n_docs, usable, strength, pos, neg)
        self.calibration = self._calibration_table(ids, texts, losses, names, full_strength, label)
        self.family = _family_summary(names, specs, scores, used_losses, z)
        self.report = {
            "preselect": {
                "calibration_docs": n_docs,
                "usable_docs": len(usable),
                "dropped_empty": int((~nonempty).sum()),
                "dropped_nonfinite_loss": int((nonempty & ~finite).sum()),
                "models": n_models,
                "order": self.family["order"],
                **_strength_summary(concordant, z, strength, pos, neg, rule),
                "seed": seed,
            },
            "fasttext": self._clf.report,
        }
        return self

    def _labels(
        self, concordant: np.ndarray, z: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Indices (into the usable documents) of positives and negatives, and the rule used."""
        n = len(concordant)
        perfect = np.flatnonzero(concordant == z)
        if len(perfect) >= max(self.min_positives, MIN_DOCS_PER_CLASS):
            rule = "perfect"
            pos = perfect
            rest = np.flatnonzero(concordant < z)
            n_neg = min(len(pos), len(rest))
            if n_neg < MIN_DOCS_PER_CLASS:
                raise InputError(
                    f"{len(pos)} of {n} calibration documents have perfect predictive strength, "
                    f"leaving {len(rest)} for negatives (need {MIN_DOCS_PER_CLASS}): the family "
                    "ranks the same way on almost every document; use a larger sample or models "
                    "that differ in what they are good at"
                )
            if n_neg < len(pos):
                warnings.warn(
                    f"{len(pos)} of {n} calibration documents have perfect predictive strength, "
                    f"more than half: the family ranks the same way on most documents (checkpoints "
                    f"of one run do), so the labels say little about the target. Using a random "
                    f"{n_neg} of them as positives to balance the classes.",
                    stacklevel=3,
                )
                rng = np.random.default_rng(seed)
                pos = np.sort(rng.choice(pos, n_neg, replace=False))
            neg = rest[_rank(concordant[rest], seed, descending=False)[:n_neg]]
        else:
            rule = "top_fraction"
            n_pos = max(MIN_DOCS_PER_CLASS, round(self.positive_fraction * n))
            n_pos = min(n_pos, n // 2)
            warnings.warn(
                f"only {len(perfect)} of {n} calibration documents have perfect predictive "
                f"strength (min_positives={self.min_positives}); taking the top "
                f"{n_pos} documents ({n_pos / n:.1%}) as positives instead. This departs from the "
                "paper, which labels only perfect documents positive; a larger calibration "
                "sample or a smaller family gives more perfect documents.",
                stacklevel=3,
            )
            ranked = _rank(concordant, seed, descending=True)
            pos = np.sort(ranked[:n_pos])
            neg = ranked[::-1][:n_pos]
        return pos, np.sort(neg), rule

    def _calibration_table(
        self,
        ids: list[str],
        texts: list[str],
        losses: np.ndarray,
        names: list[str],
        strength: np.ndarray,
        label: np.ndarray,
    ) -> Any:
        import polars as pl

        chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        cols: dict[str, Any] = {"id": pl.Series("id", ids, dtype=pl.String), "chars": chars}
        for name, row in zip(names, losses, strict=True):
            cols[f"bpc.{name}"] = row
        cols["predictive_strength"] = strength
        cols["label"] = label
        return pl.DataFrame(cols)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not self._clf.is_fitted:
            raise NotFittedError("PreSelectScorer is not fitted: call fit() or load a saved one")
        return self._clf.score(texts)

    # -- persistence ---------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> None:
        """`classifier/` (a saved FastTextScorer), `calibration.parquet`, `family.json`, report."""
        self._clf.save(folder / CLASSIFIER_DIR)
        if self.calibration is not None:
            with atomic_path(folder / CALIBRATION_FILE) as tmp:
                self.calibration.write_parquet(tmp)
        elif self.path is not None and (Path(self.path) / CALIBRATION_FILE).exists():
            # a loaded scorer saved elsewhere: carry its calibration file along
            src = Path(self.path) / CALIBRATION_FILE
            if src.resolve() != (folder / CALIBRATION_FILE).resolve():
                with atomic_path(folder / CALIBRATION_FILE) as tmp:
                    shutil.copyfile(src, tmp)
        if self.family:
            write_json(folder / FAMILY_FILE, self.family)
        if self.report:
            write_json(folder / REPORT_FILE, self.report)

    def _load_state(self, folder: Path) -> None:
        """The classifier, and the (small) family and report; the calibration table stays on disk."""
        self._clf = FastTextScorer(column=self.column, params=self.params)
        self._clf._load_state(folder / CLASSIFIER_DIR)
        self.family = read_json(folder / FAMILY_FILE) if (folder / FAMILY_FILE).exists() else {}
        self.report = read_json(folder / REPORT_FILE) if (folder / REPORT_FILE).exists() else {}
        self.calibration = None
