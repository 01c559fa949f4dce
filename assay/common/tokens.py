"""A corpus tokenized once: token ids grouped by domain, memory-mapped."""

from __future__ import annotations

import contextlib
import io
import logging
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
from assay.util.files import atomic_path, iter_parquet, read_json, write_json
from assay.util.hashing import config_hash

ALL_DOMAINS = "all"

log = logging.getLogger(__name__)


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
                log.info("token cache %s: built before, reused", r)
                return cls.open(r)
            raise StateError(
                f"{r} holds tokens of another corpus, tokenizer or version of this corpus "
                "(a shard changed since); use another folder or overwrite"
            )
        runner = runner or LocalRunner(workers=1)
        task = TokenizeTask(backend, int(eos_id), corpus.options, domain_column)
        runner.run(task, corpus.shards, r / "_shards", overwrite=overwrite, label="tokenize")
        vocab = backend.get_vocab_size(with_added_tokens=True)
        dtype = np.uint16 if vocab <= 1 << 16 else np.uint32
        files = [r / "_shards" / task.output_name(s) for s in corpus.shards]
        domains_meta = _write_domains(r, files, dtype)
        write_json(
            r / cls.META,
            {
                "identity": identity,
                "vocab_size": vocab,
                "eos_id": int(eos_id),
                "domains": dict(sorted(domains_meta.items())),
            },
        )
        cache = cls.open(r)
        log.info(
            "token cache %s: %s documents, %s tokens in %d domains",
            r,
            f"{sum(t.n_docs for t in cache.domains.values()):,}",
            f"{sum(t.n_tokens for t in cache.domains.values()):,}",
            len(cache.domains),
        )
        return cache


def _write_domains(root: Path, files: list[Path], dtype: type) -> dict[str, Any]:
    """Append each domain's tokens and document offsets to its .npy files, a batch of the
    tokenized shards at a time: memory holds a batch, whatever the size of the corpus. Domains
    are numbered in order of first appearance; the files are published only if all succeed."""
    domains: dict[str, _DomainFiles] = {}
    with contextlib.ExitStack() as stack:
        for f in files:
            for part in iter_parquet(f, ["domain", "n_bytes", "tokens"]):
                for rows in part.partition_by("domain", maintain_order=True):
                    domain = rows.get_column("domain")[0]
                    if domain not in domains:
                        name = f"d{len(domains):03d}"
                        domains[domain] = _DomainFiles(
                            name,
                            stack.enter_context(atomic_path(root / f"{name}.tokens.npy")),
                            stack.enter_context(atomic_path(root / f"{name}.offsets.npy")),
                            dtype,
                        )
                    domains[domain].add(rows)
        if not domains:
            raise InputError("the corpus has no documents to tokenize")
        return {domain: files.close() for domain, files in domains.items()}


class _DomainFiles:
    """One domain's tokens (each document followed by EOS) and its n_docs + 1 offsets."""

    def __init__(self, name: str, tokens: Path, offsets: Path, dtype: type):
        self.name, self.docs, self.bytes = name, 0, 0
        self.tokens = _NpyAppender(tokens, dtype)
        self.offsets = _NpyAppender(offsets, np.int64)
        self.offsets.append(np.zeros(1, dtype=np.int64))

    def add(self, rows: pl.DataFrame) -> None:
        column = rows.get_column("tokens")
        start = self.tokens.length
        self.tokens.append(column.explode().to_numpy())
        self.offsets.append(np.cumsum(column.list.len().to_numpy(), dtype=np.int64) + start)
        self.docs += rows.height
        self.bytes += int(rows.get_column("n_bytes").sum())

    def close(self) -> dict[str, Any]:
        self.tokens.close()
        self.offsets.close()
        return {
            "file": self.name,
            "docs": self.docs,
            "tokens": self.tokens.length,
            "bytes": self.bytes,
        }


class _NpyAppender:
    """A 1-D .npy file written a piece at a time; `close()` puts the final length in its header.

    numpy pads a header so that the length of its first axis can grow in place, so the file
    ends byte for byte as `np.save` would write the whole array."""

    def __init__(self, path: Path, dtype: type):
        self.path, self.dtype, self.length = path, np.dtype(dtype), 0
        self.header = self._header()
        path.write_bytes(self.header)

    def _header(self) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.length,),
            },
        )
        return buf.getvalue()

    def append(self, values: np.ndarray) -> None:
        with open(self.path, "ab") as f:  # opened per piece: a corpus may have many domains
            np.ascontiguousarray(values, dtype=self.dtype).tofile(f)
        self.length += len(values)

    def close(self) -> None:
        header = self._header()
        if len(header) != len(self.header):  # pragma: no cover - numpy leaves room for this
            raise StateError(f"the .npy header of {self.path} cannot take {self.length} items")
        with open(self.path, "r+b") as f:
            f.write(header)
