"""Mixtures that need no proxy runs: the baselines every mixture search must be compared with.

- natural: proportional to each domain's tokens (what concatenating the corpus gives)
- uniform: 1/k each (Aioli's "stratified" baseline, hard to beat)
- temperature: p_i ~ n_i^(1/T); T=1 is natural, T->inf uniform (mT5 uses 1/T = 0.3,
  RegMix's prior 0.5)
- UniMax (Chung et al. 2023): as uniform as possible for a token budget, with no domain
  repeated more than `max_epochs` times; a capped domain's leftover goes to the others
- entropy (BiMix, Ge et al.): softmax over each domain's entropy: unigram (Shannon), joint
  or conditional entropy of token bigrams, or the von Neumann entropy of the domain's document
  embeddings (the paper's four measures); conditional is the paper's recommendation (lowest
  perplexity of its four training-free mixtures)

All take token counts (or a TokenCache) and return a `Mixture`; the von Neumann entropy also
reads the corpus' documents and embeds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from assay.common.mixture import Mixture
from assay.errors import ConfigError, InputError

TOKEN_ENTROPIES = ("unigram", "joint", "conditional")
ENTROPIES = (*TOKEN_ENTROPIES, "von_neumann")


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


def von_neumann_entropy(embeddings: np.ndarray) -> float:
    """Von Neumann entropy, in nats, of a set of document embeddings: S = -tr(rho log rho),
    with rho = K / tr(K) the trace-normalised cosine kernel K = X X^T of the unit-length rows
    of X (n documents by d dimensions). Ranges from 0 (every document the same direction) to
    log(min(n, d)) (spread evenly over as many directions as there are).

    The nonzero eigenvalues of X X^T (n x n) are those of X^T X (d x d), so the cost is
    linear in n: `gram_entropy` of the d x d Gram matrix, which can be summed over batches.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or not len(x):
        raise InputError("embeddings must be a non-empty (documents, dimensions) matrix")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x[norm[:, 0] > 0] / norm[norm[:, 0] > 0]
    return gram_entropy(x.T @ x)


def gram_entropy(gram: np.ndarray) -> float:
    """-sum lambda log lambda over the eigenvalues of `gram` / trace(`gram`) (a symmetric
    positive semi-definite matrix: X^T X of unit-length rows, summed over batches)."""
    g = np.asarray(gram, dtype=np.float64)
    trace = float(np.trace(g))
    if not trace > 0:
        raise InputError("the embeddings are all zero; their entropy is undefined")
    lam = np.linalg.eigvalsh((g + g.T) / (2 * trace))
    lam = lam[lam > 1e-12]  # round-off around the zero eigenvalues
    return float(-(lam * np.log(lam)).sum())


def embedding_entropies(
    corpus: Any,
    embedder: Any,
    *,
    max_docs: int = 2000,
    domain_column: str = "domain",
) -> dict[str, float]:
    """Every domain's von Neumann entropy (`von_neumann_entropy`) over the embeddings of its
    first `max_docs` documents in corpus order, in one streaming pass (memory: one d x d Gram
    matrix per domain). Domains are named as the token cache names them (`(none)` for a
    missing label; `ALL_DOMAINS` without a domain column)."""
    import polars as pl

    from assay.common.tokens import ALL_DOMAINS

    grams: dict[str, np.ndarray] = {}
    seen: dict[str, int] = {}
    for batch in corpus.iter_batches():
        texts = batch.get_column("text").to_list()
        if domain_column in batch.columns:
            labels = batch.get_column(domain_column).cast(pl.String).fill_null("(none)").to_list()
        else:
            labels = [ALL_DOMAINS] * len(texts)
        take: dict[str, list[str]] = {}
        for text, d in zip(texts, labels, strict=True):
            if seen.get(d, 0) + len(take.get(d, [])) < max_docs:
                take.setdefault(d, []).append(text)
        for d, chosen in take.items():
            x = np.asarray(embedder.embed(chosen), dtype=np.float64)
            norm = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norm > 0, norm, 1.0)
            grams[d] = grams.get(d, 0) + x.T @ x
            seen[d] = seen.get(d, 0) + len(chosen)
    return {d: gram_entropy(g) for d, g in sorted(grams.items()) if np.trace(g) > 0}


def entropy_mixture(
    cache: Any,
    kind: str = "conditional",
    *,
    max_tokens: int | None = 5_000_000,
    seed: int = 0,
    corpus: Any = None,
    embedder: Any = None,
    max_docs: int = 2000,
) -> tuple[Mixture, dict[str, dict[str, float]]]:
    """BiMix's training-free mixture: r_i = softmax(H_i) over the domains of a TokenCache.

    `max_tokens` caps the tokens counted per domain (evenly spaced 1,024-token windows), so a
    large domain costs no more than a small one. `kind="von_neumann"` also needs the `corpus`
    the cache was built from and an `embedder` (see `embedding_entropies`; `max_docs` per
    domain). Returns the mixture and every domain's entropies.
    """
    if kind not in ENTROPIES:
        raise ConfigError(f"kind must be one of {ENTROPIES}, not {kind!r}")
    if kind == "von_neumann" and (corpus is None or embedder is None):
        raise ConfigError("the von Neumann entropy embeds documents: give corpus and embedder")
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
    if kind == "von_neumann":
        vne = embedding_entropies(corpus, embedder, max_docs=max_docs)
        missing = sorted(set(entropies) - set(vne))
        if missing:
            raise InputError(f"domains {missing} have no documents with an embedding")
        for d in entropies:
            entropies[d]["von_neumann"] = vne[d]
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
    corpus: Any = None,
    embedder: Any = None,
    max_docs: int = 2000,
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
        mix, info["entropies"] = entropy_mixture(
            cache, entropy, seed=seed, corpus=corpus, embedder=embedder, max_docs=max_docs
        )
        info["kind"] = entropy
    else:
        raise ConfigError(f"unknown baseline {method!r}; known: {', '.join(BASELINES)}")
    return mix, info
