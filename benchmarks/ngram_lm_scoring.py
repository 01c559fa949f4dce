"""N-gram perplexity scoring throughput (CCNet): assay's `NgramLMScorer` against KenLM's query.

The model is trained on the news documents of the demo corpus (interpolated modified Kneser-Ney,
`--order`). Documents: `--docs` real ones (`bench_corpus`) cut to their first 1,000 characters.
assay scores them in process (`scorer.score`) and through the runner (`score_corpus`, 1 and 2
workers, shards of parquet in, score files out); a pool's fixed cost (spawning its workers,
which import assay; measured with the `random` scorer) is reported beside it.

KenLM: the same model is written as an ARPA file (its n-grams recovered by tokenising the
reference again in Python; each n-gram's interpolated log10 probability and its context's
log10 gamma as backoff), loaded with the `kenlm` Python module from `--kenlm DIR` (install it
apart: `pip install --target /tmp/kenlm_pkg kenlm`; it queries but cannot train) and queried a
sentence at a time on the same tokens (`Model.score(line, bos=True, eos=True)`; tokenisation not
timed). The two must agree on every document's total log10 probability. Without kenlm, a
plain-Python reference of the same model (dict lookups of the same tables) stands in and the
output says so.

    python benchmarks/ngram_lm_scoring.py [--docs 100000] [--order 3] [--kenlm /tmp/kenlm_pkg]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from _common import CACHE, bench_corpus, emit

from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.io.write import write_shard
from assay.selection.base import make_scorer
from assay.selection.ngram_kn import BOS, normalise, stream, token_log10, words
from assay.selection.ngram_lm import NgramLMScorer
from assay.selection.score import score_corpus


def sentences(text: str) -> list[list[str]]:
    """A text's sentences as the scorer sees them (a text that stays non-ASCII: one sentence)."""
    if not normalise(text).isascii():
        return [w] if (w := words(text)) else []
    return [w for line in text.split("\n") if (w := words(line))]


def ngram_logs(scorer: NgramLMScorer, grams: list[tuple[str, ...]], k: int) -> tuple:
    """ARPA's log10 p and log10 backoff of each k-gram (tuples of tokens, `<s>` first or not,
    `</s>` last or not): the k-gram model's probability of its last token after the others."""
    inner = [g[1 if g[0] == "<s>" else 0 : -1 if g[-1] == "</s>" else len(g)] for g in grams]
    texts = [" ".join(g) for g in inner]
    s = stream(texts, k)
    predicted = np.flatnonzero(s.pos > 0)
    lp = token_log10(scorer.tables[:k], s)[predicted]
    ends = np.array([g[-1] == "</s>" for g in grams])
    last = np.searchsorted(s.doc[predicted], np.arange(len(texts)), side="right") - 1 - (~ends)
    at = predicted[last]
    table = scorer.tables[k - 1]
    gamma = table.gamma[table.find(s.keys[k - 1][at])]
    return lp[last], np.log10(gamma)


def write_arpa(scorer: NgramLMScorer, reference: list[str], path: Path) -> None:
    order = scorer.order
    grams: list[set] = [set() for _ in range(order)]
    for t in reference:
        for sent in sentences(t):
            s = ["<s>", *sent, "</s>"]
            for j in range(1, len(s)):
                for k in range(1, min(order, j + 1) + 1):
                    grams[k - 1].add(tuple(s[j - k + 1 : j + 1]))
    grams[0].add(("<s>",))
    lines = [[] for _ in range(order)]
    for k in range(1, order + 1):
        gs = sorted(grams[k - 1])
        real = [g for g in gs if g != ("<s>",)]
        lp, bo = ngram_logs(scorer, real, k)
        for g, p, b in zip(real, lp, bo, strict=True):
            tail = f"\t{b:.7f}" if k < order and b != 0 else ""
            lines[k - 1].append(f"{p:.7f}\t{' '.join(g)}{tail}")
        if k == 1:
            unk = float(np.log10(scorer.tables[0].alpha[-1]))
            lines[0].append(f"{unk:.7f}\t<unk>")
            start = scorer.tables[0]
            g = float(np.log10(start.gamma[start.find(np.array([BOS], dtype=np.uint64))][0]))
            lines[0].append(f"-99\t<s>\t{g:.7f}")
    with open(path, "w") as f:
        f.write("\n\\data\\\n")
        for k in range(order):
            f.write(f"ngram {k + 1}={len(lines[k])}\n")
        for k in range(order):
            f.write(f"\n\\{k + 1}-grams:\n" + "\n".join(lines[k]) + "\n")
        f.write("\n\\end\\\n")


def kenlm_query(folder: str | None, arpa: Path) -> tuple[str, Callable[[list[str]], float]] | None:
    if not folder:
        return None
    sys.path.insert(0, folder)
    try:
        import kenlm
    except ImportError as e:
        print(f"kenlm cannot be imported from {folder}: {e}", file=sys.stderr)
        return None
    model = kenlm.Model(str(arpa))
    return f"kenlm (Python module, {Path(kenlm.__file__).name})", lambda sents: sum(
        model.score(s, bos=True, eos=True) for s in sents
    )


