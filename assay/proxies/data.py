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

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay._files import atomic_path, config_hash, read_json, write_json
from assay.corpus import Corpus, ReadOptions, Shard, ShardStats, ShardWriter
from assay.mixing.mixture import Mixture
from assay.runner import LocalRunner, Runner, report_progress

ALL_DOMAINS = "all"


def _backend(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a transformers fast tokenizer (or itself)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    return config_hash(_backend(tokenizer).to_str())


@dataclass
class TokenizeTask:
    """Per shard: token ids, UTF-8 bytes and domain of every document."""

    tokenizer: Any  # tokenizers.Tokenizer (picklable)
    eos_id: int
    options: ReadOptions
    domain_column: str | None

    def output_name(self, shard: Shard) -> str:
        return f"{shard.stem}.parquet"

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        assert out is not None
        stats = ShardStats(shard.name)
        writer = ShardWriter(out, fmt="parquet")
        for batch in shard.read(self.options, stats):
            texts = batch.get_column("text").to_list()
            ids = [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
            domain = (
                batch.get_column(self.domain_column).cast(pl.String).fill_null("(none)")
                if self.domain_column and self.domain_column in batch.columns
                else pl.repeat(ALL_DOMAINS, batch.height, dtype=pl.String, eager=True)
            )
            writer.write(
                pl.DataFrame(
                    {
                        "domain": domain,
                        "n_bytes": batch.get_column("text").str.len_bytes(),
                        "tokens": pl.Series(
                            [[*t, self.eos_id] for t in ids], dtype=pl.List(pl.UInt32)
                        ),
                    }
                )
            )
            stats.docs_out += batch.height
            report_progress(batch.height)
        writer.close(
            schema_if_empty={
                "domain": pl.String,
                "n_bytes": pl.UInt32,
                "tokens": pl.List(pl.UInt32),
            }
        )
        return stats


@dataclass
class DomainTokens:
    tokens: np.ndarray  # all documents of the domain, each followed by EOS
    offsets: np.ndarray  # n_docs + 1 document boundaries into `tokens`
    n_bytes: int

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


class TokenCache:
    """Tokenized documents grouped by domain, stored as .npy files (memory-mapped on open)."""

    META = "meta.json"

    def __init__(self, root: Path, meta: dict[str, Any], domains: dict[str, DomainTokens]):
        self.root, self.meta, self.domains = root, meta, domains

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            d: {"docs": t.n_docs, "tokens": t.n_tokens, "bytes": t.n_bytes}
            for d, t in self.domains.items()
        }

    @classmethod
    def open(cls, root: str | os.PathLike) -> TokenCache:
        r = Path(root)
        if not (r / cls.META).exists():
            raise FileNotFoundError(f"{r} is not a token cache (no {cls.META})")
        meta = read_json(r / cls.META)
        domains = {
            d: DomainTokens(
                np.load(r / f"{info['file']}.tokens.npy", mmap_mode="r"),
                np.load(r / f"{info['file']}.offsets.npy"),
                int(info["bytes"]),
            )
            for d, info in meta["domains"].items()
        }
        return cls(r, meta, domains)

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        tokenizer: Any,
        root: str | os.PathLike,
        *,
        domain_column: str | None = "domain",
        runner: Runner | None = None,
        overwrite: bool = False,
    ) -> TokenCache:
        """Tokenize `corpus` into `root`, or open it if it was built with the same tokenizer."""
        r = Path(root)
        backend = _backend(tokenizer)
        eos_id = tokenizer.eos_token_id if hasattr(tokenizer, "eos_token_id") else None
        if eos_id is None:
            raise ValueError("the tokenizer has no EOS token; documents could not be separated")
        corpus.check_output(r, "token cache")
        identity = {
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "corpus": [s.name for s in corpus.shards],
            "domain_column": domain_column,
            # the shards' content: a cache of a corpus edited since is not that corpus' tokens
            "content": config_hash([s.identity() for s in corpus.shards]),
        }
        if (r / cls.META).exists() and not overwrite:
            meta = read_json(r / cls.META)
            if meta.get("identity") == identity:
                return cls.open(r)
            raise ValueError(
                f"{r} holds tokens of another corpus, tokenizer or version of this corpus "
                "(a shard changed since); use another folder or overwrite"
            )
        runner = runner or LocalRunner(workers=1)
        task = TokenizeTask(backend, int(eos_id), corpus.options, domain_column)
        runner.run(task, corpus.shards, r / "_shards", overwrite=overwrite, label="tokenize")
        parts = [pl.read_parquet(r / "_shards" / task.output_name(s)) for s in corpus.shards]
        table = pl.concat(parts) if parts else pl.DataFrame()
        if table.height == 0:
            raise ValueError("the corpus has no documents to tokenize")
        vocab = backend.get_vocab_size(with_added_tokens=True)
        dtype = np.uint16 if vocab <= 1 << 16 else np.uint32
        domains_meta: dict[str, Any] = {}
        for i, (domain,) in enumerate(
            table.select("domain").unique(maintain_order=True).iter_rows()
        ):
            rows = table.filter(pl.col("domain") == domain)
            lengths = rows.get_column("tokens").list.len().to_numpy()
            tokens = rows.get_column("tokens").explode().to_numpy().astype(dtype)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            name = f"d{i:03d}"
            _save_npy(r / f"{name}.tokens.npy", tokens)
            _save_npy(r / f"{name}.offsets.npy", offsets)
            domains_meta[domain] = {
                "file": name,
                "docs": len(lengths),
                "tokens": len(tokens),
                "bytes": int(rows.get_column("n_bytes").sum()),
            }
        write_json(
            r / cls.META,
            {
                "identity": identity,
                "vocab_size": vocab,
                "eos_id": int(eos_id),
                "domains": dict(sorted(domains_meta.items())),
            },
        )
        return cls.open(r)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


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
    """Sequences per domain: proportional to `weights`, none above `available`, summing to `total`."""
    if available[weights > 0].sum() < total:
        raise ValueError(
            f"the budget needs {total:,} sequences but the domains of the mixture can give at most "
            f"{int(available[weights > 0].sum()):,} within their epoch caps; lower the budget, raise "
            "max_epochs, or add domains"
        )
    target = weights / weights.sum() * total
    capped = np.zeros(len(weights), dtype=bool)
    while True:
        over = (target > available + 1e-9) & ~capped
        if not over.any():
            break
        capped |= over
        target[capped] = available[capped]
        free = ~capped & (weights > 0)
        left = total - target[capped].sum()
        target[free] = weights[free] / weights[free].sum() * left
    capped_names = [domains[i] for i in np.flatnonzero(capped)]
    if capped_names and on_cap == "error":
        raise ValueError(
            f"the epoch cap binds for {capped_names}: their share of the budget needs more repetitions than max_epochs allows"
        )
    # Largest remainder rounding, never above what is available.
    counts = np.floor(target).astype(np.int64)
    short = total - counts.sum()
    order = np.argsort(-(target - counts), kind="stable")
    for i in order:
        if short <= 0:
            break
        if counts[i] < available[i] and weights[i] > 0:
            counts[i] += 1
            short -= 1
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
    """Pack `tokens` tokens (rounded down to whole sequences) from the cache in `mixture` proportions."""
    if on_cap not in ("redistribute", "error"):
        raise ValueError("on_cap must be 'redistribute' or 'error'")
    if seq_len < 2:
        raise ValueError("seq_len must be at least 2")
    total = tokens // seq_len
    if total < 1:
        raise ValueError(f"a budget of {tokens} tokens is less than one sequence of {seq_len}")
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
            f"the epoch cap ({max_epochs}) bound for {', '.join(capped)}: they were used {max_epochs} times "
            "and the rest of their share went to the other domains in proportion to their weights"
        )
    return PackedData(input_ids[perm], domain_index[perm], domains, report)
