"""Does the order of mixtures found with 1M-parameter proxies hold for a model 5-6x larger
trained on more tokens? RegMix reports a Spearman correlation of 0.96 between the rankings of
its 1M and 1B models; this measures the same on the mixing benchmark's pool.

Pool and target: `_mixing_pool.py` (labelled demo domains plus `tables` and `junk`; the
external competition-math target, reported on its `target_test` half) and the pool's own
held-out split (`general`: the mean bits per byte over its domains, junk excluded).
Mixtures: natural, uniform, temperature (t = 2) and entropy, and `--random` seeded Dirichlet
draws around RegMix's prior (the natural distribution to the power 0.5), which is what a
search's proxies are trained on. Every mixture is trained at each scale (`--scale`,
`name=preset:tokens:seeds`; by default `tiny` (1.1M parameters) on 150k tokens, `tiny` on
600k, and `5m` (5.6M parameters, 6x the non-embedding size) on 600k tokens).

Reported for each pair of scales and each metric: the Spearman correlation of the mixtures'
mean values, with a 95% bootstrap interval (mixtures resampled with replacement, 2,000 draws)
and the permutation p-value; for a scale with two seeds or more, the Spearman between its
seeds (how well that scale ranks the mixtures against itself: the ceiling of any transfer
figure). The `tiny` at 600k row separates the effect of the model's size from that of the
tokens. Resumable (finished runs are reused); run it niced.

    nice python benchmarks/mixing_transfer.py [--random 6] [--scale large=5m:600000:0]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import CACHE, emit
from _mixing_pool import JUNK, TEST, build_pool

from assay.common.mixture import Mixture
from assay.common.numerics import spearman
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.mixing.baselines import baseline_mixture
from assay.mixing.propose import MixtureProposer
from assay.proxies.model import preset_parameters
from assay.workflows.proxy_batch import token_cache_for, train_mixtures

DEFAULT_SCALES = ("small=tiny:150000:0,1", "small_long=tiny:600000:0,1", "large=5m:600000:0")


def parse_scale(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.partition("=")
    preset, tokens, seeds = rest.split(":")
    return name, {"preset": preset, "tokens": int(tokens), "seeds": [int(s) for s in seeds.split(",")]}  # fmt: skip


def candidate_mixtures(cache: Any, n_random: int, seed: int) -> dict[str, Mixture]:
    out = {m: baseline_mixture(m, cache, temperature_t=2.0)[0] for m in ("natural", "uniform", "temperature", "entropy")}  # fmt: skip
    counts = {d: t.n_tokens for d, t in cache.domains.items()}
    for i, m in enumerate(MixtureProposer(counts, seed=seed).propose(n_random)):
        out[f"dirichlet-{i}"] = m
    return out


def shown(mixture: Mixture) -> dict[str, float]:
    return {d: round(w, 3) for d, w in mixture.to_dict().items() if w >= 0.005}


def rank_transfer(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Spearman of `a` and `b` (one value per mixture), a percentile bootstrap interval over the
    mixtures, and the one-sided permutation p-value of a correlation at least this large."""
    rng = np.random.default_rng(seed)
    rho = spearman(a, b)
    boot = []
    for _ in range(draws):
        i = rng.integers(0, len(a), len(a))
        r = spearman(a[i], b[i])
        if np.isfinite(r):
            boot.append(r)
    perm = np.array([spearman(a, rng.permutation(b)) for _ in range(draws)])
    return {
        "spearman": round(float(rho), 3),
        "ci95": [round(float(q), 3) for q in np.quantile(boot, [0.025, 0.975])],
        "p_value": round(float((np.sum(perm >= rho) + 1) / (draws + 1)), 4),
        "n": len(a),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--random", type=int, default=6, help="Dirichlet mixtures beside the 4 baselines"
    )
    ap.add_argument("--scale", action="append", help="name=preset:tokens:seeds (repeatable)")
    ap.add_argument("--eval-docs", type=int, default=80, help="documents per held-out domain")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default=str(CACHE / "mixing-target"))
    args = ap.parse_args()
    scales = dict(parse_scale(s) for s in (args.scale or DEFAULT_SCALES))
    work = Path(args.work)
    folders = build_pool(work)
    t0 = time.perf_counter()
    cache, tok = token_cache_for(Corpus(folders["train"]), work / "labelled", vocab_size=2048, seed=0)  # fmt: skip
    mixtures = candidate_mixtures(cache, args.random, seed=0)
    runner = LocalRunner(workers=args.workers, progress=False)
    heldout = [str(folders["target"]), str(folders["heldout"])]
    values: dict[str, dict[str, dict[str, list[float]]]] = {}  # scale -> metric -> mixture -> seeds
    timings: dict[str, float] = {}
    for name, sc in scales.items():
        t1 = time.perf_counter()
        jobs = [(m, s) for m in mixtures for s in sc["seeds"]]
        runs = train_mixtures(
            cache.root, [mixtures[m].to_dict() for m, _ in jobs],
            [work / "transfer" / f"{m}-{sc['preset']}-t{sc['tokens']}-s{s}" for m, s in jobs],
            tokens=sc["tokens"], tokenizer=tok, preset=sc["preset"], seeds=[s for _, s in jobs],
            heldout=heldout, eval_docs=args.eval_docs, train={"batch_size": 8}, runner=runner,
        )  # fmt: skip
        timings[name] = round(time.perf_counter() - t1, 1)
        per = values.setdefault(name, {"target": {}, "general": {}})
        for (m, _), run in zip(jobs, runs, strict=True):
            general = [v for d, v in run["bpb"].items() if d in cache.domains and d != JUNK]
            per["target"].setdefault(m, []).append(float(run["bpb"][TEST]))
            per["general"].setdefault(m, []).append(float(np.mean(general)))
    names = list(mixtures)
    table = {
        m: {s: {k: round(float(np.mean(v[m])), 4) for k, v in values[s].items()} for s in scales}
        for m in names
    }
    transfer: dict[str, Any] = {}
    for metric in ("target", "general"):
        means = {s: np.array([np.mean(values[s][metric][m]) for m in names]) for s in scales}
        pairs = {f"{a} vs {b}": rank_transfer(means[a], means[b]) for a, b in itertools.combinations(scales, 2)}  # fmt: skip
        seeds = {
            s: rank_transfer(*(np.array([values[s][metric][m][i] for m in names]) for i in (0, 1)))
            for s, sc in scales.items()
            if len(sc["seeds"]) >= 2
        }
        transfer[metric] = {"between_scales": pairs, "between_seeds": seeds}
    emit(
        {
            "benchmark": "mixing_transfer",
            "scales": {
                s: {**sc, "parameters": preset_parameters(sc["preset"], vocab_size=2048)}
                for s, sc in scales.items()
            },
            "mixtures": {m: shown(mixtures[m]) for m in names},
            "bpb": table,
            "transfer": transfer,
            "timings": {**timings, "total_s": round(time.perf_counter() - t0, 1)},
        }
    )


if __name__ == "__main__":
    main()
