"""Materialize a mixture: the budgeted, epoch-capped sample of a corpus written as shards.

    cache = TokenCache.build(corpus, tokenizer, "work/tokens")
    materialize_mixture(corpus, cache, "mixture.yaml", "out/", budget=2_000_000_000)

Which documents: each domain's share of the budget comes from `allocate_tokens` (epoch caps,
the excess redistributed by default, see `assay.common.budget`). A domain given T tokens of
its n is used floor(T / n) times whole, and the rest is the shortest prefix of a seeded
permutation of its documents holding at least the remaining tokens: a domain's tokens match
its share to within one document (the last one taken), and the same seed takes the same
documents. Without a budget every document of the mixture's domains is taken once (the whole
corpus tokenized, for a trainer that samples the mixture itself from `assay export`).

What is written, per domain (folders named from the domain), one part per pass: part k holds
the documents used more than k times, in corpus order:

    out/text/<domain>/part-00000.jsonl.zst       the records as they were read (all fields)
    out/megatron/<domain>/part-00000.bin, .idx   Megatron's indexed dataset (`indexed.py`)
    out/datatrove/<domain>/part-00000.ds, .ds.index, .ds.metadata   what nanotron reads
    out/materialize.json                         the manifest: the plan and every file

A part's token files hold exactly the tokens of its text file's documents (each followed by
EOS, as in the token cache), in the same order. Nothing is shuffled: the trainers shuffle
(Megatron's GPTDataset and OLMo-core per epoch, nanotron's index). The corpus is read once
for the text, the token cache once per pass (memory-mapped); memory holds a batch and a few
bytes per document. Every file is written under a temporary name and renamed when complete;
the manifest is written last, and a folder whose manifest matches the request is reused.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.common.budget import OnCap, allocate_tokens
from assay.common.mixture import Mixture, resolve_mixture
from assay.common.tokens import ALL_DOMAINS, TokenCache
from assay.errors import ConfigError, InputError, StateError
from assay.export.indexed import IndexedWriter, token_dtype
from assay.export.raw import DatatroveWriter
from assay.export.settings import MaterializeSettings
from assay.io.corpus import Corpus
from assay.io.write import ShardWriter
from assay.util.files import read_json, write_json
from assay.util.hashing import config_hash
from assay.util.remote import local_path, unpublish

MANIFEST = "materialize.json"
FORMATS: tuple[str, ...] = ("text", "megatron", "datatrove")
DOCS_PER_WRITE = 4096


def materialize_mixture(
    corpus: Corpus,
    cache: TokenCache,
    mixture: Mixture | Mapping[str, float] | str | os.PathLike,
    out: str | os.PathLike,
    settings: MaterializeSettings | None = None,
    *,
    tokenizer_name: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Write the sample of `mixture` that `budget` tokens buy (see the module); returns the
    manifest. `cache` is the corpus tokenized (`TokenCache.build`): its counts decide the
    sample and its ids fill the token files. `settings` (or keyword arguments, which
    override it) are `MaterializeSettings`; a seed of None is 0. `mixture` may also be
    'natural', 'uniform' or 'domain=weight,...'."""
    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = MaterializeSettings.model_validate({**base, **options})
    budget, max_epochs, on_cap = cfg.budget, cfg.max_epochs, cfg.on_cap
    seed = 0 if cfg.seed is None else cfg.seed
    formats = _check_formats(cfg.formats)
    text_format = cfg.text_format
    mix = resolve_mixture(mixture, {d: t.n_tokens for d, t in cache.domains.items()})
    corpus.check_output(out, "materialized mixture")
    root = Path(local_path(out))  # a remote folder: its mirror, published file by file
    _check_cache(corpus, cache)
    identity = {
        "cache": cache.meta["identity"],
        "mixture": mix.to_dict(),
        "budget": budget,
        "max_epochs": max_epochs,
        "on_cap": on_cap,
        "seed": seed,
        "formats": sorted(formats),
        "text_format": text_format,
    }
    if (root / MANIFEST).is_file():
        manifest = read_json(root / MANIFEST)
        if manifest.get("identity") == identity:
            return manifest
        _remove_listed(root, manifest)
    plans, plan_info = plan_sample(cache, mix, budget, max_epochs, on_cap, seed)
    folders = _folder_names(list(plans))
    files = _part_files(plans, folders, formats, text_format, cache)
    if "text" in formats:
        _write_text(corpus, cache, plans, root, files)
    _write_tokens(cache, plans, root, files, formats, tokenizer_name)
    manifest = {
        "identity": identity,
        **plan_info,
        "vocab_size": cache.vocab_size,
        "eos_id": cache.eos_id,
        "megatron_dtype": str(token_dtype(cache.vocab_size)),
        "datatrove_token_size": _token_size(cache.vocab_size),
        "domains": {
            d: {
                "folder": folders[d],
                "documents": int(plans[d].sum()),
                "unique_documents": int((plans[d] > 0).sum()),
                "tokens": sum(f["tokens"] for f in files[d]),
                "files": files[d],
            }
            for d in plans
        },
    }
    write_json(root / MANIFEST, manifest)
    return manifest


