"""MinHash signatures of word 5-gram shingles and the LSH banding that finds near duplicates.

Text is normalised as datatrove's `simplify_text` (the decontamination's normalisation: lower
case, punctuation deleted, diacritics stripped, digit runs to "0"), split into words, and every
window of `ngram` consecutive words is hashed once (`window_hashes`; a document shorter than a
window is one shingle of all its words). The i-th permutation of a 32-bit shingle hash h is
(a_i·h + b_i) mod (2^61 - 1), kept to its low 32 bits, as in datasketch; a_i < 2^31 so that the
product never overflows uint64, and the whole batch is one array operation per block of
permutations. The signature is each permutation's minimum over a document's shingles.

`optimal_bands` picks bands × rows for a Jaccard threshold as datasketch's `MinHashLSH` does:
the (b, r) with b·r <= num_perm that minimises the sum of the false-positive area (the
probability of becoming candidates, integrated over similarities below the threshold) and the
false-negative area (above it), with equal weights. For 128 permutations at 0.8: 9 bands of 13
rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from assay.selection.decontam import char_chunks, position_hashes, window_hashes
from assay.util.hashing import mix64

MERSENNE = np.uint64((1 << 61) - 1)
#: characters of text per chunk of a batch, and permutations evaluated at once: about 10k
#: shingles x 16 permutations, 1.3 MB of products, which stay in cache (1.5x faster than 10 MB)
CHUNK_CHARS = 1 << 16
PERM_BLOCK = 16


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of each permutation: 1 <= a < 2^31, 0 <= b < 2^61 - 1, seeded."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
    return a, b


def shingle_hashes(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """32-bit hashes (as uint64) of every shingle of `texts`, the document of each (sorted), and
    each document's word count; every document has at least one shingle (all its words, or
    none)."""
    wh, lens = position_hashes(texts)
    sh, doc = window_hashes(wh, lens, ngram)
    short = np.flatnonzero(lens < ngram)
    if len(short):
        word_doc = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
        sums = np.zeros(len(lens), dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.add.at(sums, word_doc, mix64(wh, 7))
        extra = mix64(sums[short] ^ lens[short].astype(np.uint64), ngram + 1)
        sh = np.concatenate([sh, extra])
        doc = np.concatenate([doc, short])
        order = np.argsort(doc, kind="stable")
        sh, doc = sh[order], doc[order]
    return sh >> np.uint64(32), doc, lens


def signatures(
    texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1
) -> np.ndarray:
    """MinHash signatures of `texts`: (len(texts), num_perm) uint32."""
    return signatures_and_words(texts, num_perm, ngram, seed)[0]


def signatures_and_words(
    texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of `texts` and their word counts after normalisation."""
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    words = np.zeros(len(texts), dtype=np.int64)
    for lo, hi in char_chunks(texts, CHUNK_CHARS):
        out[lo:hi], words[lo:hi] = _chunk_signatures(texts[lo:hi], num_perm, ngram, seed)
    return out, words


def _chunk_signatures(
    texts: Sequence[str], num_perm: int, ngram: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    a, b = permutations(num_perm, seed)
    h, doc, lens = shingle_hashes(texts, ngram)
    starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    sig = np.empty((len(texts), num_perm), dtype=np.uint32)
    col = h[:, None]
    for p in range(0, num_perm, PERM_BLOCK):
        v = col * a[None, p : p + PERM_BLOCK]  # < 2^63: no overflow
        v += b[None, p : p + PERM_BLOCK]
        v %= MERSENNE
        # the low 32 bits (astype truncates), and the minimum over each document's rows
        sig[:, p : p + PERM_BLOCK] = np.minimum.reduceat(v.astype(np.uint32), starts, axis=0)
    return sig, lens


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per document and band of its `rows` signature values: (n, bands)."""
    out = np.zeros((len(sig), bands), dtype=np.uint64)
    for band in range(bands):
        h = np.full(len(sig), band, dtype=np.uint64)
        for j in range(band * rows, (band + 1) * rows):
            h = mix64(h ^ sig[:, j].astype(np.uint64), j + 1)
        out[:, band] = h
    return out


def _area(f: np.ndarray, lo: float, hi: float) -> float:
    """Integral of samples `f` of a function on a uniform grid over [lo, hi] (Simpson's)."""
    n = len(f) - 1
    step = (hi - lo) / n
    return float(step / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false-positive + false-negative area at `threshold`, with
    equal weights (datasketch's `MinHashLSH` criterion; its integrals are taken here with
    Simpson's rule on 1,000 intervals)."""
    below = np.linspace(0.0, threshold, 1001)
    above = np.linspace(threshold, 1.0, 1001)
    best, best_err = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = _area(1 - (1 - below**rows) ** bands, 0.0, threshold)
            fn = _area((1 - above**rows) ** bands, threshold, 1.0)
            err = 0.5 * fp + 0.5 * fn
            if err < best_err:
                best, best_err = (bands, rows), err
    return best
