"""Embedding throughput: `assay.embed.Embedder` against the raw library it wraps, same run.

- MiniLM: `Embedder(None, cache=False)` vs `SentenceTransformer.encode` on the same documents,
  batch size and window (the wrapper adds hashing, duplicate removal and normalisation).
  Target: >= 0.9x.
- static: `Embedder("static")` docs/s (model2vec itself cannot be installed next to
  transformers 5 with its distillation extra, so there is no raw reference for it here; its
  ratio to MiniLM is what a user trades for speed).
- cache: a second pass over the same documents served from the on-disk cache.
- top-K: `cosine_topk` (blocked, top-K kept) vs one full `q @ d.T` plus `argsort`, the way a
  script would do it, on 1,000 targets x 20,000 documents; both give the same neighbours.

    python benchmarks/embedding_throughput.py [--docs 300] [--static-docs 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import demo_texts, emit

from assay.common.embed import Embedder, cosine_topk, default_model_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--static-docs", type=int, default=2000)
    args = ap.parse_args()
    texts = demo_texts().sample(n=args.docs, seed=0).get_column("text").to_list()

    # static first: torch's worker threads keep spinning after MiniLM and would slow it
    many = demo_texts().sample(n=args.static_docs, seed=1).get_column("text").to_list()
    static = Embedder("static", cache=False)
    static.embed(many[:8])
    t0 = time.perf_counter()
    static.embed(many)
    t_static = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        cached = Embedder("static", cache=tmp)
        cached.embed(texts)
        t0 = time.perf_counter()
        cached.embed(texts)
        t_cache = time.perf_counter() - t0

    from sentence_transformers import SentenceTransformer

    raw = SentenceTransformer(default_model_path(), device="cpu")
    raw.max_seq_length = 256
    ours = Embedder(None, cache=False, batch_size=32)
    ours.embed(texts[:8])  # load both models before timing
    raw.encode(texts[:8], batch_size=32)
    t_raw, t_ours = [], []
    for _ in range(2):  # interleaved, to cancel drift in the machine's speed
        t0 = time.perf_counter()
        a = raw.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        t_raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = ours.embed(texts)
        t_ours.append(time.perf_counter() - t0)
    same = float(np.abs(a - b).max())

    rng = np.random.default_rng(0)
    q = rng.normal(size=(1000, 256)).astype(np.float32)
    d = rng.normal(size=(20_000, 256)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t0 = time.perf_counter()
    idx, _ = cosine_topk(q, d, 16)
    t_topk = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :16]
    t_full = time.perf_counter() - t0

    n = len(texts)
    emit(
        {
            "benchmark": "embedding_throughput",
            "docs": n,
            "minilm": {
                "assay_docs_per_second": round(n / min(t_ours), 1),
                "sentence_transformers_docs_per_second": round(n / min(t_raw), 1),
                "ratio": round(min(t_raw) / min(t_ours), 3),
                "max_abs_difference": same,
            },
            "static": {
                "docs": len(many),
                "docs_per_second": round(len(many) / t_static, 1),
                "speedup_over_minilm": round(len(many) / t_static / (n / min(t_ours)), 1),
            },
            "cache_hit_docs_per_second": round(n / t_cache, 1),
            "top_k": {
                "targets": len(q),
                "docs": len(d),
                "k": 16,
                "assay_seconds": round(t_topk, 3),
                "numpy_full_sort_seconds": round(t_full, 3),
                "ratio": round(t_full / t_topk, 2),
                "same_neighbours": bool((idx == full).all()),
                "full_matrix_mb": round(q.shape[0] * d.shape[0] * 4 / 2**20, 1),
            },
        }
    )


if __name__ == "__main__":
    main()
