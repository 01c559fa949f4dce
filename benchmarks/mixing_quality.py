"""Does a mixing method help on a downstream target? Same final budget, proxy and seeds; only
the mixture differs.

Pool (`_mixing_pool.py`): the demo corpus' labelled domains (news, math, code, reference) plus
an off-target domain (`tables`: CPython's codec tables of Unicode names) and a junk-like one
(`junk`: shuffled, noised and boilerplate copies of a fifth of the pool). `--pools` runs it as
`labelled` (the source labels are the domains) and/or `clustered` (static embeddings, k-means,
Ward merge into `--domains` domains; the labels unused, as the old benchmark did).
Target: competition math (champ problems and concepts the pool never sampled), an external
set that is none of the training domains: searches minimise the bits per byte of its `dev`
half; the table reports its `test` half.

Methods: natural (token-proportional) and uniform, the baselines; temperature (p ~ n^(1/2))
and entropy (BiMix's conditional bigram entropy), training-free; regmix (`--search-runs`
proxies on Dirichlet proposals, the mean of the predictor's top 16 of 10,000 candidates);
climb (the same budget over 3 iterations, 4:2:1); bimix (the law fitted on the pool's own
held-out domains, which do not include the target: BiMix is target-agnostic by design).
Guarded (`--max-share`, the search option `max_share`): `regmix+cap` is the RegMix answer
with every domain capped, from the same proxy runs (no new proxies); `climb+cap` a CLIMB
search capped from its first proposal. `regmix-junk` (when RegMix chose junk) is RegMix's
mixture without its junk share. Are the proxies fooled? The RegMix search's best run with at
least half junk (`junky_run`) and its best with under a tenth (`clean_run`), and RegMix with
and without its junk, are trained at both the search and the final budget
and at `--probe-tokens` (`junk_effect_by_budget`): a pair whose order flips between the
budgets is a fooled search.

For each method and seed a 1M-parameter proxy trains on `--final-tokens` of the mixture. The
table reports target-test bpb (mean, spread over seeds), the junk share of the mixture, and
against natural and uniform whether the method is better or worse by more than the seed
spread (`verdict`). Also: each search predictor's (LightGBM, linear) out-of-fold Spearman over
the search's own runs, mean and range over 10 fold assignments; the Spearman of a search run's
junk share with its target metric. Resumable (finished proxy runs are reused); run it niced.

    nice python benchmarks/mixing_quality.py [--pools labelled,clustered] [--seeds 0,1,2]

The defaults are a reduced configuration (labelled pool, 16 search proxies of 50k tokens,
finals of 150k); the README gives the full command.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import CACHE, emit
from _mixing_pool import DEV, JUNK, TEST, build_pool, junk_fraction, junk_share

from assay.common.mixture import Mixture
from assay.common.numerics import spearman
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.mixing.baselines import baseline_mixture
from assay.mixing.climb import ClimbSearch
from assay.mixing.cluster import assign_domains, cluster_corpus
from assay.mixing.predictors import out_of_fold
from assay.workflows.bimix import fit_bimix
from assay.workflows.proxy_batch import token_cache_for, train_mixtures
from assay.workflows.search import search_mixture

BASELINES = ("natural", "uniform")
TRAINING_FREE = ("temperature", "entropy")
METHODS = (*BASELINES, *TRAINING_FREE, "regmix", "regmix+cap", "regmix-junk", "climb", "climb+cap", "bimix")  # fmt: skip
OBJECTIVE = f"bpb.{DEV}"


def verdict(method: list[float], base: list[float]) -> dict[str, Any]:
    """`method` against `base` (per-seed values, lower is better): the mean difference, the
    seed spread (the larger of the two ranges) and 'better' / 'worse' when the difference is
    more than the spread, 'within spread' otherwise."""
    diff = float(np.mean(method) - np.mean(base))
    spread = float(max(np.ptp(method), np.ptp(base)))
    label = "better" if -diff > spread else "worse" if diff > spread else "within spread"
    return {"diff": round(diff, 4), "spread": round(spread, 4), "verdict": label}


def predictor_quality(runs: list[dict[str, Any]], domains: list[str]) -> dict[str, Any]:
    """Out-of-fold (5-fold) Spearman of LightGBM and of the linear model over a search's runs:
    mean, min and max over 10 fold assignments."""
    X = np.vstack([Mixture(r["mixture"]).vector(domains) for r in runs])
    y = np.array([r["metric"] for r in runs])
    out = {}
    for kind, params in (("lightgbm", {"preset": "climb"}), ("linear", {})):
        rho = [spearman(out_of_fold(kind, X, y, folds=5, seed=s, **params), y) for s in range(10)]
        rho = [r if np.isfinite(r) else 0.0 for r in rho]
        out[kind] = {"mean": round(float(np.mean(rho)), 3), "min": round(min(rho), 3), "max": round(max(rho), 3)}  # fmt: skip
    return out


def capped_answer(search: Any, counts: dict[str, int], args: Any) -> Mixture:
    """The RegMix answer under `max_share`, from the uncapped search's runs (no new proxies)."""
    capped = ClimbSearch(
        counts, predictor=search.predictor, seed=0, budget=args.search_tokens,
        max_share=args.max_share,
    )  # fmt: skip
    for r in search.runs:
        capped.observe(r["mixture"], r["metric"])
    return capped.best(average_top_k=16)


