"""Deduplication: MinHash signature throughput against datasketch, and the memory of the
global decision per document.

1. Signatures: `assay.selection.minhash.signatures` (word 5-gram shingles hashed once per batch,
   128 permutations (a·h + b) mod 2^61-1 as uint64 array operations) on the demo corpus' real
   documents, batches of 1,000, one core; shingling included. datasketch's
   `MinHash(num_perm=128).update_batch` is given the same 5-gram shingles, already built, as
   bytes (its hashing of them, sha1, included; building the shingles not), when it is
   importable (`pip install --target /tmp/ds_pkg datasketch`; that folder is appended to the
   path). The LSH parameters are checked against datasketch's `_optimal_param` there too.
2. The decision: synthetic keys (random id, text and band hashes, a tenth of the documents
   copies of another's) of `--decide-docs` documents in 8 shard files; the peak of numpy's
   allocations (tracemalloc) during `_decide`, exact and near, per document, and its time.

    python benchmarks/dedup_throughput.py [--docs 5000] [--decide-docs 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
from _common import best_of, demo_texts, emit

from assay.selection.decontam import normalize
from assay.selection.dedup import DedupSettings, _decide
from assay.selection.minhash import optimal_bands, signatures

BATCH = 1000


def ours(texts: list[str]) -> np.ndarray:
    return np.concatenate([signatures(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])


def datasketch_rate(texts: list[str]) -> dict | None:
    sys.path.append("/tmp/ds_pkg")
    try:
        from datasketch import MinHash
        from datasketch.lsh import _optimal_param
    except ImportError:
        return None
    shingles = []
    for t in texts:
        w = normalize(t).split()
        grams = [" ".join(w[i : i + 5]) for i in range(len(w) - 4)] or [" ".join(w)]
        shingles.append([g.encode() for g in grams])

    def run() -> None:
        for s in shingles:
            MinHash(num_perm=128).update_batch(s)

    seconds, _ = best_of(run, 1)
    same = all(
        _optimal_param(t, n, 0.5, 0.5) == optimal_bands(t, n)
        for n in (64, 128, 256)
        for t in (0.5, 0.7, 0.8, 0.9)
    )
    return {"docs_per_second": round(len(texts) / seconds, 1), "lsh_params_agree": same}


def write_keys(folder: Path, n: int, bands: int, shards: int = 8) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    per = -(-n // shards)
    for k in range(shards):
        m = min(per, n - k * per)
        cols = {
            "id_hash": rng.integers(0, 2**63, m, dtype=np.uint64),
            "text_hash": rng.integers(0, 2**63, m, dtype=np.uint64),
        }
        band = rng.integers(0, 2**63, (m, bands), dtype=np.uint64)
        copies = rng.choice(m, m // 10, replace=False)
        band[copies] = band[rng.choice(m, m // 10)]
        cols["text_hash"][copies[::2]] = cols["text_hash"][copies[1::2]]
        for b in range(bands):
            cols[f"band_{b}"] = band[:, b]
        files.append(folder / f"s{k}.parquet")
        pl.DataFrame(cols).write_parquet(files[-1], row_group_size=65536)
    return files


def decide_memory(n: int) -> dict:
    settings = DedupSettings()
    bands, rows = settings.banding()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_keys(Path(tmp), n, bands)
        tracemalloc.start()
        t0 = time.perf_counter()
        d = _decide(files, settings)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "docs": n,
        "bands": bands,
        "rows": rows,
        "seconds": round(seconds, 2),
        "peak_bytes_per_doc": round(peak / n, 1),
        "exact_duplicates": int(d.exact_drop.sum()) if d.exact_drop is not None else None,
        "near_duplicates": int(d.near_drop.sum()) if d.near_drop is not None else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--decide-docs", type=int, default=1_000_000)
    args = ap.parse_args()
    base = demo_texts().get_column("text").to_list()
    texts = (base * (-(-args.docs // len(base))))[: args.docs]
    seconds, _ = best_of(lambda: ours(texts), 2)
    emit(
        {
            "signature_docs": len(texts),
            "mean_chars": round(sum(map(len, texts)) / len(texts)),
            "assay_docs_per_second": round(len(texts) / seconds, 1),
            "datasketch": datasketch_rate(texts[: min(len(texts), 2000)]),
            "decision": decide_memory(args.decide_docs),
        }
    )


if __name__ == "__main__":
    main()
