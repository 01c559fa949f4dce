"""Deduplication, exact and near (MinHash + LSH), as side-car score columns.

`dedup_corpus(corpus, out_dir, settings, runner=...)` writes a scores folder (readable by
`ScoreSet`, like any scorer's) with, per shard, `id` and:

* `dup_exact` (1.0: a later copy, to drop; 0.0: keep) and `dup_group` (int64: the hash of the
  normalised text, the same for every copy) — text normalised as lower case, whitespace runs
  collapsed to one space, stripped (so that copies differing only in case or spacing are one
  group; hashing the raw text would keep them apart);
* `dup_near` (1.0: in a cluster of near duplicates and not its kept member) and `dup_cluster`
  (int64: the id hash of the cluster's kept document; a document alone is its own cluster).
  A document with no words once normalised (punctuation only) is never a near copy.

Keep one of each group with `assay select --column dup_exact --policy threshold --threshold 0
--mode bottom` (or `dup_near`): `threshold` keeps scores <= 0 in mode bottom.

Three steps, as selection's:
    1. *keys* (per shard, through the runner, resumed by content): a stable hash of each id,
       of its normalised text and, for near dedup, its MinHash signature (`num_perm` uint32,
       kept for verification and reuse) and one 64-bit hash per LSH band, to `_dedup/keys/`.
    2. *decide* (global): near, one band column at a time (8 bytes per document) sorted to
       find equal band hashes, and a union-find parent array (8 bytes per document) that
       links each document to the first of its band bucket; then the clusters, and the exact
       groups (text hashes), ranked by id hash. No ids, signatures or text in memory: about
       52 bytes per document at the peak (benchmarks/dedup_throughput.py measures it).
    3. *write*: each shard's keys are streamed again to write its side-car, atomically.

The kept document of a group or cluster is the one with the smallest id hash (ties — the same
id in two shards — by shard order, then row), so the result is the same whatever the worker
count, and whatever the order of the shards when ids are unique.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from assay.errors import StateError
from assay.exec.runner import STATS_DIR, LocalRunner, Runner, report_progress
from assay.io.corpus import Corpus
from assay.io.scores import SCORES_META, check_unique_ids
from assay.io.shards import ReadOptions, Shard, ShardStats
from assay.io.write import ShardWriter
from assay.selection.minhash import band_hashes, optimal_bands, signatures_and_words
from assay.util.config import Strict
from assay.util.files import (
    atomic_path,
    concat_column,
    iter_parquet,
    parquet_rows,
    read_json,
    write_json,
)
from assay.util.guard import folder_lock, mark_output
from assay.util.hashing import config_hash, mix64, stable_hash64

DEDUP_DIR = "_dedup"
DEDUP_FILE = "_dedup.json"
EXACT_COLUMNS = ["dup_exact", "dup_group"]
NEAR_COLUMNS = ["dup_near", "dup_cluster"]


class DedupSettings(Strict):
    """Which duplicates to mark, and how near is near."""

    exact: bool = Field(True, description="Mark exact copies (normalised text): dup_exact.")
    near: bool = Field(True, description="Mark near copies (MinHash + LSH): dup_near.")
    threshold: float = Field(
        0.8, gt=0, lt=1, description="Jaccard similarity of word shingles that makes a near copy."
    )
    num_perm: int = Field(128, ge=2, le=1024, description="MinHash permutations.")
    ngram: int = Field(5, ge=1, le=32, description="Words per shingle.")
    bands: int | None = Field(
        None, ge=1, description="LSH bands (default: datasketch's optimum for the threshold)."
    )
    rows: int | None = Field(None, ge=1, description="Rows per band (with bands).")
    seed: int = Field(1, description="Seed of the MinHash permutations.")
    verify: bool = Field(
        False,
        description="Join a candidate pair only if its signatures agree on >= threshold of "
        "their values (reads the candidates' signatures, 4 x num_perm bytes each, per band).",
    )

    @model_validator(mode="after")
    def _check(self) -> DedupSettings:
        if not (self.exact or self.near):
            raise ValueError("dedup needs exact or near (or both)")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands is not None and self.bands * (self.rows or 0) > self.num_perm:
            raise ValueError(f"bands * rows must be at most num_perm ({self.num_perm})")
        return self

    def banding(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm)

    @property
    def columns(self) -> list[str]:
        return (EXACT_COLUMNS if self.exact else []) + (NEAR_COLUMNS if self.near else [])


def exact_hashes(texts: list[str]) -> np.ndarray:
    """64-bit hashes of the texts lower-cased, whitespace runs collapsed, stripped."""
    return stable_hash64([" ".join(t.lower().split()) for t in texts])


@dataclass
class DedupKeysTask:
    """Step 1: per document, its id hash, text hash, and MinHash signature and band hashes."""

    settings: DedupSettings
    options: ReadOptions

    def output_name(self, shard: Shard) -> str:
        return f"{shard.stem}.parquet"

    def source(self, shard: Shard) -> dict[str, Any]:
        s = self.settings
        return {"keys": "dedup-2", "near": s.near, "sig": [s.num_perm, s.ngram, s.seed]}

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        assert out is not None
        s = self.settings
        bands, rows = s.banding()
        stats = ShardStats(shard.name)
        writer = ShardWriter(out, fmt="parquet")
        seen: list[pl.Series] = []
        for batch in shard.read(self.options, stats):
            ids = batch.get_column("id")
            seen.append(ids)
            texts = batch.get_column("text").to_list()
            cols: dict[str, Any] = {
                "id": ids,
                "id_hash": stable_hash64(ids.to_list()),
                "text_hash": exact_hashes(texts),
            }
            if s.near:
                sig, words = signatures_and_words(texts, s.num_perm, s.ngram, s.seed)
                bh = band_hashes(sig, bands, rows)
                # a document without words (punctuation only) is nobody's near copy
                empty = np.flatnonzero(words == 0)
                for b in range(bands):
                    bh[empty, b] = mix64(cols["id_hash"][empty], 1 + b)
                for b in range(bands):
                    cols[f"band_{b}"] = bh[:, b]
                cols["sig"] = pl.Series([r.tobytes() for r in sig], dtype=pl.Binary)
            writer.write(pl.DataFrame(cols))
            stats.docs_out += batch.height
            report_progress(batch.height)
        check_unique_ids(seen, shard)
        schema: dict[str, Any] = {"id": pl.String, "id_hash": pl.UInt64, "text_hash": pl.UInt64}
        if s.near:
            schema |= {f"band_{b}": pl.UInt64 for b in range(bands)} | {"sig": pl.Binary}
        writer.close(schema_if_empty=schema)
        return stats


def first_of_groups(group: np.ndarray, id_hash: np.ndarray) -> np.ndarray:
    """True for the document each group keeps: the smallest id hash, ties by position."""
    order = np.lexsort((id_hash, group))  # stable: equal keys stay in position order
    g = group[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    keep = np.zeros(len(g), dtype=bool)
    keep[order[first]] = True
    return keep


def _roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    r = parent[x]
    while True:
        up = parent[r]
        if np.array_equal(up, r):
            return r
        r = up


def union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the sets of a[i] and b[i] for every i; a root always points to a smaller index."""
    while len(a):
        ra, rb = _roots(parent, a), _roots(parent, b)
        diff = ra != rb
        if not diff.any():
            return
        a, b, ra, rb = a[diff], b[diff], ra[diff], rb[diff]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))


