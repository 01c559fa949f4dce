"""The quality gate of the CLIMB and RegMix recipes on the mixing benchmark's pool: how much
junk is left for a search, and what it does to the other domains' shares.

Pool: `_mixing_pool.py`'s training pool (the demo domains, `tables`, and 16% junk by
characters: word-shuffled, character-noised and boilerplate copies), clustered as
`mixing_quality.py --pools clustered` clusters it (static embeddings, 24 clusters merged into
6 domains); junk lands in every cluster. The gate, as the recipes run it:
1. `doc_stats`' `dup_line_frac` <= 0.3 (repeated lines: boilerplate);
2. the 80% of the characters with the lowest perplexity under an order-3 n-gram model of a
   clean reference (`ngram_lm`, `select --mode bottom --by chars`), one cut over all domains.
References compared: the demo's held-out split, all four domains (the recipes' choice), and
its news alone; and the cut over all domains (the recipes') against 80% of each domain
(`select --stratify`, `quality.stratify=true` in a recipe). Reported per variant: the junk share of the kept characters, the share of the
junk's characters kept, each source's share of the kept characters, and each domain's kept
share; wall seconds of each step (2 CPU cores).

    python benchmarks/mixing_gate.py
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
from _common import CACHE, emit
from _mixing_pool import build_pool

from assay.demo import build_demo_corpus
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.mixing.cluster import cluster_corpus
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.ngram_lm import fit_ngram_lm
from assay.selection.score import score_corpus
from assay.selection.select import select

KEEP = 0.8


def frame(corpus: Corpus) -> pl.DataFrame:
    """Each document's id, domain, source (its id's first part) and characters; no text kept."""
    chars = pl.col("text").str.len_chars().alias("chars")
    source = pl.col("id").str.split("/").list.first().alias("source")
    return pl.concat([b.select("id", "domain", source, chars) for b in corpus.iter_batches()])


def describe(kept: pl.DataFrame, pool: pl.DataFrame) -> dict[str, Any]:
    total = kept.get_column("chars").sum()
    junk = kept.filter(pl.col("source") == "junk").get_column("chars").sum()
    pool_junk = pool.filter(pl.col("source") == "junk").get_column("chars").sum()
    by = lambda f, c: dict(f.group_by(c).agg(pl.col("chars").sum()).sort(c).iter_rows())  # noqa: E731
    have, had = by(kept, "domain"), by(pool, "domain")
    return {
        "junk_share": round(junk / total, 4),
        "junk_chars_kept": round(junk / pool_junk, 4),
        "source_shares": {k: round(v / total, 3) for k, v in by(kept, "source").items()},
        "domain_kept": {d: round(have.get(d, 0) / n, 3) for d, n in had.items()},
    }


def main() -> None:
    work = CACHE / "mixing-target"
    folders = build_pool(work)
    clusters = work / "clustered" / "clusters"
    if not (clusters / "_clusters.json").exists():
        cluster_corpus(
            Corpus(folders["train"]), clusters, embedder={"model": "static"}, k_init=24,
            n_domains=6, min_cluster_share=0.015, seed=0,
        )  # fmt: skip
    pool = Corpus(clusters / "corpus")
    out = work / "gate"
    runner = LocalRunner(workers=2, progress=False)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    score_corpus(DocStatsScorer(stat="dup_line_frac"), pool, out / "stats", runner=runner)
    rep = select(
        pool, out / "stats", out / "repetition", column="dup_line_frac", policy="threshold",
        threshold=0.3, mode="bottom", runner=runner,
    )  # fmt: skip
    timings["repetition_s"] = round(time.perf_counter() - t0, 1)
    gated = Corpus(out / "repetition")
    demo = Path(build_demo_corpus(CACHE / "demo", size="full")["heldout"])
    references = {"every_domain": demo, "news_only": demo / "news.jsonl.gz"}
    base = frame(pool)
    variants: dict[str, Any] = {"pool": describe(base, base)}
    variants["repetition"] = describe(frame(gated), base) | {"kept_docs": rep.kept_docs}
    for name, ref in references.items():
        t0 = time.perf_counter()
        scorer = fit_ngram_lm(str(ref), order=3)
        score_corpus(scorer, gated, out / f"ngram-{name}", runner=runner)
        for stratify in (False, True):
            tag = f"{name}{'-per-domain' if stratify else ''}"
            select(
                gated, out / f"ngram-{name}", out / f"quality-{tag}", column="ngram_ppl",
                mode="bottom", keep=KEEP, by="chars", stratify=stratify, runner=runner,
            )  # fmt: skip
            kept = frame(Corpus(out / f"quality-{tag}"))
            label = f"gate, {name} reference" + (", 80% of each domain" if stratify else "")
            variants[label] = describe(kept, base)
        timings[f"ngram_{name}_s"] = round(time.perf_counter() - t0, 1)
    emit({"benchmark": "mixing_gate", "keep": KEEP, "variants": variants, "timings": timings})


if __name__ == "__main__":
    main()
