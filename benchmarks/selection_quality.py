"""Does a selection method help? Same budget, same proxy, same seeds; only the scorer differs.

Pool: the demo corpus (news, math, code, reference prose; ~5,600 real documents). Target:
competition math. The target-driven scorers see only the 270 `assay_champ` benchmark examples
(problem + answer); the proxies are measured on `competition_math`, the ~240 champ documents
(problems with full solutions, and concepts) that are not in the pool. The pool holds ~120
champ documents (2% of it) among 1,500 sympy docstrings, BBC news and CPython code, so a
method that finds them has something to find, and one that only finds "math" does not.

Methods, each keeping the same 10% of the pool's characters (`select(..., by="chars")`):

- random: a seeded uniform sample (the baseline to beat)
- fasttext: a DCLM-style classifier with the benchmark examples as positives, the pool as
  negatives (BETR's "benchmark vs crawl" ablation)
- perplexity: lowest bits per byte under a tiny proxy trained on the pool (Ankner et al.)
- betr: benchmark-targeted ranking over a pool sample, distilled into fastText
- preselect: predictive strength over a family of 5 tiny proxies trained on random Dirichlet
  mixtures of the pool's domains, scored by bits per character on the benchmark examples;
  positives are the perfectly concordant documents (the paper's rule)
- preselect_top: the same calibration losses, positives = the top 10% by strength
- mates / mates_random: MATES is model-aware, so it selects while it trains: the pool is
  split into 2 consume-once stage pools, each stage trains half the tokens on 20% of its pool
  (stage 0 random; stage 1 by the influence model learned from 300 oracle probes of the stage-0
  proxy against 32 benchmark examples, Gumbel top-k at tau 0.5), under one WSD schedule.
  mates_random is the same staged run with random selection, its like-for-like baseline.
  Both train the same total tokens and preset as the other methods.
- mass: a skill graph of the benchmark's CHAMP concept tags (merged at cosine > 0.9); a
  document scores s^T (diag(w) + E) s over its similarities to its 10 closest skills
- dsir: importance weights of hashed unigram and bigram models (benchmark examples vs a pool
  sample; the official defaults), resampled as DSIR does: Gumbel top-k at tau 1
- ngram_lm: lowest perplexity under a 3-gram modified Kneser-Ney model of the benchmark
  examples (CCNet's scorer with the target as its reference)

For every method and seed a tiny proxy (1M parameters) trains on the same number of tokens of
its selection; the table reports its bits per byte on the target, on the general held-out
domains, and the assay_champ log-likelihood of the correct answer. Seeds vary the random sample
and the proxy's initialisation and data order; the fitted scorers are fitted once (seed 0).
Each scorer's throughput over the whole pool is its docs/s through `score_corpus` on this CPU.
Resumable: finished scores, selections and proxy runs under the work folder are reused.

    python benchmarks/selection_quality.py [--seeds 0,1] [--keep 0.1] [--tokens 400000]
        [--methods random,fasttext,perplexity,betr,preselect] [--embedder static]

`--target tech` is a second, non-math target (benchmarks/_news_target.py): BBC technology news,
half of it taken out of the pool; 100 of those articles are the examples the scorers see (MASS
takes keyphrase skills from them, against a sample of the pool), the rest the held-out domain
`bbc_tech`. Its own work folder; staged methods (MATES) stay math-only.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _common import CACHE, emit

from assay.common.targets import load_targets
from assay.demo import build_demo_corpus
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import Scorer, load_scorer
from assay.selection.score import score_corpus
from assay.selection.select import SelectConfig, select

METHODS = (
    "random", "fasttext", "perplexity", "betr", "preselect", "preselect_top", "mass", "mates",
    "mates_random", "dsir", "ngram_lm",
)  # fmt: skip
#: selection policy of each method (top-k unless named); DSIR resamples by Gumbel top-k
POLICY = {"dsir": {"policy": "gumbel", "tau": 1.0}}
STAGED = ("mates", "mates_random")
TARGET = "competition_math"


def fit_scorer(method: str, pool: Corpus, work: Path, tok: str, args: Any) -> tuple[Scorer, str]:
    """Fit (or reload) one method's scorer; returns it and the selection mode."""
    from assay.proxies.train import train_proxy

    folder = work / "scorers" / method
    mode = "low" if method in ("perplexity", "ngram_lm") else "top"
    if (folder / "scorer.json").exists():
        return load_scorer(folder), mode
    targets = args.examples or load_targets("assay_champ")
    if method == "fasttext":
        from assay.selection.fasttext import DEFAULT_PARAMS, FastTextScorer, adapt_to_sample

        neg = pool.sample(2000, seed=0).get_column("text").to_list()
        params = adapt_to_sample(DEFAULT_PARAMS, 2 * len(targets))
        scorer = FastTextScorer(column=method, params=params).fit(targets, neg, seed=0)
    elif method == "perplexity":
        from assay.selection.perplexity import PerplexityScorer

        ref = train_proxy(
            pool, "natural", args.tokens, "tiny", 0, out_dir=work / "reference-lm",
            tokenizer=tok, progress=False,
        )  # fmt: skip
        scorer = PerplexityScorer(ref.model_dir, column=method)
    elif method == "betr":
        from assay.selection.betr import fit_betr

        scorer = fit_betr(
            pool, targets, sample=args.betr_sample, seed=0, column=method,
            embedder={"model": args.embedder},
        )  # fmt: skip
    elif method == "preselect":
        from assay.common.tokenizer import load_tokenizer
        from assay.common.tokens import TokenCache
        from assay.workflows.family import family_members, train_family
        from assay.workflows.preselect import fit_preselect

        cache = TokenCache.build(pool, load_tokenizer(tok), work / "tokens")
        members = family_members(
            "mixture", 5, tokens=args.family_tokens, domains=sorted(cache.domains), seed=0
        )
        runs = train_family(cache, members, work / "family", tokenizer=tok, progress=False)
        models = [{"path": r.model_dir, "name": m.name} for r, m in zip(runs, members, strict=True)]
        scorer = fit_preselect(
            pool, models, targets=targets, calibration=args.calibration, seed=0, column=method
        )
    elif method == "preselect_top":
        scorer = refit_preselect_top(pool, work, args)
    elif method == "mass":
        from assay.selection.mass import fit_mass

        # the reference's skills are the CHAMP concepts its problems are annotated with; on the
        # news target, keyphrases of the examples more frequent there than in the pool
        scorer = fit_mass(
            args.examples or "assay_champ", skills="keyphrase" if args.examples else "tags",
            seed=0, column=method, embedder={"model": args.mass_embedder}, background=pool,
        )  # fmt: skip
    elif method == "ngram_lm":
        from assay.selection.ngram_lm import fit_ngram_lm

        scorer = fit_ngram_lm(targets, column=method)
    elif method == "dsir":
        from assay.selection.dsir import fit_dsir

        scorer = fit_dsir(pool, targets, seed=0, column=method)
    else:
        raise ValueError(method)
    return scorer.save(folder), mode


