"""select's global decision: the kept mask from every shard's keys, a few numbers per document.

The keys (`assay.selection.select.KEYS_SCHEMA`, with a `passed` column when a filter
expression was applied) are read a column at a time, only the rows that passed the filter, into
arrays that are handed over to the sort (`policies.cut_owned`, or `cut_groups_owned` for a
stratified selection), which frees each as soon as it has used it. `record_decision` then
streams the keys again to write each shard's kept rows and to sum the summary (`Tally`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from assay.io.shards import Shard
from assay.io.write import ShardWriter
from assay.selection.policies import (
    add_gumbel_noise,
    cut_groups_owned,
    cut_owned,
    middle_key_owned,
    threshold_mask,
)
from assay.util.files import atomic_path, concat_column, iter_parquet
from assay.util.hashing import mix64


class Rules(Protocol):
    """The settings a decision reads (`assay.selection.select.SelectConfig`'s)."""

    policy: str
    keep: float | None
    mode: str
    threshold: float | None
    tau: float
    seed: int | None
    where: str | None
    keep_of: str
    stratify: bool


#: what the decision writes per shard: the kept ids and their rows, in shard order
KEEP_SCHEMA = {"id": pl.String, "row": pl.Int64}

#: documents per block of the in-place conversions of `decide`
_BLOCK = 1 << 16


@dataclass
class Census:
    """What one pass over the keys' `passed`, `weight` and `group` columns finds."""

    passed: int = 0  # documents that passed the filter (all of them without one)
    weight: float = 0.0  # the weight of every document
    passed_weight: float = 0.0
    #: per group (stratified selections only): its weight, and the weight that passed
    groups: dict[str, list[float]] = field(default_factory=dict)

    def codes(self) -> dict[str, int]:
        """Each group's code: its rank among the group names (not the shard order)."""
        return {g: i for i, g in enumerate(sorted(self.groups))}


def census(files: Sequence[Path], filtered: bool, by_group: bool) -> Census:
    c = Census()
    columns = ["weight", *(["passed"] if filtered else []), *(["group"] if by_group else [])]
    for f in files:
        for part in iter_parquet(f, columns):
            passed = (
                part.get_column("passed") if filtered else pl.repeat(True, part.height, eager=True)
            )
            part = part.with_columns(passed.alias("passed"))
            c.passed += int(part.get_column("passed").sum())
            c.weight += float(part.get_column("weight").sum())
            c.passed_weight += float(part.filter(pl.col("passed")).get_column("weight").sum())
            if by_group:
                sums = part.group_by("group").agg(
                    pl.col("weight").sum(),
                    pl.col("weight").filter(pl.col("passed")).sum().alias("p"),
                )
                for g, w, p in sums.iter_rows():
                    acc = c.groups.setdefault(g, [0.0, 0.0])
                    acc[0] += w
                    acc[1] += p
    return c


def read_passed(files: Sequence[Path], name: str, dtype: Any, n: int | None) -> np.ndarray:
    """Column `name` of the rows that passed (all rows when `n` is None: no filter), in file
    and row order, as one array of `dtype` (memory: the array and one batch)."""
    if n is None:
        return concat_column(files, name, dtype)
    out = np.empty(n, dtype=dtype)
    at = 0
    for f in files:
        for part in iter_parquet(f, [name, "passed"]):
            values = part.filter(pl.col("passed")).get_column(name)
            out[at : at + len(values)] = values.to_numpy()
            at += len(values)
    assert at == n, "the keys changed while the decision read them"
    return out


def read_codes(
    files: Sequence[Path], codes: dict[str, int], n: int | None, rows: int
) -> np.ndarray:
    """The group code of each row that passed (int32), as `read_passed` reads a column."""
    out = np.empty(rows if n is None else n, dtype=np.int32)
    at = 0
    for f in files:
        for part in iter_parquet(f, ["group", *([] if n is None else ["passed"])]):
            if n is not None:
                part = part.filter(pl.col("passed"))
            values = part.get_column("group").replace_strict(codes, return_dtype=pl.Int32)
            out[at : at + len(values)] = values.to_numpy()
            at += len(values)
    return out


def decide(files: list[Path], cfg: Rules) -> np.ndarray:
    """The kept mask over the documents of the keys `files` that passed the filter, in shard
    and row order.

    Holds three arrays of 8 bytes per document (score, then the policy's key; weight; id hash,
    then the tie-break as float64), and 4 more (the group code) when stratified, and hands them
    over to the sort, which frees each when done with it: 41 bytes per document at the peak
    for top-k by characters (the mask and the sort's index included; benchmarks/scale.py
    measures it). The decisions are those of the array functions, bit for bit."""
    filtered = cfg.where is not None
    tally = census(files, filtered, cfg.stratify) if filtered or cfg.stratify else None
    n = tally.passed if filtered and tally else None
    key = read_passed(files, "score", np.float64, n)
    if cfg.policy == "threshold":
        assert cfg.threshold is not None
        return threshold_mask(key, cfg.threshold, mode=cfg.mode)  # type: ignore[arg-type]
    assert cfg.keep is not None
    seed = cfg.seed or 0
    weight = read_passed(files, "weight", np.float64, n)
    hashes = read_passed(files, "hash", np.uint64, n)
    if cfg.policy in ("gumbel", "gumbel_official"):
        # as gumbel_topk_mask: sign * score / tau + noise(seed, hash) (official: - noise)
        official = cfg.policy == "gumbel_official"
        np.multiply(
            key, (1.0 if cfg.mode == "top" else -1.0) * (-1.0 if official else 1.0), out=key
        )
        np.divide(key, cfg.tau, out=key)
        add_gumbel_noise(key, hashes, seed)
        if official:
            np.negative(key, out=key)
    else:  # a seeded tie-break, so that a different seed also reshuffles exact ties
        for a in range(0, len(hashes), _BLOCK):
            hashes[a : a + _BLOCK] = mix64(hashes[a : a + _BLOCK], seed)
        if cfg.mode == "bottom":
            np.negative(key, out=key)
    tiebreak = hashes.view(np.float64)  # the tie-break is only ever compared as float64
    for a in range(0, len(hashes), _BLOCK):
        tiebreak[a : a + _BLOCK] = hashes[a : a + _BLOCK].astype(np.float64)
    del hashes
    if cfg.policy == "topk" and cfg.mode == "middle":
        scores = [key]
        del key
        key = middle_key_owned(scores, weight, tiebreak)
    arrays = [key, tiebreak, weight]
    del key, tiebreak, weight
    if cfg.stratify:
        assert tally is not None
        codes = [read_codes(files, tally.codes(), n, len(arrays[0]))]
        keep = np.array([_keep(cfg, w, p) for w, p in (tally.groups[g] for g in tally.codes())])
        return cut_groups_owned(arrays, codes, keep)
    return cut_owned(arrays, _keep(cfg, tally.weight, tally.passed_weight) if tally else cfg.keep)


def _keep(cfg: Rules, weight: float, passed_weight: float) -> float:
    """The fraction of what passed to keep: `keep` itself, or (keep_of 'corpus') the share of
    what passed that weighs `keep` of everything (all that passed when it weighs less)."""
    assert cfg.keep is not None
    if cfg.where is None or cfg.keep_of == "passed" or passed_weight <= 0:
        return cfg.keep
    return min(1.0, cfg.keep * weight / passed_weight)


@dataclass
class Tally:
    """The summary of a decision, summed a batch of keys at a time."""

    docs: int = 0
    weight: float = 0.0
    kept_weight: float = 0.0
    passed_docs: int = 0
    passed_weight: float = 0.0
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    extremes: list[float] = field(default_factory=list)  # each batch's cutoff candidate

    def add(self, part: pl.DataFrame, cfg: Rules) -> None:
        kept = part.filter(pl.col("kept"))
        self.docs += part.height
        self.weight += float(part.get_column("weight").sum())
        self.kept_weight += float(kept.get_column("weight").sum())
        passed = cfg.where is not None
        if passed:
            self.passed_docs += int(part.get_column("passed").sum())
            self.passed_weight += float(part.filter(pl.col("passed")).get_column("weight").sum())
        if kept.height and cfg.policy == "topk" and cfg.mode in ("top", "bottom"):
            score = kept.get_column("score")
            self.extremes.append(score.min() if cfg.mode == "top" else score.max())  # type: ignore[arg-type]
        by_group = part.group_by("group").agg(
            pl.len().alias("docs"),
            pl.col("kept").sum().alias("kept_docs"),
            pl.col("weight").sum().alias("weight"),
            (pl.col("weight") * pl.col("kept")).sum().alias("kept_weight"),
            *(
                [
                    pl.col("passed").sum().alias("passed_docs"),
                    (pl.col("weight") * pl.col("passed")).sum().alias("passed_weight"),
                ]
                if passed
                else []
            ),
        )
        empty = dict.fromkeys(by_group.columns[1:], 0)
        for row in by_group.iter_rows(named=True):
            g = self.groups.setdefault(row["group"], {k: v for k, v in empty.items()})
            for k in g:
                g[k] += float(row[k]) if "weight" in k else int(row[k])

    def cutoff(self, cfg: Rules) -> float | None:
        if cfg.policy == "threshold":
            return cfg.threshold
        if not self.extremes:
            return None
        s = pl.Series(self.extremes, dtype=pl.Float64)
        return float(s.min() if cfg.mode == "top" else s.max())  # type: ignore[arg-type]


def record_decision(
    shards: list[Shard], files: list[Path], mask: np.ndarray, cfg: Rules, keep_dir: Path
) -> Tally:
    """Stream each shard's keys again: write its kept ids and rows, and sum the summary."""
    tally = Tally()
    at = 0
    filtered = cfg.where is not None
    columns = ["id", "row", "score", "weight", "group", *(["passed"] if filtered else [])]
    for shard, f in zip(shards, files, strict=True):
        with atomic_path(keep_dir / f"{shard.stem}.parquet") as tmp:
            writer = ShardWriter(tmp, fmt="parquet")
            for part in iter_parquet(f, columns):
                if filtered:  # the mask is over the documents that passed, in order
                    passed = part.get_column("passed").to_numpy()
                    kept = np.zeros(part.height, dtype=bool)
                    kept[passed] = mask[at : at + int(passed.sum())]
                    at += int(passed.sum())
                else:
                    kept = mask[at : at + part.height]
                    at += part.height
                part = part.with_columns(pl.Series("kept", kept))
                tally.add(part, cfg)
                kept = part.filter(pl.col("kept"))
                if kept.height:
                    writer.write(kept.select(list(KEEP_SCHEMA)))
            writer.close(schema_if_empty=KEEP_SCHEMA)
    return tally