def _remove_listed(root: Path, manifest: dict[str, Any]) -> None:
    """The files of an earlier materialization (and only those), before writing another in
    their place: a part it had and this one has not must not stay behind. Its manifest goes
    first, so that no manifest ever lists a missing file."""
    (root / MANIFEST).unlink()
    unpublish(root / MANIFEST)
    for info in manifest.get("domains", {}).values():
        for part in info.get("files", []):
            names = [part.get("text")]
            if part.get("megatron"):
                names += [part["megatron"] + ".bin", part["megatron"] + ".idx"]
            if part.get("datatrove"):
                names += [part["datatrove"] + s for s in ("", ".index", ".metadata")]
            for name in filter(None, names):
                (root / name).unlink(missing_ok=True)
                unpublish(root / name)


def plan_sample(
    cache: TokenCache,
    mixture: Mixture,
    budget: int | None,
    max_epochs: float,
    on_cap: OnCap,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """How many times each document of each domain is used (uint16 per document)."""
    mixture.check_domains(cache.domains)
    domains = [d for d in mixture.domains if mixture[d] > 0]
    if budget is None:
        plans = {d: np.ones(cache.domains[d].n_docs, dtype=np.uint16) for d in domains}
        return plans, {"budget": None, "mixture": mixture.to_dict()}
    alloc = allocate_tokens(
        mixture,
        {d: cache.domains[d].n_tokens for d in domains},
        budget,
        max_epochs,
        on_cap=on_cap,
    )
    plans = {}
    for d in domains:
        rng = np.random.default_rng([seed, zlib.crc32(d.encode())])
        plans[d] = _domain_plan(np.diff(cache.domains[d].offsets), alloc.tokens[d], rng)
    info = {"mixture": mixture.to_dict(), "seed": seed, **alloc.to_dict()}
    if alloc.capped:
        info["cap_note"] = (
            f"the epoch cap ({max_epochs:g}) bound for {', '.join(alloc.capped)}: they are "
            "used that many times, and the rest of their share went to the other domains "
            "in proportion to their weights"
        )
    return plans, info


def _domain_plan(lengths: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Uses per document: `target // total` for all, plus one for the shortest seeded prefix
    of a permutation that holds the remaining tokens."""
    total = int(lengths.sum())
    if total == 0 or target == 0:
        return np.zeros(len(lengths), dtype=np.uint16)
    full, rest = divmod(int(target), total)
    if full + 1 > np.iinfo(np.uint16).max:
        raise ConfigError(f"a domain would be repeated {full + 1} times; lower max_epochs")
    uses = np.full(len(lengths), full, dtype=np.uint16)
    if rest:
        order = rng.permutation(len(lengths))
        k = int(np.searchsorted(np.cumsum(lengths[order]), rest, side="left")) + 1
        uses[order[:k]] += 1
    return uses


def _check_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ConfigError(f"formats are some of {', '.join(FORMATS)}, not {list(formats)}")
    return tuple(f for f in FORMATS if f in formats)


def _check_cache(corpus: Corpus, cache: TokenCache) -> None:
    """The cache must hold this corpus' documents in this order: its document k of a domain
    is the corpus' k-th document of that domain."""
    ident = cache.meta.get("identity", {})
    if ident.get("corpus") != [s.name for s in corpus.shards] or ident.get(
        "content"
    ) != config_hash([s.identity() for s in corpus.shards]):
        raise StateError(
            f"the token cache {cache.root} was not built from this corpus (or the corpus "
            "changed since): build it again from this corpus"
        )


def _folder_names(domains: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for d in domains:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", d).strip("._") or "domain"
        name, i = base, 1
        while name in names.values():
            name, i = f"{base}-{i}", i + 1
        names[d] = name
    return names


def _token_size(vocab_size: int) -> int:
    """datatrove's (and nanotron's) bytes per token: 2 while ids fit in uint16."""
    return 2 if vocab_size <= 1 << 16 else 4


def _part_files(
    plans: dict[str, np.ndarray],
    folders: dict[str, str],
    formats: tuple[str, ...],
    text_format: str,
    cache: TokenCache,
) -> dict[str, list[dict[str, Any]]]:
    """Each domain's parts: their files (relative to the output) and contents."""
    out: dict[str, list[dict[str, Any]]] = {}
    for d, uses in plans.items():
        lengths = np.diff(cache.domains[d].offsets)
        parts = []
        for k in range(int(uses.max(initial=0))):
            chosen = uses > k
            name = f"{folders[d]}/part-{k:05d}"
            part: dict[str, Any] = {
                "documents": int(chosen.sum()),
                "tokens": int(lengths[chosen].sum()),
            }
            if "text" in formats:
                part["text"] = f"text/{name}.{text_format.lstrip('.')}"
            if "megatron" in formats:
                part["megatron"] = f"megatron/{name}"
            if "datatrove" in formats:
                part["datatrove"] = f"datatrove/{name}.ds"
            parts.append(part)
        out[d] = parts
    return out


def _labels(batch: pl.DataFrame, column: str | None) -> np.ndarray:
    """Each row's domain, exactly as `TokenizeTask` labelled it for the cache."""
    if column and column in batch.columns:
        series = batch.get_column(column).cast(pl.String).fill_null("(none)")
        return series.to_numpy().astype(object)
    return np.full(batch.height, ALL_DOMAINS, dtype=object)


def _write_text(
    corpus: Corpus,
    cache: TokenCache,
    plans: dict[str, np.ndarray],
    root: Path,
    files: dict[str, list[dict[str, Any]]],
) -> None:
    """One pass over the corpus: each chosen record into the part of each of its uses."""
    column = cache.meta["identity"].get("domain_column")
    seen = dict.fromkeys(plans, 0)
    with contextlib.ExitStack() as stack:
        writers: dict[tuple[str, int], ShardWriter] = {}
        for batch in corpus.iter_batches():
            labels = _labels(batch, column)
            for d in plans:
                rows = np.flatnonzero(labels == d)
                if not len(rows):
                    continue
                uses = plans[d][seen[d] : seen[d] + len(rows)]
                seen[d] += len(rows)
                for k in range(int(uses.max(initial=0))):
                    if (d, k) not in writers:
                        final = root / files[d][k]["text"]
                        writers[d, k] = stack.enter_context(
                            ShardWriter.atomic(final, corpus.options)
                        )
                    writers[d, k].write(batch[rows[uses > k].tolist()])
    short = {
        d: (n, cache.domains[d].n_docs) for d, n in seen.items() if n != cache.domains[d].n_docs
    }
    if short:
        raise StateError(
            f"the corpus and its token cache disagree on documents per domain: {short}"
        )


def _write_tokens(
    cache: TokenCache,
    plans: dict[str, np.ndarray],
    root: Path,
    files: dict[str, list[dict[str, Any]]],
    formats: tuple[str, ...],
    tokenizer_name: str | None,
) -> None:
    if "megatron" not in formats and "datatrove" not in formats:
        return
    for d, uses in plans.items():
        dom = cache.domains[d]
        for k, part in enumerate(files[d]):
            chosen = np.flatnonzero(uses > k)
            with contextlib.ExitStack() as stack:
                sinks: list[Any] = []
                if "megatron" in formats:
                    sinks.append(
                        stack.enter_context(
                            IndexedWriter(root / part["megatron"], token_dtype(cache.vocab_size))
                        )
                    )
                if "datatrove" in formats:
                    sinks.append(
                        stack.enter_context(
                            DatatroveWriter(
                                root / part["datatrove"],
                                _token_size(cache.vocab_size),
                                tokenizer_name,
                            )
                        )
                    )
                for start in range(0, len(chosen), DOCS_PER_WRITE):
                    docs = chosen[start : start + DOCS_PER_WRITE]
                    lo, hi = dom.offsets[docs], dom.offsets[docs + 1]
                    tokens = np.concatenate([dom.tokens[a:b] for a, b in zip(lo, hi, strict=True)])
                    for sink in sinks:
                        sink.add_many(tokens, hi - lo)
            if any(s.tokens != part["tokens"] for s in sinks):  # pragma: no cover - invariant
                raise InputError(f"{d}: the token files do not hold the planned tokens")