def python_query(scorer: NgramLMScorer) -> tuple[str, Callable[[list[str]], float]]:
    """The same model queried a token at a time from dicts of the tables (no numpy per token)."""
    dicts = []
    for t in scorer.tables:
        used = np.flatnonzero(t.slots)
        dicts.append(
            {
                int(k): (float(a), float(g))
                for k, a, g in zip(t.slots[used], t.alpha[used], t.gamma[used], strict=True)
            }
        )
    unk = float(scorer.tables[0].alpha[-1])

    def query(sents: list[str]) -> float:
        s = stream(["\n".join(sents)], scorer.order)  # keys by the same hash; lookups in Python
        keys = [k.tolist() for k in s.keys]
        total, prev = 0.0, [1.0] * scorer.order
        for j, pos in enumerate(s.pos.tolist()):
            p, gam = 0.0, [1.0] * scorer.order
            for k in range(min(pos + 1, scorer.order)):
                a, g = dicts[k].get(keys[k][j], (unk if k == 0 else 0.0, 1.0))
                p = a if k == 0 else a + prev[k - 1] * p
                gam[k] = g
            if pos > 0:
                total += float(np.log10(p))
            prev = gam
        return total

    return "plain-Python reference of the same tables (kenlm not available)", query


def cut_corpus(n_docs: int) -> Path:
    folder = CACHE / f"ngram-{n_docs}-1000chars"
    if not (folder / "_done").exists():
        frame = pl.concat(list(Corpus(bench_corpus("ngram", n_docs, 4, "parquet")).iter_batches()))
        frame = frame.with_columns(pl.col("text").str.slice(0, 1000))
        per = -(-frame.height // 4)
        for k in range(4):
            write_shard(folder / f"part-{k:05d}.parquet", [frame.slice(k * per, per)])
        (folder / "_done").write_text("")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--query-docs", type=int, default=2_000)
    ap.add_argument("--kenlm", default=None, help="Folder holding the kenlm module.")
    args = ap.parse_args()

    folder = cut_corpus(args.docs)
    frame = pl.concat(list(Corpus(folder).iter_batches()))
    texts = frame.get_column("text").to_list()
    base = pl.concat(list(Corpus(bench_corpus("ngram", args.docs, 4, "parquet")).iter_batches()))
    reference = base.filter(pl.col("domain") == "news").unique("text").get_column("text").to_list()
    t0 = time.perf_counter()
    scorer = NgramLMScorer(order=args.order).fit(reference)
    fit_s = time.perf_counter() - t0
    out: dict[str, object] = {
        "docs": len(texts),
        "mean_chars": float(np.mean([len(t) for t in texts])),
    }
    out["model"] = {**scorer.report, "fit_s": round(fit_s, 2)}
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        ppl = scorer.score(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    out["in_process_docs_per_s"] = round(max(rates))
    work = Path(tempfile.mkdtemp(prefix="ngram-bench-"))
    try:
        t0 = time.perf_counter()  # what a pool costs whatever the scorer: spawn and imports
        score_corpus(
            make_scorer("random"),
            Corpus(folder),
            work / "r2",
            runner=LocalRunner(2, progress=False),
        )
        out["pool_of_2_fixed_cost_s"] = round(time.perf_counter() - t0, 2)
        for workers in (1, 2):
            t0 = time.perf_counter()
            score_corpus(
                scorer,
                Corpus(folder),
                work / f"w{workers}",
                runner=LocalRunner(workers, progress=False),
            )
            out[f"score_corpus_{workers}_workers_docs_per_s"] = round(
                len(texts) / (time.perf_counter() - t0)
            )
        arpa = work / "model.arpa"
        write_arpa(scorer, reference, arpa)
        name_query = kenlm_query(args.kenlm, arpa) or python_query(scorer)
        name, query = name_query
        few = texts[: args.query_docs]
        sents = [[" ".join(s) for s in sentences(t)] for t in few]
        t0 = time.perf_counter()
        theirs = np.array([query(s) for s in sents])
        their_rate = len(few) / (time.perf_counter() - t0)
        ours, _ = scorer.log10_totals(few)
        has = np.array([len(s) > 0 for s in sents])
        out["reference_query"] = {
            "name": name,
            "docs": len(few),
            "docs_per_s": round(their_rate),
            "assay_speedup": round(out["in_process_docs_per_s"] / their_rate, 1),
            "max_abs_log10_diff_per_doc": float(np.abs(ours[has] - theirs[has]).max()),
            "arpa_mb": round(arpa.stat().st_size / 1e6, 1),
        }
        out["median_perplexity"] = float(np.median(ppl))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(out)


if __name__ == "__main__":
    main()
