"""Decontamination scoring: the vectorised n-gram scorer against a plain-Python reference.

Both use the same normalisation and 13-grams of the built-in targets (MMLU dev and champ items);
the reference keeps the targets' n-grams as a set of word tuples and looks every window of every
document up in it. The scorer (with min_words = n, so that both count the same n-grams) hashes
words once per batch and n-grams with numpy, and looks them up with one searchsorted. Timed in
memory on batches of 1,000 documents, on the demo corpus' real documents whole and cut to
1,000 characters; one core. The counts of the two are checked to be equal.

    python benchmarks/decontam_scoring.py [--docs 20000]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import bench_corpus, best_of, emit

from assay.common.targets import load_targets
from assay.io.corpus import Corpus
from assay.selection.decontam import DecontamScorer, normalize

BATCH = 1000


def reference_index(targets: list[str], n: int) -> set[tuple[str, ...]]:
    grams: set[tuple[str, ...]] = set()
    for t in targets:
        w = normalize(t).split()
        grams.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return grams


def reference_counts(texts: list[str], grams: set[tuple[str, ...]], n: int) -> np.ndarray:
    out = np.zeros(len(texts), dtype=np.int64)
    for j, t in enumerate(texts):
        w = normalize(t).split()
        out[j] = sum(tuple(w[i : i + n]) in grams for i in range(len(w) - n + 1))
    return out


def run(texts: list[str], scorer: DecontamScorer, grams: set, repeats: int) -> dict:
    def vectorised() -> np.ndarray:
        parts = [scorer.score(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
        return np.concatenate(parts)

    t_vec, counts = best_of(vectorised, repeats)
    t_ref, ref = best_of(lambda: reference_counts(texts, grams, scorer.n), 1)
    return {
        "docs": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "contaminated_docs": int((counts > 0).sum()),
        "counts_equal": bool(np.array_equal(counts.astype(np.int64), ref)),
        "scorer_docs_per_s": round(len(texts) / t_vec),
        "scorer_mb_per_s": round(sum(map(len, texts)) / t_vec / 1e6, 2),
        "reference_docs_per_s": round(len(texts) / t_ref),
        "speedup": round(t_ref / t_vec, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    targets = load_targets("assay_mmlu_dev") + load_targets("assay_champ")
    scorer = DecontamScorer(n=13, min_words=13).fit(targets)
    grams = reference_index(targets, 13)
    texts = list(Corpus(bench_corpus("decontam", args.docs, 1, "jsonl")).iter_texts())
    emit(
        {
            "benchmark": "decontam_scoring",
            "targets": len(targets),
            "index_ngrams": len(scorer.hashes),
            "whole_docs": run(texts, scorer, grams, args.repeats),
            "docs_cut_to_1000_chars": run([t[:1000] for t in texts], scorer, grams, args.repeats),
        }
    )


if __name__ == "__main__":
    main()
