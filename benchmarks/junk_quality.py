"""Does a quality filter catch junk? The full demo corpus' training documents plus junk copies
of a seeded fifth of them (`assay.demo.make_junk`: word-shuffled, character-noised at 15%,
boilerplate-repeated; a third of the copies each), and for each scorer the share of each kind
of junk kept when the best 80% of the characters is kept, junk's share of the kept characters,
and the scorer's documents/s (`score` on the whole pool in one process, fitting not timed).

Clean reference text (not in the pool): the demo corpus' held-out split, all four domains.
Scorers: `ngram_lm` (order 3, CCNet: lowest perplexity kept), the same gated by repetition
(documents whose `dup_line_frac` > 0.3 dropped first), a DCLM-style fastText classifier (the
reference as positives, a sample of the pool as negatives; highest kept), `doc_stats` columns,
`dsir` (the reference as target, the pool as raw; highest kept) and `random`.

    python benchmarks/junk_quality.py [--junk 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import polars as pl
from _common import CACHE, demo_texts, emit

from assay.demo import JUNK_KINDS, make_junk
from assay.io.corpus import Corpus
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.dsir import DSIRScorer
from assay.selection.fasttext import train_quality_classifier
from assay.selection.ngram_lm import NgramLMScorer
from assay.selection.policies import topk_mask
from assay.selection.random_scorer import RandomScorer

KEEP = 0.8


def junk_pool(fraction: float, seed: int) -> tuple[list[dict], list[str]]:
    clean = demo_texts().to_dicts()
    rng = np.random.default_rng(seed)
    picked = [clean[i] for i in sorted(rng.choice(len(clean), round(fraction * len(clean)), False))]
    junk = [
        j for k, kind in enumerate(JUNK_KINDS) for j in make_junk(picked[k::3], kind, seed=seed)
    ]
    held = pl.concat(list(Corpus(CACHE / "demo" / "heldout").iter_batches()))
    return clean + junk, held.get_column("text").to_list()


def kept(pool: list[dict], scores: np.ndarray, mode: str) -> dict[str, float]:
    chars = np.array([len(r["text"]) for r in pool], dtype=np.float64)
    mask = topk_mask(scores, KEEP, weights=chars, mode=mode)
    kinds = np.array([r.get("junk_kind") or "" for r in pool])
    out = {k: round(float(mask[kinds == k].mean()), 3) for k in JUNK_KINDS}
    junk = kinds != ""
    out["junk_share_of_kept_chars"] = round(float(chars[mask & junk].sum() / chars[mask].sum()), 4)
    return out


def timed(fn: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[np.ndarray, int]:
    t0 = time.perf_counter()
    scores = np.asarray(fn(texts), dtype=np.float64)
    return scores, round(len(texts) / (time.perf_counter() - t0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--junk", type=float, default=0.2, help="Junk copies per clean document.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pool, reference = junk_pool(args.junk, args.seed)
    texts = [r["text"] for r in pool]
    chars = sum(len(t) for t in texts)
    junk_chars = sum(len(r["text"]) for r in pool if r.get("junk_kind"))
    lm = NgramLMScorer(order=3).fit(reference)
    stats = DocStatsScorer()
    classifier = train_quality_classifier(reference, texts, seed=args.seed, params={"thread": 1})
    dsir = DSIRScorer().fit(reference, texts)
    rows: dict[str, dict] = {}
    ppl, rate = timed(lm.score, texts)
    rows["ngram_lm (lowest perplexity)"] = {**kept(pool, ppl, "bottom"), "docs_per_s": rate}
    t0 = time.perf_counter()
    table = stats.score_table(texts)
    stats_rate = round(len(texts) / (time.perf_counter() - t0))
    gated = np.where(table["dup_line_frac"] > 0.3, np.inf, ppl)
    rows["ngram_lm, gated by dup_line_frac <= 0.3"] = {
        **kept(pool, gated, "bottom"),
        "docs_per_s": round(1 / (1 / rate + 1 / stats_rate)),
    }
    scores, rate = timed(classifier.score, texts)
    rows["fastText DCLM-style (reference vs pool)"] = {
        **kept(pool, scores, "top"),
        "docs_per_s": rate,
    }
    for stat, mode in (
        ("dup_line_frac", "bottom"),
        ("unique_word_frac", "top"),
        ("alpha_frac", "top"),
        ("mean_word_len", "bottom"),
    ):
        rows[f"doc_stats {stat} ({mode})"] = {
            **kept(pool, np.asarray(table[stat], dtype=np.float64), mode),
            "docs_per_s": stats_rate,
        }
    scores, rate = timed(dsir.score, texts)
    rows["dsir (target: reference)"] = {**kept(pool, scores, "top"), "docs_per_s": rate}
    scores, rate = timed(RandomScorer(seed=args.seed).score, texts)
    rows["random"] = {**kept(pool, scores, "top"), "docs_per_s": rate}
    emit(
        {
            "pool_docs": len(pool),
            "junk_docs": sum(1 for r in pool if r.get("junk_kind")),
            "junk_share_of_chars": round(junk_chars / chars, 4),
            "reference_docs": len(reference),
            "keep_chars": KEEP,
            "ngram_model": {k: lm.report[k] for k in ("reference_tokens", "order", "ngrams")},
            "kept_share_of_each_junk_kind": rows,
        }
    )


if __name__ == "__main__":
    main()
