"""An n-gram language model of a reference set as a document score, CCNet-style (Wenzek et al.
2019, "CCNet: Extracting High Quality Monolingual Datasets from Web Crawl Data").

CCNet trains a 5-gram KenLM model (`lmplz`: interpolated modified Kneser-Ney) on Wikipedia and
keeps a document's perplexity under it; documents are then cut into head, middle and tail by
perplexity. Here the model is trained by assay itself, in numpy, on any reference set (target
examples, a file of records, a corpus sample): interpolated modified Kneser-Ney (Chen & Goodman
1998) of order `order` (default 3; 2 to 5), three discounts per order from its counts of counts,
Kneser-Ney's continuation counts below the highest order (raw counts for n-grams that begin
with `<s>`), an unknown word given the uniform share 1/V of the interpolation, as KenLM does.
Tokens, sentences and the hashing of n-grams: see `assay.selection.ngram_kn`.

The score is the document's perplexity, `10 ** (-sum(log10 p) / tokens)` over its words and one
`</s>` per line, as CCNet computes it: lower = closer to the reference. CCNet's head, middle and
tail are `select --mode bottom`, `--mode middle` and `--mode top` on this column.

Scoring is vectorised per batch: the n-gram keys of a whole batch are computed at once and looked
up in one open-addressing table per order (a few array gathers per token).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from assay.errors import ConfigError, InputError
from assay.selection.base import NotFittedError, Scorer, register_scorer, sample_texts
from assay.selection.ngram_kn import EOS, Counts, Table, estimate, stream, token_log10
from assay.util.config import Strict
from assay.util.files import atomic_path, read_json, write_json

_BATCH_CHARS = 2 << 20  # characters tokenised together
_ORDERS = (2, 5)


class NgramLMSettings(Strict):
    """The n-gram scorer's options: what `fit_ngram_lm` takes, and the `ngram_lm` step's."""

    order: int = Field(3, ge=_ORDERS[0], le=_ORDERS[1], description="N-gram order (2 to 5).")
    sample: int | None = Field(
        None,
        ge=1,
        description="Train on at most this many reference texts (a seeded sample; default all).",
    )
    column: str = Field("ngram_ppl", description="Name of the score column (the perplexity).")
    seed: int | None = Field(None, description="Seed of the reference sample.")


_DEFAULT = NgramLMSettings()


def _batches(texts: Iterable[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    size = 0
    for t in texts:
        batch.append(str(t))
        size += len(batch[-1])
        if size >= _BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


@register_scorer("ngram_lm")
class NgramLMScorer(Scorer):
    """Perplexity of a text under an interpolated modified Kneser-Ney n-gram model of a
    reference set; lower = closer to the reference (CCNet's head is `select --mode bottom`).

    >>> scorer = NgramLMScorer(order=3).fit(reference_texts)
    >>> scorer.score(["some text", ...])  # perplexities, float32
    """

    def __init__(self, column: str = _DEFAULT.column, order: int = _DEFAULT.order):
        super().__init__(column)
        if not _ORDERS[0] <= int(order) <= _ORDERS[1]:
            raise ConfigError(f"order must be from {_ORDERS[0]} to {_ORDERS[1]}, not {order}")
        self.order = int(order)
        self.tables: list[Table] | None = None
        self.report: dict[str, Any] = {}

    @property
    def is_fitted(self) -> bool:
        return self.tables is not None or self.path is not None

    @property
    def portable(self) -> bool:
        """A fitted model travels to other processes as its saved folder (tens of MB of tables
        are not pickled once per task): unsaved, it is saved first (`score_corpus` does)."""
        return self.tables is None or self.path is not None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["tables"] = None  # read back from the folder where it is used
        return state

    def fit(self, reference: Iterable[str]) -> NgramLMScorer:
        """Count the reference's n-grams (read once, a batch at a time) and estimate the model."""
        parts: list[list[Counts]] = [[] for _ in range(self.order)]
        n_texts = n_tokens = n_words = 0
        for batch in _batches(reference):
            s = stream(batch, self.order)
            n_texts += len(batch)
            n_tokens += int((s.pos > 0).sum())  # words and each sentence's </s>
            n_words += int(((s.pos > 0) & (s.tok != EOS)).sum())
            for k in range(self.order):
                parts[k].append(Counts.of(s, k + 1))
                if len(parts[k]) >= 16:
                    parts[k] = [Counts.merge(parts[k])]
        if n_words == 0:  # empty or blank texts only: nothing to model
            raise InputError("the n-gram model needs reference text: it has no words")
        levels, unk = estimate([Counts.merge(p) for p in parts])
        self.tables = [Table.build(level) for level in levels]
        self.tables[0].alpha[-1] = unk
        self.report = {
            "reference_texts": n_texts,
            "reference_tokens": n_tokens,
            "order": self.order,
            "ngrams": [len(level.keys) for level in levels],
            "discounts": [[round(float(d), 4) for d in level.discounts] for level in levels],
            "unknown_word_probability": float(unk),
            "table_bytes": sum(t.data.nbytes for t in self.tables),
        }
        return self

    def _tables(self) -> list[Table]:
        if self.tables is None and self.path is not None:  # unpickled in a worker
            from assay.selection.base import _load_cached

            loaded = _load_cached(self.path)
            if not isinstance(loaded, NgramLMScorer) or loaded.order != self.order:
                raise InputError(f"{self.path} does not hold this {self.order}-gram model")
            self.tables, self.report = loaded._tables(), loaded.report
        if self.tables is None:
            raise NotFittedError("NgramLMScorer is not fitted: call fit() or load a saved one")
        return self.tables

    def token_log10(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """log10 p of each predicted token (words and `</s>`) of `texts`, and its text's number."""
        s = stream(list(texts), self.order)
        lp = token_log10(self._tables(), s)
        keep = s.pos > 0
        return lp[keep], s.doc[keep]

    def log10_totals(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each text's total log10 probability and its number of predicted tokens (float64; a
        text without words is the sentence `<s> </s>`, one token)."""
        texts = list(texts)
        total = np.zeros(len(texts))
        count = np.zeros(len(texts))
        at = 0
        for batch in _batches(texts):
            lp, doc = self.token_log10(batch)
            total[at : at + len(batch)] = np.bincount(doc, weights=lp, minlength=len(batch))
            count[at : at + len(batch)] = np.bincount(doc, minlength=len(batch))
            at += len(batch)
        return total, count

    def score(self, texts: Sequence[str]) -> np.ndarray:
        total, count = self.log10_totals(texts)
        return np.power(10.0, -total / count).astype(np.float32)

    def _save_state(self, folder: Path) -> None:
        for k, t in enumerate(self._tables(), start=1):
            with atomic_path(folder / f"order{k}.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, data=t.data)
        write_json(folder / "fit_report.json", self.report)

    def _load_state(self, folder: Path) -> None:
        tables = []
        for k in range(1, self.order + 1):
            with np.load(folder / f"order{k}.npz", allow_pickle=False) as z:
                data = z["data"]
            cap = len(data) - 1
            if cap < 1 or cap & (cap - 1) or data.shape != (cap + 1, 2) or data.dtype != np.uint64:
                raise InputError(f"{folder}: order{k}.npz is not an n-gram table")
            tables.append(Table(data))
        self.tables = tables
        if (folder / "fit_report.json").exists():
            self.report = read_json(folder / "fit_report.json")


def fit_ngram_lm(
    reference: Any,
    settings: NgramLMSettings | None = None,
    *,
    fields: Sequence[str] | None = None,
    max_items: int | None = None,
    **options: Any,
) -> NgramLMScorer:
    """Train the n-gram scorer on `reference`: a Corpus (streamed, or a seeded sample of
    `sample` documents), a list of texts, or what `load_targets` reads (a built-in benchmark, a
    .jsonl/.json/.parquet file of records). `settings` (or keyword arguments, which override it)
    are `NgramLMSettings`; a seed of None is 0. `max_items` (a reference spec's) caps `sample`."""
    from assay.common.targets import load_targets
    from assay.io.corpus import Corpus

    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = NgramLMSettings.model_validate({**base, **options})
    seed = 0 if cfg.seed is None else cfg.seed
    n = min((v for v in (cfg.sample, max_items) if v is not None), default=None)
    if isinstance(reference, Corpus):
        texts = sample_texts(reference, n, seed)
    else:
        texts = load_targets(reference, fields, max_items=n, seed=seed)
    return NgramLMScorer(column=cfg.column, order=cfg.order).fit(texts)
