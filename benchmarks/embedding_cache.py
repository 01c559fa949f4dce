"""Embedding cache at corpus scale: time per batch against batch index, and peak memory.

An `Embedder` is called once per batch, the way a scoring or clustering task calls it, on N
short unique texts recombined from the demo corpus' real documents. Four phases, each in a
fresh process (so its peak RSS is its own):

- raw: the encoder alone (`StaticEncoder.encode`, or `SentenceTransformer.encode` for
  --model minilm), no hashing and no cache: the floor;
- cold: `Embedder(cache=folder)` on an empty cache (every batch encoded and written);
- warm: a new `Embedder` over the same batches (every batch read back from the cache);
- mixed: batches twice as large, half cached and half new, in a new process.

Per phase: docs/s, the mean seconds per batch of the first and of the last tenth of the
batches (their ratio must stay near 1: cost per batch does not grow with the cache) and peak
RSS. Prints one JSON object.

    python benchmarks/embedding_cache.py [--docs 100000] [--batch 2000] [--model static]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import demo_texts, emit

WORDS = 24


def make_batch(words: list[list[str]], start: int, n: int) -> list[str]:
    """Texts start..start+n: a 24-word window of a demo document (deterministic) + its index."""
    out = []
    for i in range(start, start + n):
        doc = words[i % len(words)]
        a = (i // len(words)) * 5 % max(1, len(doc) - WORDS)
        out.append(" ".join(doc[a : a + WORDS]) + f" (#{i})")
    return out


def run_phase(phase: str, args: argparse.Namespace) -> dict:
    from assay.common.embed import Embedder

    words = [t.split() for t in demo_texts().get_column("text").to_list()]
    batch = args.batch * (2 if phase == "mixed" else 1)
    starts = list(range(0, args.docs, args.batch))
    if phase == "mixed":  # half of each batch already cached, half new
        starts = [s // 2 for s in range(0, args.docs, batch)]
    emb = Embedder(args.model, cache=args.cache)
    enc = emb._load()
    enc.encode(make_batch(words, 10**9, 8), 32)  # warm the model up
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for s in starts:
        if phase == "mixed":
            texts = make_batch(words, s, batch // 2) + make_batch(words, args.docs + s, batch // 2)
        else:
            texts = make_batch(words, s, batch)
        t0 = time.perf_counter()
        if phase == "raw":
            enc.encode(texts, emb.batch_size)
        else:
            emb.embed(texts)
        times.append(time.perf_counter() - t0)
    t = np.asarray(times)
    tenth = max(1, len(t) // 10)
    return {
        "batches": len(t),
        "docs_per_s": round(batch * len(t) / t.sum(), 1),
        "first_tenth_s_per_batch": round(float(t[:tenth].mean()), 4),
        "last_tenth_s_per_batch": round(float(t[-tenth:].mean()), 4),
        "growth": round(float(t[-tenth:].mean() / t[:tenth].mean()), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss)
                               / 1024, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--model", default="static")
    ap.add_argument("--phase", default=None)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    if args.phase:  # one phase, in its own process
        print(json.dumps(run_phase(args.phase, args)))
        return
    demo_texts()  # build the demo corpus once, outside the timed processes
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase in ("raw", "cold", "warm", "mixed"):
            cmd = [sys.executable, __file__, "--phase", phase, "--cache", tmp]
            cmd += ["--docs", str(args.docs), "--batch", str(args.batch), "--model", args.model]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[phase] = json.loads(out.strip().splitlines()[-1])
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    emit(
        {
            "benchmark": "embedding_cache",
            "docs": args.docs,
            "batch": args.batch,
            "model": args.model,
            **results,
            "cache_mb": round(size / 2**20, 1),
        },
    )


if __name__ == "__main__":
    main()
