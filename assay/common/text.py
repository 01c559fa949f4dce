"""Text measures: token counts (exact or estimated) and a cluster's top terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.errors import DependencyError, MissingError

#: Pieces of GPT-2's pre-tokenizer (contractions, letter runs, digit runs, punctuation runs,
#: whitespace runs). Without a tokenizer, "tokens" are estimated as these pieces; byte-level BPE
#: vocabularies of 32k-50k give about 1.0-1.3 tokens per piece on English prose.
TOKEN_ESTIMATE_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"


def count_tokens(texts: pl.Series, tokenizer: str | None) -> np.ndarray:
    """Token counts: exact with a local tokenizer (folder or tokenizer.json), else an estimate."""
    if tokenizer is None:
        return texts.str.count_matches(TOKEN_ESTIMATE_PATTERN).to_numpy().astype(np.float64)
    tok = _load_tokenizer(tokenizer)
    enc = tok.encode_batch(texts.to_list(), add_special_tokens=False)
    return np.fromiter((len(e.ids) for e in enc), dtype=np.float64, count=len(enc))


_TOKENIZERS: dict[str, Any] = {}


def _load_tokenizer(path: str) -> Any:
    if path not in _TOKENIZERS:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover
            raise DependencyError(
                "exact token counts need `tokenizers`: pip install 'assay[tokenizers]'"
            ) from e
        p = Path(path)
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.exists():
            raise MissingError(
                f"no tokenizer at {path} (expected a tokenizer.json file or a folder with one)"
            )
        _TOKENIZERS[path] = Tokenizer.from_file(str(file))
    return _TOKENIZERS[path]


def top_terms(texts: list[str], labels: np.ndarray, n: int = 10) -> dict[int, list[str]]:
    """Class-based TF-IDF: terms frequent in a class and rare across classes."""
    from sklearn.feature_extraction.text import CountVectorizer

    classes = np.unique(labels)
    vec = CountVectorizer(
        stop_words="english", max_features=30_000, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b"
    )
    counts = vec.fit_transform(texts)
    per_class = np.vstack([np.asarray(counts[labels == c].sum(axis=0)).ravel() for c in classes])
    tf = per_class / np.maximum(per_class.sum(axis=1, keepdims=True), 1)
    avg_words = per_class.sum() / len(classes)
    idf = np.log1p(avg_words / np.maximum(per_class.sum(axis=0), 1))
    score = np.where(per_class > 0, tf * idf, -np.inf)
    vocab = np.asarray(vec.get_feature_names_out())
    return {int(c): vocab[np.argsort(-score[i])[:n]].tolist() for i, c in enumerate(classes)}