def junk_probes(runs: list[dict[str, Any]], fraction: dict[str, float]) -> dict[str, Mixture]:
    """The search's best run with at least half junk ('junky_run') and its best with under a
    tenth ('clean_run'): trained at both budgets, they show whether the proxies were fooled."""
    ranked = sorted(runs, key=lambda r: r["metric"])
    share = [junk_share(r["mixture"], fraction) for r in ranked]
    junky = [r for r, j in zip(ranked, share, strict=True) if j >= 0.5]
    clean = [r for r, j in zip(ranked, share, strict=True) if j < 0.1]
    if not junky or not clean:
        return {}
    return {"junky_run": Mixture(junky[0]["mixture"]), "clean_run": Mixture(clean[0]["mixture"])}


def pool_inputs(name: str, folders: dict[str, Path], work: Path, args: Any) -> tuple[Corpus, str]:
    """The pool as a corpus with domains (labels, or clusters) and its held-out split."""
    if name == "labelled":
        return Corpus(folders["train"]), str(folders["heldout"])
    out = work / "clusters"
    if not (out / "_clusters.json").exists():
        cluster_corpus(
            Corpus(folders["train"]), out, embedder={"model": "static"}, k_init=args.k_init,
            n_domains=args.domains, min_cluster_share=0.015, seed=0,
        )  # fmt: skip
    held = work / "heldout"
    if not (held / "corpus").exists():
        assign_domains(Corpus(folders["heldout"]), out, held)
    return Corpus(out / "corpus"), str(held / "corpus")


