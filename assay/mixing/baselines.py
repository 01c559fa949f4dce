"""Mixtures that need no proxy runs: the baselines every mixture search must be compared with.

- natural: proportional to each domain's tokens (what concatenating the corpus gives)
- uniform: 1/k each (Aioli's "stratified" baseline, hard to beat)
- temperature: p_i ~ n_i^(1/T); T=1 is natural, T->inf uniform (mT5 uses 1/T = 0.3,
  RegMix's prior 0.5)
- UniMax (Chung et al. 2023): as uniform as possible for a token budget, with no domain
  repeated more than `max_epochs` times; a capped domain's leftover goes to the others
- entropy (BiMix, Ge et al.): softmax over each domain's token entropy, unigram (Shannon),
  joint or conditional entropy of token bigrams; conditional is the paper's recommendation
  (lowest perplexity of its four training-free mixtures)

All take token counts (or a TokenCache) and return a `Mixture`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from assay.common.mixture import Mixture
from assay.errors import ConfigError, InputError

ENTROPIES = ("unigram", "joint", "conditional")


def _counts(tokens_per_domain: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    domains = sorted(tokens_per_domain)
    n = np.array([float(tokens_per_domain[d]) for d in domains])
    if not domains or (n < 0).any() or not np.isfinite(n).all() or n.sum() <= 0:
        raise InputError(
            f"token counts must be non-negative with a positive total: {dict(tokens_per_domain)}"
        )
    return domains, n


def natural(tokens_per_domain: Mapping[str, float]) -> Mixture:
    domains, n = _counts(tokens_per_domain)
    return Mixture.from_vector(domains, n)


def uniform(tokens_per_domain: Mapping[str, float]) -> Mixture:
    domains, n = _counts(tokens_per_domain)
    return Mixture.from_vector(domains, (n > 0).astype(float))


def temperature(tokens_per_domain: Mapping[str, float], t: float = 2.0) -> Mixture:
    """p_i ~ n_i^(1/t): t=1 is natural, large t approaches uniform, t<1 sharpens."""
    if not t > 0:
        raise ConfigError(f"temperature must be positive, not {t}")
    domains, n = _counts(tokens_per_domain)
    logw = np.where(n > 0, np.log(np.maximum(n, 1e-300)) / t, -np.inf)
    return Mixture.from_vector(domains, np.exp(logw - logw.max()))


def unimax(
    tokens_per_domain: Mapping[str, float], budget: float, max_epochs: float = 1.0
) -> Mixture:
    """UniMax: spend `budget` tokens as uniformly as possible, at most `max_epochs` per domain.

    Domains are visited from the smallest: each gets an equal share of what is left, or its
    cap (max_epochs x its tokens) if that is smaller, and the rest is shared among the larger
    ones. A budget beyond every cap is an error (it cannot be met without more epochs).
    """
    if not budget > 0 or not max_epochs > 0:
        raise ConfigError("budget and max_epochs must be positive")
    domains, n = _counts(tokens_per_domain)
    caps = n * max_epochs
    if budget > caps.sum() * (1 + 1e-9):
        raise ConfigError(
            f"a budget of {budget:,.0f} tokens exceeds every domain's cap of {max_epochs:g} "
            f"epochs ({caps.sum():,.0f} tokens in all): raise max_epochs or lower the budget"
        )
    alloc = np.zeros(len(n))
    left = budget
    order = np.argsort(caps, kind="stable")
    for k, i in enumerate(order):
        share = left / (len(order) - k)
        alloc[i] = min(share, caps[i])
        left -= alloc[i]
    return Mixture.from_vector(domains, alloc)


def bigram_entropies(tokens: np.ndarray, vocab_size: int, *, chunk: int = 1024) -> dict[str, float]:
    """Unigram, joint (bigram) and conditional entropy, in nats, of a token stream.

    Bigrams are counted within `chunk`-token windows (BiMix counts on 1,024-token chunks), so
    no bigram spans two windows. Counting uses one `bincount` over pair ids when the vocabulary
    allows (V^2 <= 2^27), else `unique` over the pairs.
    """
    t = np.asarray(tokens, dtype=np.int64)
    if len(t) < 2:
        raise InputError("need at least 2 tokens to count bigrams")
    first, second = t[:-1], t[1:]
    keep = (np.arange(1, len(t)) % chunk) != 0  # drop pairs that cross a window boundary
    pairs = first[keep] * vocab_size + second[keep]
    if vocab_size * vocab_size <= 1 << 27:
        joint = np.bincount(pairs, minlength=0).astype(np.float64)
        joint = joint[joint > 0]
    else:
        joint = np.unique(pairs, return_counts=True)[1].astype(np.float64)
    uni = np.bincount(t).astype(np.float64)
    uni = uni[uni > 0]
    p_uni = uni / uni.sum()
    p_joint = joint / joint.sum()
    h_uni = float(-(p_uni * np.log(p_uni)).sum())
    h_joint = float(-(p_joint * np.log(p_joint)).sum())
    # H(X'|X) = H(X, X') - H(X), with H(X) over the first token of each counted pair
    firsts = np.bincount(first[keep]).astype(np.float64)
    firsts = firsts[firsts > 0] / firsts.sum()
    h_first = float(-(firsts * np.log(firsts)).sum())
    return {"unigram": h_uni, "joint": h_joint, "conditional": h_joint - h_first}


def entropy_mixture(
    cache: Any,
    kind: str = "conditional",
    *,
    max_tokens: int | None = 5_000_000,
    seed: int = 0,
) -> tuple[Mixture, dict[str, dict[str, float]]]:
    """BiMix's training-free mixture: r_i = softmax(H_i) over the domains of a TokenCache.

    `max_tokens` caps the tokens counted per domain (evenly spaced 1,024-token windows), so a
    large domain costs no more than a small one. Returns the mixture and every domain's
    entropies.
    """
    if kind not in ENTROPIES:
        raise ConfigError(f"kind must be one of {ENTROPIES}, not {kind!r}")
    rng = np.random.default_rng(seed)
    entropies: dict[str, dict[str, float]] = {}
    for name, dom in sorted(cache.domains.items()):
        tokens = np.asarray(dom.tokens)
        if max_tokens is not None and len(tokens) > max_tokens:
            n_win = max_tokens // 1024
            starts = np.sort(rng.choice(len(tokens) // 1024, n_win, replace=False)) * 1024
            tokens = np.concatenate([tokens[s : s + 1024] for s in starts])
        if len(tokens) < 2:
            continue
        entropies[name] = bigram_entropies(tokens, cache.vocab_size)
    if not entropies:
        raise InputError("no domain has enough tokens to measure its entropy")
    h = np.array([entropies[d][kind] for d in sorted(entropies)])
    w = np.exp(h - h.max())
    return Mixture.from_vector(sorted(entropies), w), entropies


BASELINES = ("natural", "uniform", "temperature", "unimax", "entropy")


def baseline_mixture(
    method: str,
    cache: Any,
    *,
    temperature_t: float = 2.0,
    budget: float | None = None,
    max_epochs: float = 1.0,
    entropy: str = "conditional",
    seed: int = 0,
) -> tuple[Mixture, dict[str, Any]]:
    """One of the training-free mixtures for the domains of a TokenCache, by name, with what
    it was computed from (token counts, or entropies)."""
    counts = {d: t.n_tokens for d, t in cache.domains.items() if t.n_tokens > 0}
    info: dict[str, Any] = {"tokens": counts}
    if method == "natural":
        mix = natural(counts)
    elif method == "uniform":
        mix = uniform(counts)
    elif method == "temperature":
        mix = temperature(counts, temperature_t)
        info["t"] = temperature_t
    elif method == "unimax":
        if budget is None:
            raise ConfigError("unimax needs the token budget it spreads")
        mix = unimax(counts, budget, max_epochs)
        info.update(budget=budget, max_epochs=max_epochs)
    elif method == "entropy":
        mix, info["entropies"] = entropy_mixture(cache, entropy, seed=seed)
        info["kind"] = entropy
    else:
        raise ConfigError(f"unknown baseline {method!r}; known: {', '.join(BASELINES)}")
    return mix, info