def near_clusters(
    files: list[Path], bands: int, verify: float | None = None, num_perm: int = 128
) -> np.ndarray:
    """The root (smallest member's position) of every document's near-duplicate cluster.

    With `verify`, a candidate pair joins only if its signatures agree on at least that
    fraction of permutations (the estimated Jaccard similarity)."""
    n = sum(parquet_rows(f) for f in files)
    parent = np.arange(n, dtype=np.int64)
    for b in range(bands):
        h = concat_column(files, f"band_{b}", np.uint64)
        order = np.argsort(h, kind="stable")
        h = h[order]
        same = np.flatnonzero(h[1:] == h[:-1]) + 1  # sorted positions equal to the previous
        del h
        if len(same):
            starts = np.arange(n, dtype=np.int64)
            starts[same] = 0
            np.maximum.accumulate(starts, out=starts)  # each position's bucket start
            heads, members = order[starts[same]], order[same]
            del starts, order
            if verify is not None:
                ok = _similar(files, heads, members, verify, num_perm)
                heads, members = heads[ok], members[ok]
            union(parent, heads, members)
        else:
            del order
    while True:  # pointer jumping to the roots
        up = parent[parent]
        if np.array_equal(up, parent):
            return parent
        parent = up


def _similar(
    files: list[Path], a: np.ndarray, b: np.ndarray, threshold: float, num_perm: int
) -> np.ndarray:
    """Whether the signatures of documents a[i] and b[i] agree on >= threshold of their values
    (the signatures of the documents named are read, 4 * num_perm bytes each)."""
    idx = np.unique(np.concatenate([a, b]))
    sigs = _gather_signatures(files, idx, num_perm)
    pa, pb = np.searchsorted(idx, a), np.searchsorted(idx, b)
    ok = np.empty(len(a), dtype=bool)
    for lo in range(0, len(a), 1 << 14):
        hi = lo + (1 << 14)
        agree = (sigs[pa[lo:hi]] == sigs[pb[lo:hi]]).mean(axis=1)
        ok[lo:hi] = agree >= threshold
    return ok


