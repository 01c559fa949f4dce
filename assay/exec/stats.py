"""Corpus statistics (`assay stats`): documents, characters and lengths per group."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.io.corpus import Corpus
from assay.io.shards import ReadOptions, Shard, ShardStats


@dataclass
class StatsTask:
    """Per-shard document counts and lengths, optionally grouped by a column such as `domain`."""

    options: ReadOptions
    group_by: str | None = "domain"

    def output_name(self, shard: Shard) -> str | None:
        return None

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        from assay.exec.runner import report_progress

        stats = ShardStats(shard.name)
        groups: dict[str, list[int]] = {}
        lengths: list[np.ndarray] = []
        for batch in shard.read(self.options, stats):
            n = batch.get_column("text").str.len_chars()
            stats.docs_out += batch.height
            stats.chars_out += int(n.sum())
            lengths.append(n.to_numpy())
            if self.group_by and self.group_by in batch.columns:
                g = (
                    batch.select(
                        pl.col(self.group_by).cast(pl.String).fill_null("(none)"), n.alias("n")
                    )
                    .group_by(self.group_by)
                    .agg(pl.len().alias("docs"), pl.col("n").sum().alias("chars"))
                )
                for key, docs, chars in g.iter_rows():
                    acc = groups.setdefault(key, [0, 0])
                    acc[0] += docs
                    acc[1] += chars
            report_progress(batch.height)
        stats.extra["groups"] = groups
        all_len = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        stats.extra["length_hist"] = _length_histogram(all_len)
        return stats


_HIST_EDGES = [0, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 1_000_000, float("inf")]


def _length_histogram(lengths: np.ndarray) -> list[int]:
    return np.histogram(lengths, bins=np.asarray(_HIST_EDGES))[0].tolist()


def corpus_stats(
    corpus: Corpus, group_by: str | None = "domain", runner: Any = None
) -> dict[str, Any]:
    """Documents, characters, length histogram and per-group counts of a corpus."""
    from assay.exec.runner import LocalRunner

    runner = runner or LocalRunner(workers=1)
    result = runner.run(
        StatsTask(corpus.options, group_by), corpus.shards, out_dir=None, label="stats"
    )
    groups: dict[str, dict[str, int]] = {}
    hist = np.zeros(len(_HIST_EDGES) - 1, dtype=np.int64)
    for s in result.shards:
        for key, (docs, chars) in s.extra.get("groups", {}).items():
            g = groups.setdefault(key, {"docs": 0, "chars": 0})
            g["docs"] += docs
            g["chars"] += chars
        hist += np.asarray(s.extra.get("length_hist", hist * 0))
    docs = result.docs_out
    edges = [
        f"{int(a)}-{'' if b == float('inf') else int(b)}"
        for a, b in itertools.pairwise(_HIST_EDGES)
    ]
    return {
        "shards": len(corpus.shards),
        "docs": docs,
        "chars": result.chars_out,
        "mean_chars": (result.chars_out / docs) if docs else 0.0,
        "skipped": result.skipped,
        "length_histogram": dict(zip(edges, hist.tolist(), strict=True)),
        "groups": dict(sorted(groups.items())),
        "group_by": group_by if groups else None,
    }
