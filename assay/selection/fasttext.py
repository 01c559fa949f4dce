"""The distilled fastText scorer, and the DCLM-style quality classifier built on it.

fastText is the cheap scorer that every expensive labeler in assay distils into: DCLM's quality
classifier (high-quality reference text vs a sample of the pool), PreSelect (predictive strength
labels) and BETR (benchmark-similarity labels) all train `FastTextScorer.fit(positive, negative)`
and then score the full corpus at tens of thousands of documents per second.

The score is P(positive) under the classifier, in [0, 1].

Training is one fastText run: the texts stream to temporary files (memory keeps their offsets,
not the texts), a validation share is held out and measured, and the rest is written once, in
a seeded shuffle, as fastText's training file. fastText trains on `thread` cores (default: all
this process may use, at most 16); only `thread: 1` trains bit-identical classifiers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import ConfigError, DependencyError, InputError, MissingError
from assay.selection.base import NotFittedError, Scorer, fit_binary, register_scorer
from assay.util.files import write_json

log = logging.getLogger(__name__)

POSITIVE = "__label__pos"
NEGATIVE = "__label__neg"

#: DCLM's classifier settings (bigrams, lr 0.1, dim 100, 5 epochs) with fastText's own default of
#: 2M n-gram hash buckets (what PreSelect's official `train_supervised` call uses). The buckets
#: dominate the model's size: 2M x dim 100 floats are 800 MB in memory and in `model.bin`; pass
#: a smaller `bucket` for a smaller model. `thread` is left out: it defaults to the cores
#: this process may use, at most `MAX_AUTO_THREADS` (see `training_threads`).
#:
#: fastText initialises its input matrix in ten blocks, one per training thread (`thread` >= 10
#: fills all of them; with fewer threads only the first `thread` tenths are random) and relies on
#: the rest being zero. Since its 2024 AlignedVector change (in every numpy-2 build on PyPI) that
#: storage comes from `posix_memalign` uninitialised: in a process whose heap holds garbage the
#: same data and seed train differently, or diverge. `zeroed_allocations` below restores the zeros.
DEFAULT_PARAMS: dict[str, Any] = {
    "lr": 0.1,
    "epoch": 5,
    "wordNgrams": 2,
    "dim": 100,
    "minCount": 1,
    "bucket": 2_000_000,
    "loss": "softmax",
}

#: the most training threads chosen automatically (fastText scales to about this many cores)
MAX_AUTO_THREADS = 16

MIN_DOCS_PER_CLASS = 10
#: fastText diverges (NaN) when the learning rate is too high for the data, and near that edge
#: the outcome can depend on the process's floating-point history. Each retry halves the rate.
DIVERGENCE_RETRIES = 3


def training_threads(params: dict[str, Any]) -> int:
    """The fastText `thread` setting: as given, else the cores this process may run on (its CPU
    affinity), at most `MAX_AUTO_THREADS`.

    fastText trains Hogwild: threads update the shared weights without locks, in an order left
    to the scheduler, so only `thread: 1` trains bit-identical classifiers from the same data and
    seed. The thread count also decides how much of the input matrix starts random (see
    `DEFAULT_PARAMS`), so classifiers trained with different counts differ too.
    """
    given = params.get("thread")
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise ConfigError(f"fastText's thread must be a positive integer, not {given!r}")
        return given
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_THREADS))


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


class _Spool:
    """The non-blank texts of one class in a file, one fastText line each (newlines made spaces),
    read once; memory keeps only where each line starts."""

    def __init__(self, path: Path, texts: Iterable[str]):
        self.path = path
        ends = array("q")
        at = 0
        with open(path, "wb") as f:
            for text in texts:
                if not text or not text.strip():
                    continue
                line = (to_line(text) + "\n").encode("utf-8")
                f.write(line)
                at += len(line)
                ends.append(at)
        self.ends = np.frombuffer(ends, dtype=np.int64) if len(ends) else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.ends)

    def span(self, i: int) -> tuple[int, int]:
        """(offset, length) of line i, its newline included."""
        start = int(self.ends[i - 1]) if i else 0
        return start, int(self.ends[i]) - start

    def lines(self, rows: np.ndarray, batch: int = 8192) -> Iterator[list[str]]:
        """The texts of `rows` (as lines), in that order, `batch` at a time."""
        with open(self.path, "rb") as f:
            fd = f.fileno()
            for a in range(0, len(rows), batch):
                out = []
                for i in rows[a : a + batch]:
                    offset, length = self.span(int(i))
                    out.append(os.pread(fd, length, offset)[:-1].decode("utf-8"))
                yield out


def _choose_rows(
    n_pos: int, n_neg: int, balance: bool, validation: float, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None], ...]:
    """Per class: the rows used (balanced: a seeded sample of the larger class, in file order),
    those trained on, and those held out for validation (None when either class would hold out
    fewer than 2: then training uses every row)."""
    use = [np.arange(n_pos), np.arange(n_neg)]
    if balance:
        n = min(n_pos, n_neg)
        use = [np.sort(rng.choice(k, n, replace=False)) for k in (n_pos, n_neg)]
    n_held = [int(len(rows) * validation) for rows in use]
    if min(n_held) < 2:
        return tuple((rows, rows, None) for rows in use)
    perms = [rng.permutation(len(rows)) for rows in use]
    return tuple(
        (rows, rows[perm[k:]], rows[perm[:k]])
        for rows, perm, k in zip(use, perms, n_held, strict=True)
    )


def _write_training_file(
    path: Path, classes: list[tuple[str, _Spool, np.ndarray]], rng: np.random.Generator
) -> None:
    """fastText's training file: '<label> <text>' per chosen row of each class, the classes'
    rows concatenated and then shuffled together."""
    labels = [(label + " ").encode() for label, _, _ in classes]
    which = np.concatenate([np.full(len(rows), k) for k, (_, _, rows) in enumerate(classes)])
    rows = np.concatenate([rows for _, _, rows in classes])
    order = rng.permutation(len(rows))
    spools = [spool for _, spool, _ in classes]
    with contextlib.ExitStack() as stack:
        fds = [stack.enter_context(open(spool.path, "rb")).fileno() for spool in spools]
        out = stack.enter_context(open(path, "wb"))
        for j in order:
            k = int(which[j])
            offset, length = spools[k].span(int(rows[j]))
            out.write(labels[k])
            out.write(os.pread(fds[k], length, offset))


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
        training_threads(self.params)  # a bad thread count is refused before any work
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
        """Train on positive vs negative texts (any iterables: each is read once, in order).

        `balance` down-samples the larger class to the size of the smaller (DCLM, PreSelect and
        BETR all train balanced). A `validation` share of each class is held out and the
        classifier, trained once on the rest, reports its accuracy and ROC AUC on them in
        `self.report` (with fewer than 2 held-out documents per class, or `validation=0`, it
        trains on everything and reports none).

        The texts go to temporary files as they are read (under `TMPDIR`), so memory holds
        their byte offsets, never the texts; fastText then streams its training file.
        """
        if not 0 <= validation < 1:
            raise ConfigError(f"validation must be a share in [0, 1), not {validation}")
        with tempfile.TemporaryDirectory(prefix="assay-fasttext-") as tmp:
            pos = _Spool(Path(tmp) / "positive.txt", positive)
            neg = _Spool(Path(tmp) / "negative.txt", negative)
            for label, spool in (("positive", pos), ("negative", neg)):
                if len(spool) < MIN_DOCS_PER_CLASS:
                    raise InputError(
                        f"too few {label} documents to train fastText: {len(spool)} "
                        f"(need at least {MIN_DOCS_PER_CLASS})"
                    )
            rng = np.random.default_rng(seed)
            (use_p, train_p, held_p), (use_n, train_n, held_n) = _choose_rows(
                len(pos), len(neg), balance, validation, rng
            )
            threads = training_threads(self.params)
            report: dict[str, Any] = {
                "positive": len(use_p),
                "negative": len(use_n),
                "trained_on": len(train_p) + len(train_n),
                "params": self.params,
                "threads": threads,
                "seed": seed,
            }
            t0 = time.perf_counter()
            path = Path(tmp) / "train.txt"
            _write_training_file(path, [(POSITIVE, pos, train_p), (NEGATIVE, neg, train_n)], rng)
            self.model = self._train(path, seed, threads)
            report["train_seconds"] = round(time.perf_counter() - t0, 3)
            if held_p is not None and held_n is not None:
                report["validation"] = binary_report(
                    self._score_lines(pos.lines(held_p)), self._score_lines(neg.lines(held_n))
                )
        if self.lr_used != self.params["lr"]:
            report["lr_used"] = self.lr_used  # lowered after divergence
        self.report = report
        return self

    def _train(self, path: Path, seed: int, threads: int) -> Any:
        ft = _fasttext()
        lr = float(self.params["lr"])
        for attempt in range(DIVERGENCE_RETRIES + 1):
            try:
                with zeroed_allocations():
                    model = ft.train_supervised(
                        input=str(path),
                        seed=seed,
                        verbose=0,
                        **{**self.params, "lr": lr, "thread": threads},
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
                log.warning("fastText diverged at lr=%g; training again at lr=%g", lr, lr / 2)
                lr /= 2
                continue
            self.lr_used = lr
            return model
        raise AssertionError("unreachable")  # pragma: no cover

    def _score_lines(self, batches: Iterator[list[str]]) -> np.ndarray:
        parts = [self.score(batch) for batch in batches]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

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