def refit_preselect_top(pool: Corpus, work: Path, args: Any) -> Scorer:
    """PreSelect's labels with the top-10% rule instead of "perfect strength only", from the
    same calibration losses (no model is run again): at this scale only ~1% of documents are
    perfectly concordant, too few positives for fastText."""
    from assay.selection.preselect import PreSelectScorer
    from assay.util.files import read_json

    fit_scorer("preselect", pool, work, str(work / "tokenizer"), args)
    cal = pl.read_parquet(work / "scorers" / "preselect" / "calibration.parquet")
    family = read_json(work / "scorers" / "preselect" / "family.json")
    names = [m["name"] for m in family["models"]]
    text_of = {
        i: t
        for b in pool.iter_batches()
        for i, t in zip(b.get_column("id"), b.get_column("text"), strict=True)
    }
    ids = cal.get_column("id").to_list()
    losses = np.stack([cal.get_column(f"bpc.{n}").to_numpy() for n in names])
    scorer = PreSelectScorer(column="preselect_top", min_positives=len(ids) // 10)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the top-fraction rule warns that it departs from the paper
        return scorer.fit(
            [text_of[i] for i in ids],
            losses=losses,
            benchmark_scores=[m["benchmark_score"] for m in family["models"]],
            ids=ids,
            model_names=names,
            seed=0,
        )


def staged_entry(
    method: str, pool: Corpus, heldout: Corpus, work: Path, tok: str, seeds: list[int], args: Any
) -> dict[str, Any]:
    """MATES (or its random twin) trained in 2 stages on the pool; the final proxy measured."""
    from assay.eval import evaluate_model
    from assay.workflows.mates import run_mates

    entry: dict[str, Any] = {"runs": []}
    for seed in seeds:
        t0 = time.perf_counter()
        res = run_mates(
            pool, work / "staged" / f"{method}-{seed}", targets="assay_champ", max_targets=32,
            stage_tokens=args.tokens // 2, stages=2, keep=0.2, tau=0.5, probes=args.mates_probes,
            preset="tiny", seed=seed, tokenizer=tok, heldout=heldout, eval_docs=None,
            embedder={"model": "static"}, method="mates" if method == "mates" else "random",
            progress=False,
        )  # fmt: skip
        champ = evaluate_model(res.model_dir, tasks=["assay_champ"])["tasks"]["assay_champ"]
        general = [v for d, v in res.heldout_bpb.items() if d != TARGET]
        last = res.stages[-1]
        entry["runs"].append(
            {
                "seed": seed,
                "target_bpb": round(res.heldout_bpb[TARGET], 4),
                "general_bpb": round(float(np.mean(general)), 4),
                "champ_logprob": round(float(champ["logprob"]), 4),
                "champ_acc": round(float(champ["acc"]), 4),
                "seconds": round(time.perf_counter() - t0, 1),
                "probes_per_second": last.probing.get("probes_per_second"),
                "influence_spearman": last.influence_model.get("spearman"),
                "influence_head": last.influence_model.get("head"),
            }
        )
    return summarize(entry)


def summarize(entry: dict[str, Any]) -> dict[str, Any]:
    """Means and spread over the seeds' runs."""
    runs = entry["runs"]
    tb = [r["target_bpb"] for r in runs]
    entry["target_bpb_mean"] = round(float(np.mean(tb)), 4)
    entry["target_bpb_spread"] = round(float(np.max(tb) - np.min(tb)), 4)
    entry["general_bpb_mean"] = round(float(np.mean([r["general_bpb"] for r in runs])), 4)
    entry["champ_logprob_mean"] = round(float(np.mean([r["champ_logprob"] for r in runs])), 4)
    return entry


def composition(selected: Path) -> dict[str, float]:
    frame = pl.concat(
        [b.select("source", "text") for b in Corpus(selected).iter_batches()], how="vertical"
    )
    chars = frame.get_column("text").str.len_chars().cast(pl.Float64)
    champ = frame.get_column("source").str.starts_with("champ/").to_numpy()
    sympy = (frame.get_column("source") == "sympy").to_numpy()
    total = float(chars.sum())
    return {
        "docs": frame.height,
        "champ_docs": int(champ.sum()),
        "champ_share_of_chars": round(float(chars.to_numpy()[champ].sum()) / total, 4),
        "sympy_share_of_chars": round(float(chars.to_numpy()[sympy].sum()) / total, 4),
    }


# ---------------------------------------------------------------------------------------------
# Contamination: how much benchmark text a selection holds, and a decontaminated pool

#: what a selection is checked against: `eval`, the held-out target documents the proxies are
#: measured on; `champ`, the benchmark examples the target-driven scorers see
CONTAM_SOURCES = ("eval", "champ")


def contamination_indexes(manifest: dict[str, Any]) -> dict[str, Any]:
    """A word 13-gram index (`DecontamScorer`) of each source of benchmark text."""
    from assay.selection.decontam import fit_decontam

    eval_file = Path(manifest["targets"]) / f"{TARGET}.jsonl.gz"
    return {"eval": fit_decontam(str(eval_file)), "champ": fit_decontam("assay_champ")}


def contamination(selected: Path, indexes: dict[str, Any]) -> dict[str, int]:
    """How many selected documents share a word 13-gram with each source's text."""
    counts = dict.fromkeys(indexes, 0)
    for batch in Corpus(selected).iter_batches():
        texts = batch.get_column("text").to_list()
        for name, scorer in indexes.items():
            counts[name] += int((scorer.score(texts) > 0).sum())
    return {f"contaminated_{name}": n for name, n in counts.items()}


def decontaminated_pool(
    pool: Corpus, manifest: dict[str, Any], sources: list[str], work: Path
) -> tuple[Corpus, dict[str, Any]]:
    """The pool without the documents that share a word 13-gram with the chosen sources' text
    (`eval`, `champ`), written once under `work`; and what was removed."""
    from assay.selection.decontam import NGRAMS_COLUMN, contamination_report, fit_decontam

    unknown = sorted(set(sources) - set(CONTAM_SOURCES))
    if unknown:
        raise SystemExit(f"--decontaminate: unknown {unknown}; choose from {CONTAM_SOURCES}")
    files = {"eval": str(Path(manifest["targets"]) / f"{TARGET}.jsonl.gz"), "champ": "assay_champ"}
    first, *rest = [files[s] for s in sources]
    folder = work / "decontaminate"
    scorer = fit_decontam(first, also=rest)
    score_corpus(scorer, pool, folder / "scores")
    cfg = SelectConfig(
        column=NGRAMS_COLUMN, policy="threshold", threshold=0, mode="bottom", group_by=None
    )
    result = select(pool, folder / "scores", folder / "pool", cfg)
    report = contamination_report(folder / "scores", scorer)
    info = {
        "sources": sources,
        "removed_docs": result.docs - result.kept_docs,
        "overlapped_items": len(report["items"]),
    }
    return Corpus(folder / "pool"), info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--keep", type=float, default=0.1)
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--embedder", default=None, help="BETR/MASS embedder: MiniLM (default) or static"
    )
    ap.add_argument("--betr-sample", type=int, default=3000)
    ap.add_argument("--mates-probes", type=int, default=300)
    ap.add_argument("--mass-embedder", default="static", help="MASS embedder (static or MiniLM)")
    ap.add_argument("--calibration", type=int, default=1500)
    ap.add_argument("--family-tokens", type=int, default=150_000)
    ap.add_argument("--target", default="math", choices=("math", "tech"))
    ap.add_argument("--work", default=None, help="default: CACHE/selection-quality[-tech]")
    ap.add_argument(
        "--measure-throughput",
        action="store_true",
        help="score the pool again with scorers whose scores were reused, to time them",
    )
    ap.add_argument(
        "--decontaminate",
        default="",
        help="first drop the pool documents sharing a word 13-gram with these, comma-separated: "
        "eval (the held-out target documents), champ (the benchmark examples); results go to "
        "a subfolder of --work",
    )
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")

    from assay.common.tokenizer import train_tokenizer
    from assay.proxies.model import get_preset
    from assay.proxies.train import train_proxy

    root = CACHE / "demo"
    manifest = build_demo_corpus(root, size="full")
    pool = Corpus(manifest["train"])
    heldout = Corpus([manifest["heldout"], manifest["targets"]])
    work = Path(args.work or CACHE / "selection-quality")
    target, args.examples, share = TARGET, None, composition
    if args.target == "tech":
        from _news_target import target_share, tech_target

        if set(methods) & set(STAGED):
            raise SystemExit("the tech target does not run the staged methods (MATES)")
        work = Path(args.work or CACHE / "selection-quality-tech")
        news = tech_target(manifest, work)
        pool, heldout, args.examples, target = news.pool, news.heldout, news.examples, news.domain
        share = target_share
    tok = work / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        train_tokenizer(pool, get_preset("tiny").vocab_size, tok, seed=0)
    runner = LocalRunner(workers=1, progress=False)
    # contamination is counted against the math target's texts (eval, assay_champ)
    indexes = contamination_indexes(manifest) if args.target != "tech" else {}
    decontaminated = None
    if args.decontaminate:
        sources = args.decontaminate.split(",")
        work = work / f"decontaminated-{'+'.join(sources)}"
        pool, decontaminated = decontaminated_pool(pool, manifest, sources, work)
        if not (work / "tokenizer").exists():  # the same tokenizer as the whole pool's runs
            shutil.copytree(tok, work / "tokenizer")
        tok = work / "tokenizer"
        print(f"# decontaminated: {decontaminated}", flush=True)

    results: dict[str, Any] = {}
    for method in methods:
        if method in STAGED:
            results[method] = staged_entry(method, pool, heldout, work, str(tok), seeds, args)
            print(f"# {method}: target bpb {[r['target_bpb'] for r in results[method]['runs']]}", flush=True)  # fmt: skip
            continue
        t0 = time.perf_counter()
        if method == "random":
            fit_seconds, mode = 0.0, "top"
        else:
            scorer, mode = fit_scorer(method, pool, work, str(tok), args)
            fit_seconds = time.perf_counter() - t0
        entry: dict[str, Any] = {"fit_seconds": round(fit_seconds, 1), "runs": []}
        for seed in seeds:
            if method == "random":
                from assay.selection.random_scorer import RandomScorer

                scorer = RandomScorer(column="random", seed=seed)
            scores = work / "scores" / (f"random-{seed}" if method == "random" else method)
            result = score_corpus(scorer, pool, scores, runner=runner)
            rate = result.to_dict()["docs_per_second"]
            if rate and not result.resumed:  # a fresh scoring pass: its throughput
                entry["score_docs_per_second"] = rate
            elif args.measure_throughput and seed == seeds[0]:  # score again, into a scratch folder
                with tempfile.TemporaryDirectory() as tmp:
                    again = score_corpus(scorer, pool, tmp, runner=runner)
                entry["score_docs_per_second"] = again.to_dict()["docs_per_second"]
            sel_seed = seed if method == "random" else 0
            selected = work / "selected" / f"{method}-{sel_seed}"
            select(
                pool, scores, selected,
                SelectConfig(column=method, keep=args.keep, by="chars", mode=mode, seed=sel_seed, group_by=None, **POLICY.get(method, {})),
                runner=runner,
            )  # fmt: skip
            run = train_proxy(
                Corpus(selected), "natural", args.tokens, "tiny", seed,
                out_dir=work / "proxies" / f"{method}-{seed}", tokenizer=str(tok),
                heldout=heldout, eval_docs=None, tasks=["assay_champ"], progress=False,
            )  # fmt: skip
            general = [v for d, v in run.bpb.items() if d != target]
            entry["runs"].append(
                {
                    "seed": seed,
                    "target_bpb": round(run.bpb[target], 4),
                    "general_bpb": round(float(np.mean(general)), 4),
                    "champ_logprob": round(float(run.tasks["assay_champ"]["logprob"]), 4),
                    "champ_acc": round(float(run.tasks["assay_champ"]["acc"]), 4),
                    "selection": share(selected),
                    "contamination": contamination(selected, indexes),
                    "epochs_note": run.data.get("cap_note"),
                }
            )
        results[method] = summarize(entry)
        print(f"# {method}: target bpb {[r['target_bpb'] for r in entry['runs']]}", flush=True)

    if "random" in results:
        base = results["random"]["target_bpb_mean"]
        spread = results["random"]["target_bpb_spread"]
        for entry in results.values():
            entry["target_bpb_vs_random"] = round(entry["target_bpb_mean"] - base, 4)
            entry["beats_random"] = bool(entry["target_bpb_mean"] < base - max(spread, 1e-3))
    emit(
        {
            "benchmark": "selection_quality",
            "target": target,
            "keep_chars": args.keep,
            "proxy": {"preset": "tiny", "tokens": args.tokens, "seeds": seeds},
            "betr_embedder": args.embedder or "all-MiniLM-L6-v2",
            "mass_embedder": args.mass_embedder or "all-MiniLM-L6-v2",
            "decontaminated": decontaminated,
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
