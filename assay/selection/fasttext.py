"""The distilled fastText scorer, and the DCLM-style quality classifier built on it.

fastText is the cheap scorer that every expensive labeler in assay distils into: DCLM's quality
classifier (high-quality reference text vs a sample of the pool), PreSelect (predictive strength
labels) and BETR (benchmark-similarity labels) all train `FastTextScorer.fit(positive, negative)`
and then score the full corpus at tens of thousands of documents per second.

The score is P(positive) under the classifier, in [0, 1].
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import ConfigError, DependencyError, InputError, MissingError
from assay.selection.base import NotFittedError, Scorer, fit_binary, register_scorer
from assay.util.files import write_json

POSITIVE = "__label__pos"
NEGATIVE = "__label__neg"

#: DCLM's classifier settings (bigrams, lr 0.1, dim 100, 5 epochs), with two local choices:
#: `bucket` 200k instead of 2M (the n-gram hash table dominates the model size: 800 MB at 2M x
#: 100 floats, for no accuracy gain at the sample sizes a quality classifier is trained on), and
#: one thread, because fastText's Hogwild training is only deterministic single-threaded.
#:
#: Single-threaded, fastText initialises only the first tenth of its input matrix at random
#: (`DenseMatrix::uniform` splits the matrix into ten blocks, one per thread) and relies on the
#: rest being zero. Since its 2024 AlignedVector change (in every numpy-2 build on PyPI) that
#: storage comes from `posix_memalign` uninitialised: in a process whose heap holds garbage the
#: same data and seed train differently, or diverge. `zeroed_allocations` below restores the zeros.
DEFAULT_PARAMS: dict[str, Any] = {
    "lr": 0.1,
    "epoch": 5,
    "wordNgrams": 2,
    "dim": 100,
    "minCount": 1,
    "bucket": 200_000,
    "loss": "softmax",
    "thread": 1,
}

MIN_DOCS_PER_CLASS = 10
#: fastText diverges (NaN) when the learning rate is too high for the data, and near that edge
#: the outcome can depend on the process's floating-point history. Each retry halves the rate.
DIVERGENCE_RETRIES = 3


def _fasttext() -> Any:
    try:
        import fasttext
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DependencyError(
            "the fastText scorer needs fastText: pip install 'assay[fasttext]'"
        ) from e
    # fastText prints a warning on every load_model call; it says nothing useful here.
    fasttext.FastText.eprint = lambda *a, **k: None
    return fasttext


@contextlib.contextmanager
def zeroed_allocations() -> Iterator[None]:
    """While fastText trains, make the C heap hand out zero-filled memory (glibc's M_PERTURB).

    With a perturb byte of 0xFF, glibc fills every allocation with its complement, 0x00 (and
    freed memory with 0xFF). Large allocations served by mmap are zero anyway. On other C
    libraries this is a no-op; their large allocations come from fresh, zeroed pages.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(M_PERTURB, 0xFF)
    try:
        yield
    finally:
        libc.mallopt(M_PERTURB, 0)


M_PERTURB = -6  # from glibc's malloc.h


def _glibc() -> Any:
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def adapt_to_sample(params: dict[str, Any], n_docs: int, large: int = 10_000) -> dict[str, Any]:
    """fastText settings published for million-document training sets, fitted to a small one.

    BETR's (lr 0.03, 5 epochs, minCount 5) and PreSelect's (lr 0.1, 3 epochs) settings were
    chosen for 400K-2M training documents. On a few hundred they underfit: every probability
    stays within about 1e-4 of 0.5 (a few hundred distinct values for thousands of documents,
    so selection falls back on tie-breaking) and minCount 5 drops most of the vocabulary. Below
    `large` documents, the epochs grow as large / n (at most 50, never fewer than published)
    and minCount falls to 2 (1 below 2,000 documents). Nothing changes at the published scale.
    """
    out = dict(params)
    if n_docs >= large:
        return out
    if "minCount" in out:
        out["minCount"] = min(int(out["minCount"]), 2 if n_docs >= 2_000 else 1)
    epochs = int(out.get("epoch", DEFAULT_PARAMS["epoch"]))
    out["epoch"] = max(epochs, min(50, round(epochs * large / max(n_docs, 1))))
    return out


def to_line(text: str) -> str:
    """fastText reads one example per line: newlines become spaces (as DCLM does)."""
    return text.replace("\n", " ").replace("\r", " ")


@register_scorer("fasttext")
class FastTextScorer(Scorer):
    """Binary fastText classifier; `score` returns P(positive).

    >>> scorer = FastTextScorer(column="quality").fit(good_texts, pool_texts)
    >>> scorer.score(["some document", "another"])
    """

    def __init__(self, column: str = "fasttext", params: dict[str, Any] | None = None):
        super().__init__(column)
        unknown = set(params or {}) - set(_fasttext_arg_names())
        if unknown:
            raise ConfigError(f"unknown fastText parameters: {sorted(unknown)}")
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.model: Any = None
        self.report: dict[str, Any] = {}
        self.lr_used: float = float(self.params["lr"])

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    @property
    def portable(self) -> bool:
        return self.model is None

    def fit(
        self,
        positive: Iterable[str],
        negative: Iterable[str],
        *,
        seed: int = 0,
        balance: bool = True,
        validation: float = 0.1,
    ) -> FastTextScorer:
        """Train on positive vs negative texts.

        `balance` down-samples the larger class to the size of the smaller (DCLM, PreSelect and
        BETR all train balanced). A `validation` share of each class is held out to report
        accuracy in `self.report`, then the final model is trained on everything.
        """
        pos = [t for t in positive if t and t.strip()]
        neg = [t for t in negative if t and t.strip()]
        for label, docs in (("positive", pos), ("negative", neg)):
            if len(docs) < MIN_DOCS_PER_CLASS:
                raise InputError(
                    f"too few {label} documents to train fastText: {len(docs)} "
                    f"(need at least {MIN_DOCS_PER_CLASS})"
                )
        rng = np.random.default_rng(seed)
        if balance:
            n = min(len(pos), len(neg))
            pos = [pos[i] for i in np.sort(rng.choice(len(pos), n, replace=False))]
            neg = [neg[i] for i in np.sort(rng.choice(len(neg), n, replace=False))]

        t0 = time.perf_counter()
        report: dict[str, Any] = {
            "positive": len(pos),
            "negative": len(neg),
            "params": self.params,
            "seed": seed,
        }
        if validation > 0:
            n_val_p, n_val_n = int(len(pos) * validation), int(len(neg) * validation)
            if n_val_p >= 2 and n_val_n >= 2:
                perm_p, perm_n = rng.permutation(len(pos)), rng.permutation(len(neg))
                val_p = [pos[i] for i in perm_p[:n_val_p]]
                val_n = [neg[i] for i in perm_n[:n_val_n]]
                train_p = [pos[i] for i in perm_p[n_val_p:]]
                train_n = [neg[i] for i in perm_n[n_val_n:]]
                self.model = self._train(train_p, train_n, seed, rng)
                report["validation"] = binary_report(self.score(val_p), self.score(val_n))
        self.model = self._train(pos, neg, seed, rng)
        report["train_seconds"] = round(time.perf_counter() - t0, 3)
        if self.lr_used != self.params["lr"]:
            report["lr_used"] = self.lr_used  # lowered after divergence
        self.report = report
        return self

    def _train(
        self, pos: Sequence[str], neg: Sequence[str], seed: int, rng: np.random.Generator
    ) -> Any:
        ft = _fasttext()
        lines = [f"{POSITIVE} {to_line(t)}" for t in pos] + [
            f"{NEGATIVE} {to_line(t)}" for t in neg
        ]
        order = rng.permutation(len(lines))
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            for i in order:
                f.write(lines[i])
                f.write("\n")
            path = f.name
        try:
            lr = float(self.params["lr"])
            for attempt in range(DIVERGENCE_RETRIES + 1):
                try:
                    with zeroed_allocations():
                        model = ft.train_supervised(
                            input=path, seed=seed, verbose=0, **{**self.params, "lr": lr}
                        )
                except RuntimeError as e:
                    if "NaN" not in str(e):
                        raise
                    if attempt == DIVERGENCE_RETRIES:
                        raise InputError(
                            f"fastText training diverged (NaN) even at lr={lr:g}. The training text "
                            "is probably degenerate (very few distinct words); use real documents "
                            "or more of them."
                        ) from e
                    warnings.warn(
                        f"fastText diverged at lr={lr:g}; training again at lr={lr / 2:g}",
                        stacklevel=3,
                    )
                    lr /= 2
                    continue
                self.lr_used = lr
                return model
        finally:
            os.unlink(path)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if self.model is None:
            raise NotFittedError("FastTextScorer is not fitted: call fit() or load a saved one")
        if not texts:
            return np.zeros(0, dtype=np.float32)
        labels, probs = self.model.predict([to_line(t) for t in texts], k=1)
        p = np.fromiter(
            (pr[0] if len(pr) else 0.5 for pr in probs), dtype=np.float64, count=len(texts)
        )
        is_pos = np.fromiter(
            (bool(lb) and lb[0] == POSITIVE for lb in labels), dtype=bool, count=len(texts)
        )
        # Two classes under softmax: P(neg) = 1 - P(pos). fastText's probabilities are clipped
        # slightly above 1 at times; clamp them.
        return np.clip(np.where(is_pos, p, 1.0 - p), 0.0, 1.0).astype(np.float32)

    def _save_state(self, folder: Path) -> None:
        self.model.save_model(str(folder / "model.bin"))
        if self.report:
            write_json(folder / "fit_report.json", self.report)

    def _load_state(self, folder: Path) -> None:
        path = folder / "model.bin"
        if not path.exists():
            raise MissingError(f"{folder} has no model.bin")
        self.model = _fasttext().load_model(str(path))
        labels = set(self.model.get_labels())
        if labels != {POSITIVE, NEGATIVE}:
            raise InputError(f"{path} is not a binary assay classifier (labels {sorted(labels)})")


def _fasttext_arg_names() -> list[str]:
    return [
        "lr",
        "dim",
        "ws",
        "epoch",
        "minCount",
        "minCountLabel",
        "minn",
        "maxn",
        "neg",
        "wordNgrams",
        "loss",
        "bucket",
        "thread",
        "lrUpdateRate",
        "t",
    ]


def binary_report(pos_scores: np.ndarray, neg_scores: np.ndarray) -> dict[str, float]:
    """Held-out accuracy at 0.5 and ROC AUC (rank-based, ties counted half)."""
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    s = np.r_[pos_scores, neg_scores].astype(np.float64)
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    n_p, n_n = len(pos_scores), len(neg_scores)
    auc = (ranks[y == 1].sum() - n_p * (n_p + 1) / 2) / (n_p * n_n)
    acc = float(((s >= 0.5) == (y == 1)).mean())
    return {"accuracy": round(acc, 4), "auc": round(float(auc), 4), "n": len(s)}


def train_quality_classifier(
    positive: Any,
    negative: Any,
    *,
    n: int | None = 10_000,
    seed: int = 0,
    column: str = "quality",
    params: dict[str, Any] | None = None,
    balance: bool = True,
) -> FastTextScorer:
    """DCLM-style quality classifier: high-quality reference text vs a random sample of the pool.

    `positive` and `negative` are Corpus objects (sampled uniformly, `n` documents each, by a
    seeded hash of the id) or sequences of texts.
    """
    scorer = FastTextScorer(column=column, params=params)
    return fit_binary(scorer, positive, negative, n=n, seed=seed, balance=balance)