def mixtures_for(name: str, folders: dict[str, Path], work: Path, args: Any, runner: Any) -> dict[str, Any]:  # fmt: skip
    """Every method's mixture on one pool, what its search or fit spent, and diagnostics."""
    t0 = time.perf_counter()
    corpus, heldout = pool_inputs(name, folders, work, args)
    cache, tok = token_cache_for(corpus, work, vocab_size=2048, seed=0)
    counts = {d: t.n_tokens for d, t in cache.domains.items()}
    fraction = junk_fraction(corpus)
    common = {"eval_docs": args.eval_docs, "train": {"batch_size": 8}, "runner": runner}
    target = [str(folders["target"])]
    out: dict[str, Any] = {"mixtures": {}, "spent": {}, "timings": {}, "counts": counts}
    out.update(cache=cache, tok=tok, fraction=fraction, target=target, common=common)
    out["timings"]["prepare_s"] = round(time.perf_counter() - t0, 1)
    mixtures, spent = out["mixtures"], out["spent"]
    for m in (*BASELINES, *TRAINING_FREE):
        mixtures[m] = baseline_mixture(m, cache, temperature_t=2.0)[0]
        spent[m] = 0
    searches = {}
    wanted = set(args.methods) | ({"regmix"} if {"regmix+cap", "regmix-junk"} & set(args.methods) else set())  # fmt: skip
    for method, cap in (("regmix", None), ("climb", None), ("climb+cap", args.max_share)):
        if method not in wanted:
            continue
        t0 = time.perf_counter()
        searches[method] = search_mixture(
            cache.root, work / method, objective=OBJECTIVE, tokenizer=tok, heldout=target,
            tokens=args.search_tokens, runs=args.search_runs, method=method.split("+")[0],
            predictor=args.predictor, max_share=cap, seed=0, **common,
        )  # fmt: skip
        mixtures[method], spent[method] = searches[method].best, args.search_runs * args.search_tokens  # fmt: skip
        out["timings"][f"{method}_s"] = round(time.perf_counter() - t0, 1)
    if "regmix" in searches:
        mixtures["regmix+cap"] = capped_answer(searches["regmix"], counts, args)
        spent["regmix+cap"] = spent["regmix"]
        if junk_share(mixtures["regmix"].to_dict(), fraction) >= 0.05 and JUNK in counts:
            keep = {d: w for d, w in mixtures["regmix"].items() if d != JUNK and w > 0}
            mixtures["regmix-junk"] = Mixture(keep, normalize=True)
            spent["regmix-junk"] = spent["regmix"]
        out["probes"] = junk_probes(searches["regmix"].runs, fraction)
    if "bimix" in args.methods:
        t0 = time.perf_counter()
        bimix = fit_bimix(
            cache.root, work / "bimix", tokenizer=tok, tokens=args.bimix_tokens, heldout=heldout,
            runs=args.bimix_runs, evals=args.bimix_evals, budget=args.final_tokens, seed=0,
            **{**common, "eval_docs": 100},
        )  # fmt: skip
        mixtures["bimix"], spent["bimix"] = bimix.mixture, args.bimix_runs * args.bimix_tokens
        out["timings"]["bimix_s"] = round(time.perf_counter() - t0, 1)
    out["searches"] = searches
    out["mixtures"] = {m: mixtures[m] for m in METHODS if m in mixtures and m in args.methods}
    return out


def run_pool(name: str, folders: dict[str, Path], args: Any, runner: Any) -> dict[str, Any]:
    work = Path(args.work) / name
    mx = mixtures_for(name, folders, work, args, runner)
    mixtures, fraction, domains = mx["mixtures"], mx["fraction"], sorted(mx["counts"])
    t0 = time.perf_counter()
    jobs = [(m, s, args.final_tokens) for m in mixtures for s in args.seeds]
    pairs = [p for p in (("regmix", "regmix-junk"), tuple(mx.get("probes", {}))) if len(p) == 2 and all(m in mixtures or m in mx.get("probes", {}) for m in p)]  # fmt: skip
    budgets = sorted({args.search_tokens, args.final_tokens, *args.probe_tokens})
    for pair in pairs:  # each pair at both budgets: are the proxies fooled?
        jobs += [(m, s, t) for t in budgets for m in pair for s in args.seeds if (m, s, t) not in jobs]  # fmt: skip
    finals = _train_jobs(mx, {**mixtures, **mx.get("probes", {})}, jobs, work)
    mx["timings"]["final_runs_s"] = round(time.perf_counter() - t0, 1)
    values: dict[tuple[str, int], list[float]] = {}
    for (m, _, t), run in zip(jobs, finals, strict=True):
        values.setdefault((m, t), []).append(float(run["bpb"][TEST]))
    table = {}
    for m in mixtures:
        v = values[(m, args.final_tokens)]
        mix = mixtures[m].to_dict()
        table[m] = {
            "bpb_test": round(float(np.mean(v)), 4),
            "per_seed": [round(x, 4) for x in v],
            "spread": round(float(np.ptp(v)), 4),
            "junk_share": round(junk_share(mix, fraction), 3),
            "mixture": {
                d: round(w, 3) for d, w in sorted(mix.items(), key=lambda x: -x[1]) if w >= 0.005
            },
            "proxy_tokens_spent": mx["spent"][m],
            **{
                f"vs_{b}": verdict(v, values[(b, args.final_tokens)])
                for b in BASELINES
                if b in mixtures
            },
        }
    searches = mx["searches"]
    diagnostics: dict[str, Any] = {
        "predictor_used": {m: s.predictor for m, s in searches.items()},
        "predictor_oof_spearman": {
            m: predictor_quality(s.runs, domains) for m, s in searches.items()
        },
        "junk_share_vs_dev_bpb_spearman": {
            m: round(
                spearman(
                    np.array([junk_share(r["mixture"], fraction) for r in s.runs]),
                    np.array([r["metric"] for r in s.runs]),
                ),
                3,
            )
            for m, s in searches.items()
        },
    }
    diagnostics["probes"] = {k: {d: round(w, 3) for d, w in v.items() if w >= 0.01} for k, v in mx.get("probes", {}).items()}  # fmt: skip
    diagnostics["junk_effect_by_budget"] = {
        f"{a} vs {b}": {
            t: verdict(values[(a, t)], values[(b, t)])
            | {
                a: round(float(np.mean(values[(a, t)])), 4),
                b: round(float(np.mean(values[(b, t)])), 4),
            }
            for t in budgets
        }
        for a, b in pairs
    }
    return {
        "domains_tokens": mx["counts"],
        "junk_fraction": fraction,
        "methods": table,
        "diagnostics": diagnostics,
        "timings": mx["timings"],
    }


