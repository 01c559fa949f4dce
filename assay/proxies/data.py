"""Token streams for proxy training: tokenize a corpus once, pack any mixture from it.

A mixture search trains many proxies on different mixtures of the same domains, so the corpus is
tokenized once into a `TokenCache` (one memory-mapped array of token ids per domain, documents
each followed by EOS) and every run packs its sequences from that cache:

    cache = TokenCache.build(corpus, tokenizer, "runs/x/tokens")     # per shard, resumable
    data = pack_mixture(cache, Mixture({...}), tokens=2_000_000, seq_len=256, seed=0)

Packing draws each domain's share of the budget from its documents in a seeded random order,
repeating the domain (reshuffled) when it is small. `max_epochs` caps that repetition: small
proxies never exhaust a scarce domain, so without a cap they learn to over-weight it (UtiliMax,
RegMix). When a domain's share would exceed its cap, the cap binds: by default the excess is
given to the other domains in proportion to their weights and the report says so; with
`on_cap="error"` it is an error. A budget larger than all caps together is always an error.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.common.budget import capped_shares, round_within
from assay.common.mixture import Mixture
from assay.common.tokens import DomainTokens, TokenCache
from assay.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Packing


@dataclass
class PackedData:
    """Sequences of `seq_len` tokens in training order, and what went into them."""

    input_ids: np.ndarray  # (n_sequences, seq_len)
    domain_index: np.ndarray  # (n_sequences,) index into `domains`
    domains: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.size)


def _allocate(
    weights: np.ndarray, available: np.ndarray, total: int, domains: list[str], on_cap: str
) -> tuple[np.ndarray, list[str]]:
    """Sequences per domain: proportional to `weights`, none above `available`, summing to
    `total`."""
    if available[weights > 0].sum() < total:
        raise ConfigError(
            f"the budget needs {total:,} sequences but the domains of the mixture can give at "
            f"most {int(available[weights > 0].sum()):,} within their epoch caps; lower the "
            "budget, raise max_epochs, or add domains"
        )
    pos = weights > 0
    caps = available[pos].astype(np.float64)
    target, capped_pos = capped_shares(weights[pos], caps, float(total))
    capped_names = [domains[i] for i in np.flatnonzero(pos)[capped_pos]]
    if capped_names and on_cap == "error":
        raise ConfigError(
            f"the epoch cap binds for {capped_names}: their share of the budget needs more "
            "repetitions than max_epochs allows"
        )
    counts = np.zeros(len(weights), dtype=np.int64)
    counts[pos] = round_within(target, available[pos], total)
    return counts, capped_names


def _domain_stream(
    dom: DomainTokens, n_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """The first `n_tokens` of the domain's documents in shuffled order, reshuffled per epoch."""
    lengths = np.diff(dom.offsets)
    pieces: list[np.ndarray] = []
    taken = 0
    while taken < n_tokens:
        order = rng.permutation(dom.n_docs)
        cum = np.cumsum(lengths[order])
        need = n_tokens - taken
        k = int(np.searchsorted(cum, need, side="left")) + 1 if cum[-1] >= need else len(order)
        for d in order[:k]:
            pieces.append(dom.tokens[dom.offsets[d] : dom.offsets[d + 1]])
        taken += int(cum[k - 1])
    stream = np.concatenate(pieces)[:n_tokens] if pieces else np.zeros(0, dtype=dom.tokens.dtype)
    return stream, n_tokens / max(dom.n_tokens, 1)


def pack_mixture(
    cache: TokenCache,
    mixture: Mixture,
    tokens: int,
    seq_len: int,
    *,
    seed: int = 0,
    max_epochs: float = 4.0,
    on_cap: str = "redistribute",
) -> PackedData:
    """Pack `tokens` tokens (rounded down to whole sequences) from the cache in `mixture`
    proportions."""
    if on_cap not in ("redistribute", "error"):
        raise ConfigError("on_cap must be 'redistribute' or 'error'")
    if seq_len < 2:
        raise ConfigError("seq_len must be at least 2")
    total = tokens // seq_len
    if total < 1:
        raise ConfigError(f"a budget of {tokens} tokens is less than one sequence of {seq_len}")
    domains = sorted(cache.domains)
    mixture.check_domains(domains)
    weights = mixture.vector(domains)
    available = np.array(
        [int(cache.domains[d].n_tokens * max_epochs) // seq_len for d in domains], dtype=np.int64
    )
    counts, capped = _allocate(weights, available, total, domains, on_cap)

    seqs, owner, epochs = [], [], {}
    for i, d in enumerate(domains):
        if counts[i] == 0:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(d.encode())])
        stream, ep = _domain_stream(cache.domains[d], int(counts[i]) * seq_len, rng)
        seqs.append(stream.reshape(int(counts[i]), seq_len))
        owner.append(np.full(int(counts[i]), i, dtype=np.int32))
        epochs[d] = round(ep, 4)
    input_ids = np.concatenate(seqs)
    domain_index = np.concatenate(owner)
    perm = np.random.default_rng(seed).permutation(len(input_ids))
    effective = {d: float(counts[i] / total) for i, d in enumerate(domains) if counts[i] > 0}
    report = {
        "requested_mixture": mixture.to_dict(),
        "effective_mixture": effective,
        "sequences": int(total),
        "tokens": int(total * seq_len),
        "tokens_per_domain": {
            d: int(counts[i] * seq_len) for i, d in enumerate(domains) if counts[i] > 0
        },
        "epochs_per_domain": epochs,
        "max_epochs": max_epochs,
        "capped_domains": capped,
    }
    if capped:
        report["cap_note"] = (
            f"the epoch cap ({max_epochs}) bound for {', '.join(capped)}: they were used "
            f"{max_epochs} times and the rest of their share went to the other domains in "
            "proportion to their weights"
        )
    return PackedData(input_ids[perm], domain_index[perm], domains, report)
