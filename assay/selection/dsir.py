"""DSIR: data selection by importance resampling with hashed n-grams (Xie et al. 2023, "Data
Selection for Language Models via Importance Resampling"; official code p-lambda/dsir).

Features, as in the official `HashedNgramDSIR`: a text is lower-cased and split into words and
runs of punctuation (NLTK's `WordPunctTokenizer`, the regex `\\w+|[^\\w\\s]+`); its unigrams and
bigrams (two words joined by a space) are hashed into `num_buckets` buckets (10,000), one count
vector per document. The hash is assay's own (a 64-bit polynomial hash of the word's UTF-8 bytes,
finalised by splitmix64; a bigram mixes its two words' hashes), not the official sha256 of the
n-gram string: the buckets differ, the model does not.

Fit: two bag-of-buckets models, categorical distributions over the buckets: one of the target
examples (`load_targets`: a built-in benchmark, a JSONL file or a list of texts) with
`target_laplace_smoothing` pseudo-counts (official default 0), one of the raw corpus, unsmoothed
(a seeded uniform sample of `sample` documents; the official code reads the whole raw set, or
100,000 x num_buckets n-grams). `log_diff = log(p_target + 1e-8) - log(p_raw + 1e-8)` as there.

Score: a document's log importance weight, `sum_b counts[b] * log_diff[b]`.

Resampling: DSIR keeps k documents sampled without replacement with probability proportional to
their importance weights, by Gumbel top-k on the log weights. That is assay's selection policy
`gumbel` at `tau` 1 on this column: `assay select CORPUS --scores SCORES --column dsir
--policy gumbel --tau 1 --keep ...`. (The official code also drops documents of fewer than 100
words before resampling; assay leaves length filters to selection.)

Speed: a batch is featurised in numpy over the bytes of its texts (no Python step per word) when
a text is ASCII; other texts are split by Python's `re` (the same regex, so the same words) and
then hashed the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from assay.errors import ConfigError, InputError
from assay.selection.base import NotFittedError, Scorer, register_scorer, sample_texts
from assay.util.config import Strict
from assay.util.files import atomic_path, read_json, write_json
from assay.util.hashing import mix64

#: NLTK's WordPunctTokenizer (the official default tokenizer): words, or runs of punctuation
WORD_PUNCT = re.compile(r"\w+|[^\w\s]+")
#: the official `log(p + 1e-8)` guard of empty buckets
LOG_EPS = 1e-8
_PRIME = np.uint64(0x100000001B3)  # FNV's 64-bit prime: the polynomial hash's base
_BATCH_BYTES = 2 << 20  # characters featurised together (a few arrays of 8-byte numbers each)
_SHORT = 64  # words up to this many bytes are hashed 8 bytes at a time
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


def _byte_classes() -> np.ndarray:
    """Class of each byte of an ASCII text: 0 space (`\\s`), 1 word (`\\w`), 2 punctuation."""
    out = np.zeros(256, dtype=np.uint8)
    for b in range(128):
        c = chr(b)
        out[b] = 0 if re.match(r"\s", c) else 1 if re.match(r"\w", c) else 2
    return out


_CLASSES = _byte_classes()


class DSIRSettings(Strict):
    """DSIR's options: what `fit_dsir` takes, and (with its targets and corpus) the `dsir` step."""

    num_buckets: int = Field(
        10_000, ge=1, description="Hash buckets of the unigrams and bigrams (official: 10,000)."
    )
    ngrams: int = Field(2, ge=1, le=2, description="1: unigrams; 2: unigrams and bigrams.")
    target_laplace_smoothing: float = Field(
        0.0, ge=0, description="Pseudo-count added to every bucket of the target model."
    )
    sample: int = Field(
        100_000, ge=1, description="Pool documents the raw model is fitted on (a uniform sample)."
    )
    column: str = Field("dsir", description="Name of the score column.")
    seed: int | None = Field(None, description="Seed of the pool sample.")