def _train_jobs(mx: dict[str, Any], mixtures: dict[str, Mixture], jobs: list[tuple[str, int, int]], work: Path) -> list[dict[str, Any]]:  # fmt: skip
    """The final runs, grouped by budget (one batch per budget, in the order of `jobs`)."""
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    for t in sorted({t for _, _, t in jobs}):
        batch = [(m, s) for m, s, tt in jobs if tt == t]
        runs = train_mixtures(
            mx["cache"].root, [mixtures[m].to_dict() for m, _ in batch],
            [work / "final" / f"{m}-t{t}-s{s}" for m, s in batch], tokens=t, tokenizer=mx["tok"],
            seeds=[s for _, s in batch], heldout=mx["target"], **mx["common"],
        )  # fmt: skip
        out.update({(m, s, t): r for (m, s), r in zip(batch, runs, strict=True)})
    return [out[j] for j in jobs]


def main() -> None:
    ap = argparse.ArgumentParser()
    # defaults: the reduced configuration (about 50 minutes on 2 shared cores); the full one is
    # in the README (both pools, climb+cap, 24 search proxies of 100k tokens, finals of 300k)
    ap.add_argument("--pools", default="labelled", help="labelled, clustered or both")
    ap.add_argument("--methods", default=",".join(m for m in METHODS if m != "climb+cap"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--final-tokens", type=int, default=150_000)
    ap.add_argument("--search-tokens", type=int, default=50_000)
    ap.add_argument("--search-runs", type=int, default=16)
    ap.add_argument("--probe-tokens", default="600000", help="more budgets for the junk probes")
    ap.add_argument("--max-share", type=float, default=0.3, help="the guarded methods' cap")
    ap.add_argument("--bimix-tokens", type=int, default=80_000)
    ap.add_argument("--bimix-runs", type=int, default=3)
    ap.add_argument("--bimix-evals", type=int, default=6)
    ap.add_argument("--domains", type=int, default=6)
    ap.add_argument("--k-init", type=int, default=24)
    ap.add_argument("--eval-docs", type=int, default=80, help="target documents per half")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--predictor", default="auto", help="search predictor: auto, lightgbm, linear")
    ap.add_argument("--work", default=str(CACHE / "mixing-target"))
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    args.probe_tokens = [int(t) for t in args.probe_tokens.split(",") if t]
    runner = LocalRunner(workers=args.workers, progress=False)
    folders = build_pool(Path(args.work))
    pools = {p: run_pool(p, folders, args, runner) for p in args.pools.split(",") if p}
    settings = {k: v for k, v in vars(args).items()}
    emit({"benchmark": "mixing_quality", "target": TEST, "settings": settings, "pools": pools})


if __name__ == "__main__":
    main()
