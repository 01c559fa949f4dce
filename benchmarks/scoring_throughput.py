"""Scoring a corpus end to end with the fastText scorer vs raw `fasttext` predict in memory.

End to end = read the shards, validate, score, write one side-car parquet per shard (atomic),
with the runner's bookkeeping, in one process. Raw = `model.predict(texts, k=1)` on the same texts
already in memory with newlines already removed. Target: end to end >= 0.9x raw.

    python benchmarks/scoring_throughput.py [--docs 20000] [--shards 8]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import bench_corpus, best_of, demo_texts, emit

from assay.corpus import Corpus
from assay.runner import LocalRunner
from assay.scores import score_corpus
from assay.selection.fasttext import FastTextScorer, to_line


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
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

    raw()  # warm up
    t_raw, n_raw = best_of(raw, args.repeats)
    t_e2e, n_e2e = best_of(end_to_end, args.repeats)
    assert n_raw == n_e2e == args.docs
    emit(
        {
            "benchmark": "scoring_throughput",
            "scorer": "fasttext (bigrams, dim 100)",
            "docs": args.docs,
            "mean_chars": round(chars / args.docs),
            "raw_predict_docs_per_s": round(n_raw / t_raw),
            "end_to_end_docs_per_s": round(n_e2e / t_e2e),
            "ratio": round(t_raw / t_e2e, 3),
            "target_ratio": 0.9,
        }
    )
    shutil.rmtree(out_root, ignore_errors=True)
    shutil.rmtree(model_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
