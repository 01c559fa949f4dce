"""Selection policies on arrays: top-k, Gumbel top-k and threshold, a boolean mask out.

These are the array functions behind `assay.selection.select` (which applies them to a sharded
corpus) and the ones to use on scores held in memory. They sort with two stable argsorts rather
than `np.lexsort`, which gives the same order in less memory; the corpus-level decision hands
its arrays over (`cut_owned`), so that they are freed as soon as the sort has used them.

Orders are total and deterministic: by key, then by a tie-break (as float64), then by position.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Literal

import numpy as np

from assay.errors import ConfigError, InputError
from assay.util.hashing import mix64, uniform_from_hash

Mode = Literal["top", "bottom", "middle"]


def desc_order(key: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Positions by `key` descending, then `tiebreak` (as float64) descending, then position:
    the order of `np.lexsort((-tiebreak.astype(np.float64), -key))`."""
    return _desc_order([np.asarray(key, dtype=np.float64), tiebreak], owned=False)


def _desc_order(arrays: list[np.ndarray], owned: bool) -> np.ndarray:
    """`desc_order` of `[key, tiebreak]` (the list is emptied), from the two stable sorts
    lexsort makes (the secondary key first). `key` must be float64. When `owned`, nothing else
    holds the arrays: they are overwritten and freed as soon as they are used."""
    key, tiebreak = arrays
    arrays.clear()
    if owned and tiebreak.dtype == np.float64:
        neg = np.negative(tiebreak, out=tiebreak)
    else:
        neg = np.negative(tiebreak, dtype=np.float64)
    del tiebreak
    first = np.argsort(neg, kind="stable")
    del neg
    k = key[first]
    del key
    np.negative(k, out=k)
    second = np.argsort(k, kind="stable")
    return np.take(first, second, out=k.view(np.int64))


def _asc_order(arrays: list[np.ndarray], tiebreak: np.ndarray) -> np.ndarray:
    """Positions by `[key]` ascending (float64; the list is emptied), then `tiebreak` (as
    float64) ascending, then position: `np.lexsort((tiebreak.astype(np.float64), key))`."""
    (key,) = arrays
    arrays.clear()
    first = np.argsort(tiebreak.astype(np.float64, copy=False), kind="stable")
    k = key[first]
    del key
    second = np.argsort(k, kind="stable")
    return np.take(first, second, out=k.view(np.int64))


def cut(key: np.ndarray, tiebreak: np.ndarray, weights: np.ndarray, keep: float) -> np.ndarray:
    """Keep the highest keys until their weight is closest to `keep` of the total."""
    return cut_owned([np.asarray(key, dtype=np.float64), tiebreak, weights], keep, owned=False)


def cut_owned(arrays: list[np.ndarray], keep: float, owned: bool = True) -> np.ndarray:
    """`cut` of `[key, tiebreak, weights]` (the list is emptied; `key` float64). When `owned`,
    nothing else holds the arrays: they are overwritten and freed as they are used, so that
    the peak is about 36 bytes per item, the arrays included (52 when not owned)."""
    n = len(arrays[0])
    weights = arrays.pop()
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = _desc_order(arrays, owned)
    cum = np.asarray(weights, dtype=np.float64)[order]
    del weights
    k = _closest_k(np.cumsum(cum, out=cum), keep)
    mask[order[:k]] = True
    return mask


def cut_groups_owned(
    arrays: list[np.ndarray], groups: list[np.ndarray], keep: np.ndarray, owned: bool = True
) -> np.ndarray:
    """`cut` within each group: `arrays` is `[key, tiebreak, weights]` as for `cut_owned`,
    `groups` is `[codes]` (small non-negative integers; both lists are emptied) and `keep[c]`
    the fraction of group c's weight to keep. Each group's cut is exactly `cut_owned` of its
    documents alone. The sort by key is made once for all groups, then stably by group: about
    8 bytes per item more than `cut_owned` (the codes and the group sort's index)."""
    n = len(arrays[0])
    weights = arrays.pop()
    (codes,) = groups
    groups.clear()
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = _desc_order(arrays, owned)
    sorted_codes = codes[order]
    del codes
    by_group = np.argsort(sorted_codes, kind="stable")
    sorted_codes = sorted_codes[by_group]
    order = order[by_group]
    del by_group
    cum = np.asarray(weights, dtype=np.float64)[order]
    del weights
    bounds = [0, *(np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1).tolist(), n]
    for a, b in pairwise(bounds):
        k = _closest_k(np.cumsum(cum[a:b], out=cum[a:b]), float(keep[sorted_codes[a]]))
        mask[order[a : a + k]] = True
    return mask


