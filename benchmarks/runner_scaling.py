"""Runner scaling: the same fastText scoring task with 1 local worker, a 2-process pool, and Ray.

`ray.init` (a few seconds, once per session) is not timed. The first Ray run ("ray_2_cold") pays
for its workers importing assay, polars and fastText and loading the model, as a fresh
`assay score --runner ray` does; the second ("ray_2") runs on warm workers, as every later job of
a session or a long-lived cluster does. The local pool pays its own process start-up on every run.
Target: Ray with 2 workers on 2 cores >= 1.6x the 1-worker local throughput, >= 8 shards.

    python benchmarks/runner_scaling.py [--docs 64000] [--shards 16]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import bench_corpus, demo_texts, emit

from assay.exec.runner import LocalRunner, RayRunner
from assay.io.corpus import Corpus
from assay.selection.fasttext import FastTextScorer
from assay.selection.score import score_corpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=64_000)
    ap.add_argument("--shards", type=int, default=16)
    args = ap.parse_args()

    base = demo_texts()
    pos = base.filter(base["domain"].is_in(["news", "reference"]))["text"].to_list()
    neg = base.filter(base["domain"].is_in(["code", "math"]))["text"].to_list()
    model_dir = Path(tempfile.mkdtemp(prefix="assay-bench-model-"))
    scorer = FastTextScorer(column="quality", params={"lr": 0.5, "epoch": 5}).fit(
        pos, neg, validation=0
    )
    scorer.save(model_dir)
    corpus = Corpus(bench_corpus("scale", args.docs, args.shards, "jsonl.gz"))
    out_root = Path(tempfile.mkdtemp(prefix="assay-bench-runner-"))

    def timed(name: str, runner) -> dict:
        out = out_root / name
        t0 = time.perf_counter()
        result = score_corpus(scorer, corpus, out, runner=runner)
        seconds = time.perf_counter() - t0
        assert result.docs_out == args.docs
        return {"seconds": round(seconds, 2), "docs_per_s": round(args.docs / seconds)}

    results = {"local_1": timed("local_1", LocalRunner(workers=1, progress=False))}
    results["local_pool_2"] = timed("local_pool_2", LocalRunner(workers=2, progress=False))
    ray_runner = RayRunner(workers=2, progress=False)
    t0 = time.perf_counter()
    ray = ray_runner._ensure_ray()
    ray_start = time.perf_counter() - t0
    results["ray_2_cold"] = timed("ray_2_cold", ray_runner)
    results["ray_2"] = timed("ray_2", ray_runner)
    ray.shutdown()
    base_rate = results["local_1"]["docs_per_s"]
    for v in results.values():
        v["speedup_vs_local_1"] = round(v["docs_per_s"] / base_rate, 3)
    emit(
        {
            "benchmark": "runner_scaling",
            "task": "fastText scoring, read + score + write side-car parquet",
            "docs": args.docs,
            "shards": args.shards,
            "ray_init_seconds_untimed": round(ray_start, 2),
            "runners": results,
            "target_ray_2_speedup": 1.6,
        }
    )
    shutil.rmtree(out_root, ignore_errors=True)
    shutil.rmtree(model_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
