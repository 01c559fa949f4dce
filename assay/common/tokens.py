"""A corpus tokenized once: token ids grouped by domain, memory-mapped."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.errors import InputError, MissingError, StateError
from assay.exec.runner import LocalRunner, Runner, report_progress
from assay.io.corpus import Corpus
from assay.io.shards import ReadOptions, Shard, ShardStats
from assay.io.write import ShardWriter
from assay.util.files import atomic_path, read_json, write_json
from assay.util.hashing import config_hash

ALL_DOMAINS = "all"


def backend_tokenizer(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a transformers fast tokenizer (or itself)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    return config_hash(backend_tokenizer(tokenizer).to_str())


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
            raise MissingError(f"{r} is not a token cache (no {cls.META})")
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
        backend = backend_tokenizer(tokenizer)
        eos_id = tokenizer.eos_token_id if hasattr(tokenizer, "eos_token_id") else None
        if eos_id is None:
            raise InputError("the tokenizer has no EOS token; documents could not be separated")
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
            raise StateError(
                f"{r} holds tokens of another corpus, tokenizer or version of this corpus "
                "(a shard changed since); use another folder or overwrite"
            )
        runner = runner or LocalRunner(workers=1)
        task = TokenizeTask(backend, int(eos_id), corpus.options, domain_column)
        runner.run(task, corpus.shards, r / "_shards", overwrite=overwrite, label="tokenize")
        parts = [pl.read_parquet(r / "_shards" / task.output_name(s)) for s in corpus.shards]
        table = pl.concat(parts) if parts else pl.DataFrame()
        if table.height == 0:
            raise InputError("the corpus has no documents to tokenize")
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