def _gather_signatures(files: list[Path], idx: np.ndarray, num_perm: int) -> np.ndarray:
    """The signatures of the documents at sorted global positions `idx`: (len(idx), num_perm)."""
    out = np.empty((len(idx), num_perm), dtype=np.uint32)
    at = done = 0
    for f in files:
        rows = parquet_rows(f)
        end = done + int(np.searchsorted(idx[done:], at + rows))
        if end > done:
            for part in iter_parquet(f, ["sig"]):
                lo = int(np.searchsorted(idx, at))
                hi = int(np.searchsorted(idx, at + part.height))
                if hi > lo:
                    chosen = part.get_column("sig").gather(idx[lo:hi] - at).to_list()
                    out[lo:hi] = np.frombuffer(b"".join(chosen), dtype=np.uint32).reshape(
                        hi - lo, num_perm
                    )
                at += part.height
        else:
            at += rows
        done = end
    return out


@dataclass
class _Decision:
    exact_drop: np.ndarray | None
    group: np.ndarray | None
    near_drop: np.ndarray | None
    cluster: np.ndarray | None


def _decide(files: list[Path], s: DedupSettings) -> _Decision:
    """Near clusters first (their band passes need no id hashes), then the ranks by id hash."""
    d = _Decision(None, None, None, None)
    verify = s.threshold if s.verify else None
    root = near_clusters(files, s.banding()[0], verify, s.num_perm) if s.near else None
    id_hash = concat_column(files, "id_hash", np.uint64)
    if root is not None:
        kept = first_of_groups(root, id_hash)
        rep = np.zeros(len(root), dtype=np.uint64)
        rep[root[kept]] = id_hash[kept]
        d.cluster = rep[root]
        del rep, root
        d.near_drop = ~kept
    if s.exact:
        d.group = concat_column(files, "text_hash", np.uint64)
        d.exact_drop = ~first_of_groups(d.group, id_hash)
    return d


