"""Shared by the benchmarks: a larger corpus made of the demo corpus' real text, and timing."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from assay.demo import build_demo_corpus
from assay.io.write import write_shard

CACHE = Path(os.environ.get("ASSAY_BENCH_DIR", "/tmp/assay-bench"))


def demo_texts() -> pl.DataFrame:
    """The full demo corpus' training documents (about 5,600 real documents)."""
    root = CACHE / "demo"
    build_demo_corpus(root, size="full")
    from assay.io.corpus import Corpus

    return pl.concat(list(Corpus(root / "train").iter_batches()))


def bench_corpus(name: str, n_docs: int, n_shards: int, fmt: str) -> Path:
    """`n_docs` real documents (the demo corpus repeated, with fresh ids) in `n_shards` shards."""
    folder = CACHE / f"{name}-{n_docs}-{n_shards}-{fmt}"
    if (folder / "_done").exists():
        return folder
    base = demo_texts()
    reps = -(-n_docs // base.height)
    frames = [base.with_columns(pl.col("id") + f"#{r}") for r in range(reps)]
    docs = pl.concat(frames).sample(fraction=1.0, shuffle=True, seed=0).head(n_docs)
    per = -(-n_docs // n_shards)
    for k in range(n_shards):
        write_shard(folder / f"part-{k:05d}.{fmt}", [docs.slice(k * per, per)])
    (folder / "_done").write_text("")
    return folder


def best_of(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Fastest wall time of `repeats` calls (the least disturbed by the machine), and a result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps({**payload, "machine": machine()}, indent=2))