def _closest_k(cum: np.ndarray, keep: float) -> int:
    """How many of the first items (cumulative weights `cum`) weigh closest to `keep` of all."""
    total = cum[-1]
    if total <= 0:
        return 0
    target = keep * total
    k = min(int(np.searchsorted(cum, target, side="left")) + 1, len(cum))
    if k > 1 and abs(cum[k - 2] - target) <= abs(cum[k - 1] - target):
        k -= 1
    return k


def check_keep(keep: float) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int | float) or not (0 < keep <= 1):
        raise ConfigError(f"keep must be a fraction in (0, 1], not {keep!r}")


def middle_key(scores: np.ndarray, weights: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Minus the distance of each document's weighted percentile from the median: the band
    around the median ranks first ("medium perplexity" in Ankner et al., 2024)."""
    return middle_key_owned([np.asarray(scores, dtype=np.float64)], weights, tiebreak)


def middle_key_owned(
    scores: list[np.ndarray], weights: np.ndarray, tiebreak: np.ndarray
) -> np.ndarray:
    """`middle_key` of `[scores]` (float64; the list is emptied, so that the scores are freed
    once sorted when nothing else holds them)."""
    order = _asc_order(scores, tiebreak)
    half = np.asarray(weights, dtype=np.float64)[order]
    cum = np.cumsum(half)
    denominator = max(cum[-1], 1e-300)
    np.divide(half, 2.0, out=half)
    np.subtract(cum, half, out=cum)
    np.divide(cum, denominator, out=cum)
    pct = half  # reused: the percentile of each document, in corpus order
    pct[order] = cum
    del order, cum
    np.subtract(pct, 0.5, out=pct)
    np.abs(pct, out=pct)
    return np.negative(pct, out=pct)


def policy_key(
    scores: np.ndarray, weights: np.ndarray, tiebreak: np.ndarray, mode: Mode
) -> np.ndarray:
    """The key that top-k keeps the highest of: the score, minus it, or `middle_key`."""
    s = np.asarray(scores, dtype=np.float64)
    if mode == "top":
        return s
    if mode == "bottom":
        return -s
    if mode == "middle":
        return middle_key(s, weights, tiebreak)
    raise ConfigError(f"mode must be top, bottom or middle, not {mode!r}")


def topk_mask(
    scores: np.ndarray,
    keep: float,
    *,
    weights: np.ndarray | None = None,
    mode: Mode = "top",
    tiebreak: np.ndarray | None = None,
) -> np.ndarray:
    """Keep the best `keep` fraction (of the total weight) by score.

    mode='top' keeps the highest scores, 'bottom' the lowest, 'middle' the band around the
    weighted median. Ties are broken by `tiebreak` (default: the later index wins, deterministic).
    """
    check_keep(keep)
    scores = np.asarray(scores)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    tb = np.arange(len(scores)) if tiebreak is None else np.asarray(tiebreak)
    return cut(policy_key(scores, w, tb, mode), tb, w, keep)


#: documents per block of the Gumbel noise (blocks keep the temporaries small)
NOISE_BLOCK = 1 << 16


def _noise_blocks(hashes: np.ndarray, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, noise) for each block of `hashes`: -log(-log(u)), u uniform from (seed, hash)."""
    for a in range(0, len(hashes), NOISE_BLOCK):
        g = uniform_from_hash(mix64(hashes[a : a + NOISE_BLOCK], seed))
        np.log(g, out=g)
        np.negative(g, out=g)
        np.log(g, out=g)
        yield a, np.negative(g, out=g)


def add_gumbel_noise(out: np.ndarray, hashes: np.ndarray, seed: int) -> np.ndarray:
    """`out += gumbel_noise(hashes, seed)`, in place (float64 `out`), a block at a time."""
    for a, g in _noise_blocks(np.asarray(hashes, dtype=np.uint64), seed):
        out[a : a + len(g)] += g
    return out


def gumbel_noise(n_or_hashes: int | np.ndarray, seed: int) -> np.ndarray:
    """Standard Gumbel noise, from a seeded generator or, given id hashes, from (seed, id)."""
    if isinstance(n_or_hashes, int | np.integer):
        return np.random.default_rng(seed).gumbel(size=int(n_or_hashes))
    h = np.asarray(n_or_hashes, dtype=np.uint64)
    out = np.empty(len(h))
    for a, g in _noise_blocks(h, seed):
        out[a : a + len(g)] = g
    return out


def gumbel_topk_mask(
    scores: np.ndarray,
    keep: float,
    *,
    tau: float = 1.0,
    weights: np.ndarray | None = None,
    mode: Literal["top", "bottom"] = "top",
    seed: int = 0,
    id_hashes: np.ndarray | None = None,
    official: bool = False,
) -> np.ndarray:
    """Gumbel top-k: keep the top of score/tau + Gumbel noise (mode='bottom' uses -score/tau).

    `official=True` (policy 'gumbel_official') keeps the top of score/tau - G instead: for
    'bottom' that is the k smallest of score/tau + G, MATES' official selection, which is biased
    (see `gumbel_topk`); for exact replication only.

    With document weights of 1 this samples `k` documents without replacement with probability
    proportional to softmax(score/tau) (the Gumbel-top-k trick, Kool et al. 2019). MATES' official
    code instead keeps the *smallest* noisy values of pred/tau + G, which is not that
    distribution; assay implements the correct form: argtopk(-pred/tau + G) for "lower is better".
    """
    check_keep(keep)
    if tau <= 0:
        raise ConfigError("tau must be positive")
    if mode not in ("top", "bottom"):
        raise ConfigError("Gumbel selection supports mode 'top' or 'bottom'")
    s = np.asarray(scores, dtype=np.float64)
    sign = (1.0 if mode == "top" else -1.0) * (-1.0 if official else 1.0)
    key = sign * s / tau
    if id_hashes is None:
        key += gumbel_noise(len(s), seed)
    else:
        add_gumbel_noise(key, id_hashes, seed)
    if official:
        np.negative(key, out=key)
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=np.float64)
    tb = np.arange(len(s)) if id_hashes is None else id_hashes
    return cut(key, tb, w, keep)


