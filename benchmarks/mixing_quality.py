"""Does a mixing method help? Same final budget, same proxy, same seeds; only the mixture differs.

Corpus: the demo corpus (news, math, code, reference prose; ~5,600 real documents) clustered
into domains from its embeddings (a static model distilled from MiniLM, k-means, Ward merge);
its source labels are never used. The held-out split is labelled with the same centroids.
Target: the held-out bits per byte averaged over the cluster domains, each domain counted
once (`bpb.domain_mean`, which is also what BiMix's unweighted optimum minimises).

Methods:
- natural (token-proportional), uniform, temperature (p ~ n^(1/2)), entropy (BiMix's
  conditional bigram entropy, softmax-normalised): training-free
- regmix: `--search-runs` proxies on Dirichlet proposals, a predictor over 10,000 candidates,
  the mean of the top 16 predicted mixtures
- climb: the same number of proxies spent over 3 iterations (4:2:1), the best predicted
  (`--predictor`: lightgbm, as both papers, linear, or auto: the better held-out Spearman)
- bimix: the law fitted on `--bimix-runs` proxies' evaluation curves, optimal proportions for
  the final budget (every share at least 1%)

Then, for every method and seed, a tiny proxy (1M parameters) trains on `--final-tokens`
tokens of that mixture; the table reports its held-out metric (mean and spread over seeds).
Also reported: each search predictor's held-out (5-fold) Spearman correlation over its own
proxy runs; BiMix's extrapolation error (fit on every step but the last of each run, predict
the last), its leave-one-run-out R^2, and the relative error of its predictions for the final
runs, which extrapolate in both mixture and budget. Plots (PNG) go to `<work>/plots`.
Search and fitting proxies are not free: the compute each method spent before the final run
is reported beside it. Resumable: finished proxy runs are reused.

    python benchmarks/mixing_quality.py [--seeds 0,1] [--final-tokens 300000] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import CACHE, emit

from assay.common.mixture import Mixture
from assay.common.numerics import spearman
from assay.demo import build_demo_corpus
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.mixing.baselines import baseline_mixture
from assay.mixing.cluster import assign_domains, cluster_corpus, read_clusters
from assay.mixing.predictors import out_of_fold
from assay.report import plot_bimix_fits, plot_mixtures, plot_predicted_vs_measured
from assay.workflows.bimix import fit_bimix
from assay.workflows.proxy_batch import token_cache_for, train_mixtures
from assay.workflows.search import search_mixture

BASELINES = ("natural", "uniform", "temperature", "entropy")
OBJECTIVE = "bpb.domain_mean"


def domain_mean(run: dict[str, Any]) -> float:
    return float(np.mean(list(run["bpb"].values())))


def cluster(work: Path, args: Any) -> tuple[Corpus, list[str]]:
    manifest = build_demo_corpus(CACHE / "demo", size="full")
    out = work / "clusters"
    if not (out / "_clusters.json").exists():
        cluster_corpus(
            Corpus(manifest["train"]), out, embedder={"model": "static"}, k_init=args.k_init,
            n_domains=args.domains, min_cluster_share=0.015, seed=0,
        )  # fmt: skip
    held = work / "heldout"
    if not (held / "corpus").exists():
        assign_domains(Corpus(manifest["heldout"]), out, held)
    return Corpus(out / "corpus"), [str(held / "corpus")]


def search_predictions(result: Any, domains: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of the predictor the search used, over its own proxy runs, and
    the measurements."""
    X = np.vstack([Mixture(r["mixture"]).vector(domains) for r in result.runs])
    y = np.array([r["metric"] for r in result.runs])
    return out_of_fold(result.predictor, X, y, folds=min(5, len(y))), y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--final-tokens", type=int, default=300_000)
    ap.add_argument("--search-tokens", type=int, default=100_000)
    ap.add_argument("--search-runs", type=int, default=12)
    ap.add_argument("--bimix-tokens", type=int, default=150_000)
    ap.add_argument("--bimix-runs", type=int, default=4)
    ap.add_argument("--bimix-evals", type=int, default=8)
    ap.add_argument("--domains", type=int, default=6)
    ap.add_argument("--k-init", type=int, default=24)
    ap.add_argument("--eval-docs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--predictor", default="auto", help="search predictor: auto, lightgbm, linear")
    ap.add_argument("--work", default=str(CACHE / "mixing-quality"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    runner = LocalRunner(workers=args.workers, progress=False)
    train = {"batch_size": 8}  # 2,048 tokens a step: more steps for the same small budget
    common = {"eval_docs": args.eval_docs, "train": train, "runner": runner}

    t0 = time.perf_counter()
    corpus, heldout = cluster(work, args)
    clusters = read_clusters(work / "clusters")
    cache, tok = token_cache_for(corpus, work, vocab_size=2048, seed=0)
    domains = sorted(cache.domains)
    timings = {"cluster_and_tokenize_s": round(time.perf_counter() - t0, 1)}

    mixtures: dict[str, Mixture] = {}
    spent: dict[str, int] = {}
    for name in BASELINES:
        mixtures[name], _ = baseline_mixture(name, cache, temperature_t=2.0)
        spent[name] = 0
    searches = {}
    suffix = "" if args.predictor == "lightgbm" else f"-{args.predictor}"
    for method in ("regmix", "climb"):
        t0 = time.perf_counter()
        searches[method] = search_mixture(
            cache.root, work / f"{method}{suffix}", objective=OBJECTIVE, tokenizer=tok,
            tokens=args.search_tokens, runs=args.search_runs, method=method, heldout=heldout,
            predictor=args.predictor, seed=0, **common,
        )  # fmt: skip
        mixtures[method] = searches[method].best
        spent[method] = args.search_runs * args.search_tokens
        timings[f"{method}_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    bimix = fit_bimix(
        cache.root, work / "bimix", tokenizer=tok, tokens=args.bimix_tokens, heldout=heldout,
        runs=args.bimix_runs, evals=args.bimix_evals, budget=args.final_tokens, seed=0, **common,
    )  # fmt: skip
    mixtures["bimix"] = bimix.mixture
    spent["bimix"] = args.bimix_runs * args.bimix_tokens
    timings["bimix_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    names = list(mixtures)
    jobs = [(m, s) for m in names for s in seeds]
    finals = train_mixtures(
        cache.root, [mixtures[m].to_dict() for m, _ in jobs],
        [work / "final" / f"{m}{suffix if m in searches else ''}-s{s}" for m, s in jobs],
        tokens=args.final_tokens,
        tokenizer=tok, seeds=[s for _, s in jobs], heldout=heldout, **common,
    )  # fmt: skip
    timings["final_runs_s"] = round(time.perf_counter() - t0, 1)
    by_method: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    for (m, _), run in zip(jobs, finals, strict=True):
        by_method[m].append(run)

    table = {}
    for m in names:
        values = [domain_mean(r) for r in by_method[m]]
        per_domain = {d: float(np.mean([r["bpb"][d] for r in by_method[m]])) for d in domains}
        table[m] = {
            OBJECTIVE: float(np.mean(values)),
            "per_seed": values,
            "spread": float(max(values) - min(values)),
            "per_domain": per_domain,
            "mixture": {d: round(w, 4) for d, w in mixtures[m].items()},
            "proxy_tokens_spent": spent[m],
        }
    best_baseline = min(BASELINES, key=lambda m: table[m][OBJECTIVE])
    for m in names:
        table[m]["vs_best_baseline"] = table[m][OBJECTIVE] - table[best_baseline][OBJECTIVE]

    # BiMix: how well the law predicts each final run (a new mixture at a new budget)
    law = bimix.law
    law_pred, law_meas, rel_err = [], [], []
    for m in names:
        for run in by_method[m]:
            mix = run["effective_mixture"]
            pred = {d: law.laws[d].predict(mix[d], run["tokens"]) for d in domains if mix.get(d, 0) > 0}  # fmt: skip
            law_pred.append(float(np.mean(list(pred.values()))))
            law_meas.append(float(np.mean([run["bpb"][d] for d in pred])))
            rel_err += [abs(pred[d] / run["bpb"][d] - 1) for d in pred]
    quality = bimix.quality

    plots = work / "plots"
    oof = {f"{m}, {searches[m].predictor} (out-of-fold)": search_predictions(searches[m], domains) for m in searches}  # fmt: skip
    oof["BiMix law (final runs)"] = (law_pred, law_meas)
    import polars as pl

    points = pl.read_parquet(work / "bimix" / "points.parquet").to_dict(as_series=False)
    files = [
        plot_mixtures({m: mixtures[m].to_dict() for m in names}, plots / "weights.png"),
        plot_predicted_vs_measured(oof, plots / "predicted_vs_measured.png", metric=OBJECTIVE),
        plot_bimix_fits(points, law, plots / "bimix_fits.png"),
    ]
    named = {d: {"top_terms": v["top_terms"][:6], "docs": v["docs"]} for d, v in clusters["domains"].items()}  # fmt: skip
    oof_rho = {k: spearman(np.asarray(p), np.asarray(y)) for k, (p, y) in oof.items()}
    emit(
        {
            "benchmark": "mixing_quality",
            "objective": OBJECTIVE,
            "domains": named,
            "settings": vars(args),
            "methods": table,
            "best_baseline": best_baseline,
            "predictor_spearman": {m: searches[m].spearman for m in searches},
            "predictor_used": {m: searches[m].predictor for m in searches},
            "predictor_oof_spearman_check": oof_rho,
            "bimix": {
                "law": law.to_dict(),
                "extrapolation_last_step": quality["extrapolation"],
                "heldout_r2": quality.get("heldout_r2"),
                "final_runs_mean_rel_error": float(np.mean(rel_err)),
                "final_runs_max_rel_error": float(np.max(rel_err)),
            },
            "timings": timings,
            "plots": files,
        }
    )


if __name__ == "__main__":
    main()
