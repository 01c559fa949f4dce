"""A second, non-math target for the selection benchmark: BBC technology news.

The demo pool's news is 2,000 BBC articles of five categories; about 360 are technology. Half of
those (by a seeded hash of the id) leave the pool, so it keeps ~180 technology articles (3% of its
documents) among ~1,640 other news articles, code, sympy and reference prose: finding the target
means telling technology news from business or politics news, not only news from code. The
articles that left, with the technology articles of the demo's held-out split, are the target:
`EXAMPLES` of them are the examples the target-driven scorers see (the benchmark's role for
math), the rest the held-out domain `bbc_tech` the proxies are measured on. The general held-out
domains are the demo's held-out split without its technology articles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.io.corpus import Corpus
from assay.io.write import write_shard
from assay.util.hashing import stable_hash64

SOURCE = "bbc/tech"
DOMAIN = "bbc_tech"
EXAMPLES = 100


@dataclass
class NewsTarget:
    pool: Corpus
    heldout: Corpus
    examples: list[str]  # what target-driven scorers see
    domain: str


def _frame(path: str | Path) -> pl.DataFrame:
    return pl.concat(list(Corpus(path).iter_batches()), how="diagonal_relaxed")


def tech_target(manifest: dict[str, Any], work: Path) -> NewsTarget:
    """Build (once, under `work/data`) the pool without half its technology news, the general
    held-out split without technology news, and the technology target (examples + eval)."""
    data = work / "data"
    pool_dir, held_dir, target = data / "pool", data / "heldout", data / "target"
    if not (target / f"{DOMAIN}.jsonl.gz").exists():
        train = _frame(manifest["train"])
        is_tech = train.get_column("source") == SOURCE
        out = is_tech & pl.Series(stable_hash64(train.get_column("id").to_list(), 15) % 2 == 0)
        for domain, part in train.filter(~out).group_by("domain", maintain_order=True):
            write_shard(pool_dir / f"{domain[0]}.jsonl.gz", [part])
        held = _frame(manifest["heldout"])
        held_tech = held.get_column("source") == SOURCE
        for domain, part in held.filter(~held_tech).group_by("domain", maintain_order=True):
            write_shard(held_dir / f"{domain[0]}.jsonl.gz", [part])
        docs = pl.concat([train.filter(out), held.filter(held_tech)])
        order = np.argsort(stable_hash64(docs.get_column("id").to_list(), 16), kind="stable")
        docs = docs[order.tolist()].with_columns(pl.lit(DOMAIN).alias("domain"))
        write_shard(data / "examples.jsonl.gz", [docs.head(EXAMPLES)])
        write_shard(target / f"{DOMAIN}.jsonl.gz", [docs.slice(EXAMPLES)])
    examples = _frame(data / "examples.jsonl.gz").get_column("text").to_list()
    return NewsTarget(Corpus(pool_dir), Corpus([held_dir, target]), examples, DOMAIN)


def target_share(selected: Path) -> dict[str, float]:
    """Technology articles in a selection, and their share of its characters."""
    frame = _frame(selected).select("source", "text")
    tech = (frame.get_column("source") == SOURCE).to_numpy()
    chars = frame.get_column("text").str.len_chars().to_numpy().astype(np.float64)
    return {
        "docs": frame.height,
        "target_docs": int(tech.sum()),
        "target_share_of_chars": round(float(chars[tech].sum() / chars.sum()), 4),
    }
