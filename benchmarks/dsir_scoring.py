"""DSIR scoring throughput: assay's `DSIRScorer.score` against the official package's featurizer.

Both compute a document's log importance weight the official way, hashed unigram and bigram
counts of the lower-cased word-punct tokens, then `log_diff . counts`. The official
`data-selection` package (p-lambda/dsir, `get_ngram_counts`, nltk's WordPunctTokenizer, sha256
per n-gram, one document at a time) is imported from a folder given by `--official` (install it
apart, e.g. `pip install --target /tmp/dsir_pkg --no-deps data-selection nltk regex`), never
from the project's environment; without it, a plain-Python reference (the same regex and
`hashlib.sha256`, as the official code) stands in and the output says so. Both sides must find
the same number of n-grams in every document (the buckets differ: assay's hash is its own).

Documents: `--docs` real ones from the demo corpus (`bench_corpus`), whole (about 2,600
characters on average) and cut to their first 1,000 characters. One process; numpy and arrow
run these steps on one core.

    python benchmarks/dsir_scoring.py [--docs 20000] [--official-docs 1000] [--official DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import re
import sys
import time
from collections.abc import Callable

import numpy as np
import polars as pl
from _common import bench_corpus, emit

from assay.io.corpus import Corpus
from assay.selection.dsir import DSIRScorer, count_vectors


def reference_counts(text: str, num_buckets: int) -> np.ndarray:
    """The official featurizer written plainly: sha256 of each unigram and bigram."""
    words = re.findall(r"\w+|[^\w\s]+", text.lower())
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    counts = np.zeros(num_buckets, dtype=np.int64)
    for g in grams:
        counts[int(hashlib.sha256(g.encode("utf-8")).hexdigest(), 16) % num_buckets] += 1
    return counts


def official_featurizer(folder: str | None) -> tuple[str, Callable[[str, int], np.ndarray]]:
    if folder:
        sys.path.insert(0, folder)
        try:
            from data_selection.hashed_ngram_dsir import get_ngram_counts, wpt
        except ImportError as e:
            print(f"the official package cannot be imported from {folder}: {e}", file=sys.stderr)
        else:
            import importlib.metadata as md

            version = md.version("data-selection") if _installed() else "?"
            return (
                f"data-selection {version} (get_ngram_counts, wordpunct)",
                lambda t, b: get_ngram_counts(t, n=2, num_buckets=b, tokenizer=wpt.tokenize),
            )
    return "plain-Python reference (the official package was not available)", reference_counts


def _installed() -> bool:
    import importlib.metadata as md

    try:
        md.version("data-selection")
    except md.PackageNotFoundError:
        return False
    return True


def rate(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--official-docs", type=int, default=1_000)
    ap.add_argument("--official", default=None, help="Folder holding the data_selection package.")
    ap.add_argument("--buckets", type=int, default=10_000)
    args = ap.parse_args()

    folder = bench_corpus("dsir", args.docs, 4, "parquet")
    frame = pl.concat(list(Corpus(folder).iter_batches()))
    texts = frame.get_column("text").to_list()
    targets = [t for t, d in zip(texts, frame.get_column("domain"), strict=True) if d == "math"]
    scorer = DSIRScorer(num_buckets=args.buckets).fit(targets[:2000], texts[:20_000])
    name, featurize = official_featurizer(args.official)
    out: dict[str, object] = {"docs": len(texts), "num_buckets": args.buckets, "official": name}
    for label, docs in (("whole", texts), ("first_1000_chars", [t[:1000] for t in texts])):
        few = docs[: args.official_docs]
        ours = count_vectors(few[:200], args.buckets)
        theirs = np.stack([featurize(t, args.buckets) for t in few[:200]])
        assay_rate = max(rate(lambda d=docs: scorer.score(d), len(docs)) for _ in range(3))
        official_rate = rate(
            lambda f=few: [float(np.dot(scorer.log_diff, featurize(t, args.buckets))) for t in f],
            len(few),
        )
        out[label] = {
            "mean_chars": float(np.mean([len(t) for t in docs])),
            "assay_docs_per_s": round(assay_rate),
            "assay_mb_per_s": round(assay_rate * float(np.mean([len(t) for t in docs])) / 1e6, 1),
            "official_docs_per_s": round(official_rate),
            "official_docs_timed": len(few),
            "speedup": round(assay_rate / official_rate, 1),
            "same_ngram_counts_per_doc": bool((ours.sum(1) == theirs.sum(1)).all()),
        }
    emit(out)


if __name__ == "__main__":
    main()
