"""Simple document statistics as a scorer: the heuristics every pretraining pipeline filters on.

All statistics are computed with polars string kernels on the whole batch at once; there is no
Python loop over documents. Columns (each also usable as the `score` via `stat=`):

- `n_chars`         length in characters
- `n_words`         whitespace-separated words
- `mean_word_len`   characters per word (Gopher keeps 3..10)
- `alpha_frac`      share of characters that are letters (any script)
- `dup_line_frac`   share of non-blank lines that repeat an earlier line (Gopher's line repetition)
- `unique_word_frac` distinct words / words; low values mean repetitive text
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from assay.errors import ConfigError
from assay.selection.base import Scorer, register_scorer

STATS = ("n_chars", "n_words", "mean_word_len", "alpha_frac", "dup_line_frac", "unique_word_frac")


@register_scorer("doc_stats")
class DocStatsScorer(Scorer):
    """Stateless: `fit` is a no-op. `score` returns the statistic named by `stat`."""

    def __init__(self, column: str | None = None, stat: str = "alpha_frac", prefix: str = ""):
        if stat not in STATS:
            raise ConfigError(f"unknown statistic {stat!r}; choose from {', '.join(STATS)}")
        super().__init__(column or f"{prefix}{stat}")
        self.stat = stat
        self.prefix = prefix

    @property
    def columns(self) -> list[str]:
        return [self.column if s == self.stat else f"{self.prefix}{s}" for s in STATS]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_table(texts)[self.column]

    def score_table(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        t = pl.Series("t", list(texts), dtype=pl.String)
        words = t.str.extract_all(r"\S+")
        lines = t.str.split("\n").list.eval(pl.element().filter(pl.element().str.contains(r"\S")))
        frame = pl.select(
            n_chars=t.str.len_chars(),
            n_words=words.list.len(),
            letters=t.str.count_matches(r"\p{L}"),
            word_chars=words.list.eval(pl.element().str.len_chars()).list.sum(),
            unique_words=words.list.n_unique(),
            n_lines=lines.list.len(),
            unique_lines=lines.list.n_unique(),
        )

        def ratio(a: str, b: str, empty: float) -> np.ndarray:
            num = frame.get_column(a).to_numpy().astype(np.float64)
            den = frame.get_column(b).to_numpy().astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(den > 0, num / np.maximum(den, 1), empty)

        values = {
            "n_chars": frame.get_column("n_chars").to_numpy().astype(np.float64),
            "n_words": frame.get_column("n_words").to_numpy().astype(np.float64),
            "mean_word_len": ratio("word_chars", "n_words", 0.0),
            "alpha_frac": ratio("letters", "n_chars", 0.0),
            "dup_line_frac": 1.0 - ratio("unique_lines", "n_lines", 1.0),
            "unique_word_frac": ratio("unique_words", "n_words", 0.0),
        }
        names = dict(zip(STATS, self.columns, strict=True))
        return {names[k]: v.astype(np.float32) for k, v in values.items()}