def _write_sidecars(shards: list[Shard], files: list[Path], d: _Decision, out: Path) -> None:
    at = 0
    for shard, f in zip(shards, files, strict=True):
        with atomic_path(out / f"{shard.stem}.parquet") as tmp:
            writer = ShardWriter(tmp, fmt="parquet")
            schema: dict[str, Any] = {"id": pl.String}
            for part in iter_parquet(f, ["id"]):
                cols: dict[str, Any] = {"id": part.get_column("id")}
                sl = slice(at, at + part.height)
                at += part.height
                if d.exact_drop is not None and d.group is not None:
                    cols["dup_exact"] = d.exact_drop[sl].astype(np.float32)
                    cols["dup_group"] = d.group[sl].view(np.int64)
                if d.near_drop is not None and d.cluster is not None:
                    cols["dup_near"] = d.near_drop[sl].astype(np.float32)
                    cols["dup_cluster"] = d.cluster[sl].view(np.int64)
                writer.write(pl.DataFrame(cols))
            if d.exact_drop is not None:
                schema |= {"dup_exact": pl.Float32, "dup_group": pl.Int64}
            if d.near_drop is not None:
                schema |= {"dup_near": pl.Float32, "dup_cluster": pl.Int64}
            writer.close(schema_if_empty=schema)


def _summary(d: _Decision, s: DedupSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": s.model_dump()}
    for name, drop in (("exact", d.exact_drop), ("near", d.near_drop)):
        if drop is not None:
            out["docs"] = len(drop)
            out[f"{name}_duplicates"] = int(drop.sum())
    if d.group is not None and d.exact_drop is not None:
        out["exact_groups"] = len(np.unique(d.group[d.exact_drop]))
    if d.cluster is not None and d.near_drop is not None:
        out["near_clusters"] = len(np.unique(d.cluster[d.near_drop]))
        out["bands"], out["rows"] = s.banding()
    return out


def dedup_corpus(
    corpus: Corpus,
    out_dir: str | os.PathLike,
    settings: DedupSettings | None = None,
    *,
    runner: Runner | None = None,
    overwrite: bool = False,
    **settings_kwargs: Any,
) -> dict[str, Any]:
    """Mark the exact and near duplicates of `corpus` in a scores folder `out_dir`; the summary.

    Resumes by content: a shard whose keys are current is not read again, and the global
    decision is redone only when some shard's keys changed. Other settings in the same folder
    raise unless `overwrite=True`."""
    s = settings or DedupSettings(**settings_kwargs)
    runner = runner or LocalRunner(workers=1)
    out = Path(out_dir)
    corpus.check_output(out, "dedup folder")
    with folder_lock(out):
        mark_output(out, "scores")
        meta: dict[str, Any] = {
            "columns": s.columns,
            "scorer": {"type": "dedup", "config": s.model_dump()},
        }
        meta_path = out / SCORES_META
        old = read_json(meta_path) if meta_path.exists() else None
        if old is not None and {k: old.get(k) for k in meta} != meta and not overwrite:
            raise StateError(
                f"{out} holds scores made with other settings; use overwrite=True "
                "(--overwrite) or another folder"
            )
        if overwrite:
            shutil.rmtree(out / DEDUP_DIR, ignore_errors=True)
            (out / DEDUP_FILE).unlink(missing_ok=True)
        if (where := corpus.record()) is not None:  # what `assay inspect` reads texts from
            meta["corpus"] = where
        write_json(meta_path, meta)
        return _dedup(corpus, out, s, runner)


def _dedup(corpus: Corpus, out: Path, s: DedupSettings, runner: Runner) -> dict[str, Any]:
    keys_dir = out / DEDUP_DIR / "keys"
    keys = runner.run(DedupKeysTask(s, corpus.options), corpus.shards, keys_dir, label="dedup:keys")
    keys_id = config_hash(
        [read_json(keys_dir / STATS_DIR / f"{sh.name}.json")["source"] for sh in corpus.shards]
    )
    summary_path = out / DEDUP_FILE
    if (
        summary_path.exists()
        and read_json(summary_path).get("keys") == keys_id
        and all((out / f"{sh.stem}.parquet").exists() for sh in corpus.shards)
    ):
        return read_json(summary_path)
    summary_path.unlink(missing_ok=True)
    files = [keys_dir / f"{sh.stem}.parquet" for sh in corpus.shards]
    decision = _decide(files, s)
    _write_sidecars(corpus.shards, files, decision, out)
    summary = {**_summary(decision, s), "keys": keys_id, "skipped": keys.skipped}
    summary.setdefault("docs", 0)
    write_json(summary_path, summary)
    return read_json(summary_path)