#: the defaults DSIRScorer shares with the settings (declared once, in DSIRSettings)
_DEFAULT = DSIRSettings()


def _polynomial_hashes(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """64-bit hash of each byte span `buf[s : s + n]`: `sum_j b_j * P^(n-1-j)` mod 2^64, with the
    length, through splitmix64 (for long words: cost linear in their bytes)."""
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64)
    first = np.zeros(len(starts), dtype=np.int64)
    np.cumsum(lengths[:-1], out=first[1:])
    idx = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - first, lengths)
    powers = np.ones(int(lengths.max()), dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumprod(np.full(len(powers) - 1, _PRIME, dtype=np.uint64), out=powers[1:])
        exponent = np.repeat(starts + lengths - 1, lengths) - idx
        h = np.add.reduceat(buf[idx].astype(np.uint64) * powers[exponent], first)
        h += lengths.astype(np.uint64) << np.uint64(56)
    return mix64(h, 0x5D51)


def _word_hashes(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """64-bit hash of each word `buf[s : s + n]`, a function of its bytes only.

    A word of at most `_SHORT` bytes is read as little-endian 8-byte numbers (zero-padded), each
    folded in with a multiply and a shift; longer words (rare) take `_polynomial_hashes`. Both
    end in splitmix64."""
    padded = np.zeros(len(buf) + 8, dtype=np.uint8)
    padded[: len(buf)] = buf
    # every position of buf as the start of an unaligned 8-byte number
    view = np.ndarray((len(buf) + 1,), dtype="<u8", buffer=padded, strides=(1,))
    out = np.empty(len(starts), dtype=np.uint64)
    short = lengths <= _SHORT
    s, n = starts[short], lengths[short]
    with np.errstate(over="ignore"):
        h = n.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        rows = np.arange(len(s))
        for k in range(0, _SHORT, 8):
            rows = rows[n[rows] > k]
            if len(rows) == 0:
                break
            left = np.minimum(n[rows] - k, 8).astype(np.uint64)
            mask = np.where(left == 8, _ALL, (np.uint64(1) << (left * np.uint64(8))) - 1)
            x = (h[rows] ^ (view[s[rows] + k] & mask)) * _PRIME
            h[rows] = x ^ (x >> np.uint64(29))
    out[short] = mix64(h, 0x5D51)
    if not short.all():
        out[~short] = _polynomial_hashes(buf, starts[~short], lengths[~short])
    return out


def _pretokenized(text: str) -> str:
    return " ".join(WORD_PUNCT.findall(text.lower()))


def _word_spans(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The words of `texts`: the joined UTF-8 bytes, each word's start and length in them, and
    each word's text number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(texts, pa.large_string())
    ascii_ = pc.string_is_ascii(arr).to_numpy(zero_copy_only=False)
    other = np.flatnonzero(~ascii_)
    if len(other):  # split by Python's regex, then words joined by single spaces
        fixed = list(texts)
        for i in other:
            fixed[i] = _pretokenized(texts[i])
        arr = pa.array(fixed, pa.large_string())
    arr = pc.ascii_lower(arr)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    base = int(offsets[0])
    offsets = offsets - base
    size = int(offsets[-1])
    if data_buf is None or size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=np.uint8), empty, empty, empty
    buf = np.frombuffer(data_buf, dtype=np.uint8)[base : base + size]
    cls = _CLASSES[buf]
    for i in other:  # pretokenized: every byte but the separating space is part of a word
        a, b = offsets[i], offsets[i + 1]
        cls[a:b] = buf[a:b] != 0x20
    # a word starts where the class changes to a non-space one, or at a text's first byte
    change = np.empty(size + 1, dtype=bool)
    change[0] = change[size] = True
    np.not_equal(cls[1:], cls[:-1], out=change[1:size])
    change[offsets] = True
    word = cls != 0
    starts = np.flatnonzero(change[:-1] & word)
    ends = np.flatnonzero(change[1:] & word)  # a word's last byte
    per_text = np.diff(np.searchsorted(starts, offsets))
    doc = np.repeat(np.arange(len(per_text)), per_text)
    return buf, starts, ends - starts + 1, doc


def ngram_buckets(
    texts: Sequence[str], num_buckets: int = 10_000, ngrams: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """The hashed n-grams of `texts`: each n-gram's bucket (int64) and its text number, the
    unigrams first, then the bigrams (each text's in order)."""
    buf, starts, lengths, doc = _word_spans(texts)
    h = _word_hashes(buf, starts, lengths)
    buckets, docs = [h % np.uint64(num_buckets)], [doc]
    if ngrams >= 2 and len(h) > 1:
        same = doc[:-1] == doc[1:]
        with np.errstate(over="ignore"):
            pair = mix64(h[:-1][same] * np.uint64(0x9E3779B97F4A7C15) + h[1:][same], 0xB16)
        buckets.append(pair % np.uint64(num_buckets))
        docs.append(doc[:-1][same])
    return np.concatenate(buckets).astype(np.int64), np.concatenate(docs)


def _chunks(texts: Sequence[str]) -> Iterable[tuple[int, Sequence[str]]]:
    """`texts` in runs of about `_BATCH_BYTES` characters, with the position of each run."""
    start, size = 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= _BATCH_BYTES:
            yield start, texts[start : i + 1]
            start, size = i + 1, 0
    if start < len(texts):
        yield start, texts[start:]


def count_vectors(texts: Sequence[str], num_buckets: int = 10_000, ngrams: int = 2) -> np.ndarray:
    """One dense count vector per text (texts x num_buckets, int64): for small batches."""
    texts = list(texts)
    out = np.zeros((len(texts), num_buckets), dtype=np.int64)
    for at, chunk in _chunks(texts):
        buckets, doc = ngram_buckets(chunk, num_buckets, ngrams)
        np.add.at(out, (doc + at, buckets), 1)
    return out


def bucket_counts(
    texts: Iterable[str], num_buckets: int = 10_000, ngrams: int = 2
) -> tuple[np.ndarray, int]:
    """Total n-gram counts per bucket over a stream of texts (a batch at a time), and the
    number of texts."""
    total = np.zeros(num_buckets, dtype=np.int64)
    batch: list[str] = []
    size = n = 0
    for t in texts:
        batch.append(str(t))
        size += len(batch[-1])
        if size >= _BATCH_BYTES:
            total += np.bincount(
                ngram_buckets(batch, num_buckets, ngrams)[0], minlength=num_buckets
            )
            n, batch, size = n + len(batch), [], 0
    if batch:
        total += np.bincount(ngram_buckets(batch, num_buckets, ngrams)[0], minlength=num_buckets)
    return total, n + len(batch)


@register_scorer("dsir")
class DSIRScorer(Scorer):
    """DSIR's log importance weight of a text, log p_target(x) - log p_raw(x) under two
    bag-of-hashed-n-gram models; higher = more target-like. `select --policy gumbel --tau 1` on
    its column is DSIR's importance resampling (Gumbel top-k: k documents without replacement,
    with probability proportional to the weights).

    >>> scorer = DSIRScorer().fit(load_targets("assay_champ"), corpus.sample(10_000)["text"])
    """

    def __init__(
        self,
        column: str = _DEFAULT.column,
        num_buckets: int = _DEFAULT.num_buckets,
        ngrams: int = _DEFAULT.ngrams,
        target_laplace_smoothing: float = _DEFAULT.target_laplace_smoothing,
    ):
        super().__init__(column)
        if num_buckets < 1:
            raise ConfigError(f"num_buckets must be at least 1, not {num_buckets}")
        if ngrams not in (1, 2):
            raise ConfigError(f"ngrams must be 1 (unigrams) or 2 (and bigrams), not {ngrams}")
        if target_laplace_smoothing < 0:
            raise ConfigError(
                f"target_laplace_smoothing must be >= 0, not {target_laplace_smoothing}"
            )
        self.num_buckets = int(num_buckets)
        self.ngrams = int(ngrams)
        self.target_laplace_smoothing = float(target_laplace_smoothing)
        self.log_diff: np.ndarray | None = None
        self.report: dict[str, Any] = {}

    @property
    def is_fitted(self) -> bool:
        return self.log_diff is not None

    def fit(self, targets: Iterable[str], raw: Iterable[str]) -> DSIRScorer:
        """Fit the target and raw bag-of-buckets models (each iterable is read once)."""
        target_counts, n_targets = bucket_counts(targets, self.num_buckets, self.ngrams)
        raw_counts, n_raw = bucket_counts(raw, self.num_buckets, self.ngrams)
        if target_counts.sum() == 0:
            raise InputError("DSIR needs target text: the target examples have no words")
        if raw_counts.sum() == 0:
            raise InputError("DSIR needs raw text: the pool sample has no words")
        smoothed = target_counts + self.target_laplace_smoothing
        p_target = smoothed / smoothed.sum()
        p_raw = raw_counts / raw_counts.sum()
        self.log_diff = np.log(p_target + LOG_EPS) - np.log(p_raw + LOG_EPS)
        self.report = {
            "targets": n_targets,
            "raw_documents": n_raw,
            "target_ngrams": int(target_counts.sum()),
            "raw_ngrams": int(raw_counts.sum()),
            "num_buckets": self.num_buckets,
            "empty_target_buckets": int((target_counts == 0).sum()),
            "empty_raw_buckets": int((raw_counts == 0).sum()),
        }
        return self

    def log_weights(self, texts: Sequence[str]) -> np.ndarray:
        """Log importance weights (float64), one per text."""
        if self.log_diff is None:
            raise NotFittedError("DSIRScorer is not fitted: call fit() or load a saved one")
        texts = list(texts)
        out = np.zeros(len(texts), dtype=np.float64)
        for at, chunk in _chunks(texts):
            buckets, doc = ngram_buckets(chunk, self.num_buckets, self.ngrams)
            out[at : at + len(chunk)] = np.bincount(
                doc, weights=self.log_diff[buckets], minlength=len(chunk)
            )
        return out

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.log_weights(texts).astype(np.float32)

    def _save_state(self, folder: Path) -> None:
        with atomic_path(folder / "log_diff.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(self.log_diff, dtype=np.float64), allow_pickle=False)
        write_json(folder / "fit_report.json", self.report)

    def _load_state(self, folder: Path) -> None:
        log_diff = np.load(folder / "log_diff.npy", allow_pickle=False)
        if log_diff.shape != (self.num_buckets,):
            raise InputError(
                f"{folder}: log_diff has shape {log_diff.shape}, expected ({self.num_buckets},)"
            )
        self.log_diff = log_diff
        if (folder / "fit_report.json").exists():
            self.report = read_json(folder / "fit_report.json")


def fit_dsir(
    corpus: Any,
    targets: Any,
    settings: DSIRSettings | None = None,
    *,
    fields: Sequence[str] | None = None,
    max_targets: int | None = None,
    **options: Any,
) -> DSIRScorer:
    """Fit DSIR: the target model on `targets` (a file, a built-in benchmark name or a list of
    texts; see `load_targets`), the raw model on a uniform sample of `corpus` (a Corpus or a
    sequence of texts). `settings` (or keyword arguments, which override it) are
    `DSIRSettings`; a seed of None is 0."""
    from assay.common.targets import load_targets

    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = DSIRSettings.model_validate({**base, **options})
    seed = 0 if cfg.seed is None else cfg.seed
    examples = load_targets(targets, fields, max_items=max_targets, seed=seed)
    scorer = DSIRScorer(
        column=cfg.column,
        num_buckets=cfg.num_buckets,
        ngrams=cfg.ngrams,
        target_laplace_smoothing=cfg.target_laplace_smoothing,
    )
    return scorer.fit(examples, sample_texts(corpus, cfg.sample, seed))
