"""Scoring a corpus end to end with the fastText scorer vs raw `fasttext` predict in memory.

End to end = read the shards, validate, score, write one side-car parquet per shard (atomic),
with the runner's bookkeeping, in one process. Raw = `model.predict(texts, k=1)` on the same texts
already in memory with newlines already removed (also reported: the bare pybind call under it).
Target: end to end >= 0.9x raw.

    python benchmarks/scoring_throughput.py [--docs 20000] [--shards 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import bench_corpus, best_of, demo_texts, emit

from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.fasttext import FastTextScorer, to_line
from assay.selection.score import score_corpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()

    base = demo_texts()
    pos = base.filter(base["domain"].is_in(["news", "reference"]))["text"].to_list()
    neg = base.filter(base["domain"].is_in(["code", "math"]))["text"].to_list()
    scorer = FastTextScorer(column="quality", params={"lr": 0.5, "epoch": 5}).fit(
        pos, neg, validation=0
    )
    model_dir = Path(tempfile.mkdtemp(prefix="assay-bench-model-"))
    scorer.save(model_dir)

    folder = bench_corpus("score", args.docs, args.shards, "jsonl.gz")
    corpus = Corpus(folder)
    texts = [to_line(t) for t in corpus.iter_texts()]
    chars = sum(len(t) for t in texts)

    def raw() -> int:
        scorer.model.predict(texts, k=1)
        return len(texts)

    out_root = Path(tempfile.mkdtemp(prefix="assay-bench-scores-"))

    def end_to_end() -> int:
        out = out_root / "scores"
        shutil.rmtree(out, ignore_errors=True)
        return score_corpus(
            scorer, corpus, out, runner=LocalRunner(workers=1, progress=False)
        ).docs_out

    def bare_binding() -> int:
        # The pybind call under predict(), on texts already ending in a newline: the floor.
        scorer.model.f.multilinePredict(with_newline, 1, 0.0, "strict")
        return len(with_newline)

    with_newline = [t + "\n" for t in texts]
    raw()  # warm up
    end_to_end()
    # Interleave the runs: this machine's speed drifts by several percent over a minute, and
    # timing one side first and the other later would measure the drift.
    times: dict[str, list[float]] = {"raw": [], "e2e": [], "bare": []}
    for _ in range(args.repeats):
        for name, fn in (("raw", raw), ("e2e", end_to_end), ("bare", bare_binding)):
            t, n = best_of(fn, 1)
            assert n == args.docs
            times[name].append(t)
    t_raw, t_e2e, t_bare = (min(times[k]) for k in ("raw", "e2e", "bare"))
    n_raw = n_e2e = args.docs
    emit(
        {
            "benchmark": "scoring_throughput",
            "scorer": "fasttext (bigrams, dim 100)",
            "docs": args.docs,
            "mean_chars": round(chars / args.docs),
            "raw_predict_docs_per_s": round(n_raw / t_raw),
            "bare_binding_docs_per_s": round(n_raw / t_bare),
            "end_to_end_docs_per_s": round(n_e2e / t_e2e),
            "ratio": round(t_raw / t_e2e, 3),
            "ratio_vs_bare_binding": round(t_bare / t_e2e, 3),
            "target_ratio": 0.9,
        }
    )
    shutil.rmtree(out_root, ignore_errors=True)
    shutil.rmtree(model_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