def threshold_mask(
    scores: np.ndarray, threshold: float, *, mode: Literal["top", "bottom"] = "top"
) -> np.ndarray:
    """Keep scores >= threshold (mode='top') or <= threshold (mode='bottom')."""
    s = np.asarray(scores)
    if mode == "top":
        return s >= threshold
    if mode == "bottom":
        return s <= threshold
    raise ConfigError("threshold selection supports mode 'top' or 'bottom'")


def gumbel_topk(
    benefit: np.ndarray,
    k: int,
    *,
    tau: float = 0.5,
    seed: int = 0,
    id_hashes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of k items sampled without replacement with P proportional to softmax(benefit/tau).

    The Gumbel-top-k trick (Kool et al. 2019): the k largest of `benefit / tau + G`, G i.i.d.
    standard Gumbel. For MATES, benefit = -predicted influence (lower influence = lower reference
    loss = better), i.e. `argtopk(-pred / tau + G)`.

    Not the official MATES code, which keeps the k *smallest* of `pred / tau + G`: since
    min(a + G) is not distributed like max(-a + G) (the Gumbel distribution is skewed), that
    picks item i with P != softmax(-pred / tau)_i; e.g. for pred = (0, 1, 2), tau = 1, k = 1 it
    gives about (0.702, 0.245, 0.053) instead of softmax's (0.665, 0.245, 0.090): the worst
    documents are under-sampled (and the best over-sampled) relative to the intended law.

    Noise comes from a seeded generator, or from (seed, id hash) when `id_hashes` is given (then
    the draw of a document does not depend on its position). Returned best key first.
    """
    b = np.asarray(benefit, dtype=np.float64)
    if tau <= 0:
        raise ConfigError("tau must be positive")
    if not 0 <= k <= len(b):
        raise ConfigError(f"k must be between 0 and {len(b)}, not {k}")
    if id_hashes is not None and len(id_hashes) != len(b):
        raise InputError(f"{len(id_hashes)} id hashes for {len(b)} items")
    key = b / tau + gumbel_noise(len(b) if id_hashes is None else id_hashes, seed)
    order = np.argsort(-key, kind="stable")
    return order[:k]
