"""Mixture search by proxies and a predictor: CLIMB's iterative bootstrapping (Diao et al.
2025), with RegMix (Liu et al. 2025) as its one-iteration case.

CLIMB, stage B:
- iteration 1 trains proxies on Dirichlet proposals around the token prior;
- each later iteration fits the predictor on every (mixture, metric) pair so far, scores a
  large candidate set with it, takes the top N and trains proxies on M of them, sampled;
- the proxy budget is split over iterations 4:2:1 by default (the paper's 64/32/16);
- the answer is the best candidate under the final predictor.

RegMix: one iteration of proposals, then predict over many candidates and average the top-k
predicted mixtures (more robust than the single argmin). `regmix_final` is RegMix's official
final step (sail-sg/regmix, regression_fitting/regression.ipynb, "Simulate"): 100,000 draws
from Dirichlet(token shares x 1), no caps and no rounding, the mean of the 128 with the lowest
prediction; `ClimbSearch.best` is ours: the proposer's draws (tempered prior, strengths, caps,
rounding) and the observed runs, the best one (CLIMB) or the mean of the top k.

`CLIMB_PAPER` holds the paper's settings (stage A clustering, stage B budget) for recipes that
follow it.

`ClimbSearch` is the ask/tell core (`propose(n)`, `observe(mixture, metric)`, `best()`), with no
training in it. `search_mixture` drives it with real proxies: every run of an iteration is
independent and goes through `runner.map` (a local process pool or Ray). Runs land in a runs
table, and a killed search resumes without redoing finished runs (a finished proxy folder is
recognised by `train_proxy`). The objective is any column of the runs table, minimised:
`bpb.<domain>`, `bpb.mean`, or a negated task metric (`-task.assay_champ.logprob`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.common.mixture import Mixture
from assay.errors import ConfigError, InputError
from assay.mixing.predictors import heldout_spearman, make_predictor
from assay.mixing.propose import MixtureProposer

#: CLIMB's published settings (Diao et al. 2025, Sec. 3 and App. D): K_init = 1,000 k-means
#: clusters on stella_en_400M_v5 embeddings, clusters of mean quality < 3.0 (of 5) pruned,
#: centroids closer than 1.5 merged (21 domains), then 3 iterations of 64 / 32 / 16 proxies
#: (112 in all, 4:2:1) with a LightGBM predictor (max depth 4, >= 5 samples per leaf, L1 and L2
#: regularisation, early stopping after 20 rounds: the "climb" preset). The candidate pool,
#: top N and M are not published. The paper clusters its whole corpus; `sample` here is ours,
#: 200 documents per initial cluster on average. "cluster" are `ClusterSettings` values (with
#: "prune_below" for `prune.below`, whose score the paper gets from its own quality
#: classifiers), "search" are `SearchSettings` values.
CLIMB_PAPER: dict[str, dict[str, Any]] = {
    "cluster": {"k_init": 1000, "sample": 200_000, "merge_distance": 1.5, "prune_below": 3.0},
    "search": {
        "method": "climb",
        "runs": 112,
        "split": [64.0, 32.0, 16.0],
        "predictor": "lightgbm",
        "lightgbm": "climb",
    },
}

#: RegMix's official final step: candidates, top k and the Dirichlet concentration (x shares)
REGMIX_FINAL = {"candidates": 100_000, "top_k": 128, "concentration": 1.0}


def regmix_final(
    predictor: Any,
    domains: Sequence[str],
    shares: np.ndarray,
    *,
    candidates: int = REGMIX_FINAL["candidates"],
    top_k: int = REGMIX_FINAL["top_k"],
    concentration: float = REGMIX_FINAL["concentration"],
    seed: int = 0,
    allowed: Any = None,
    chunk: int = 50_000,
) -> Mixture:
    """RegMix's final step: `candidates` draws from Dirichlet(`shares` x `concentration`)
    (`shares`: each domain's share of the tokens, in the order of `domains`), ranked by
    `predictor` (lower is better); the mean of the `top_k` lowest. Draws are made and ranked
    `chunk` at a time, keeping only the running top k, so memory does not grow with
    `candidates`. `allowed` (rows -> a bool per row), if given, drops draws before ranking."""
    if top_k < 1 or candidates < top_k:
        raise ConfigError(f"top_k={top_k} must be between 1 and candidates={candidates}")
    if not concentration > 0:
        raise ConfigError(f"the Dirichlet concentration must be positive, not {concentration}")
    alpha = np.maximum(np.asarray(shares, dtype=np.float64) * concentration, 1e-12)
    rng = np.random.default_rng([seed, 2])  # its own stream: not the proposals'
    best_w = np.empty((0, len(alpha)))
    best_p = np.empty(0)
    drawn = 0
    while drawn < candidates:
        w = rng.dirichlet(alpha, size=min(chunk, candidates - drawn))
        drawn += len(w)
        if allowed is not None:
            w = w[np.asarray(allowed(w), dtype=bool)]
        # earlier draws first, so that ties keep the order of a single stable sort
        best_w = np.vstack([best_w, w])
        best_p = np.concatenate([best_p, np.asarray(predictor.predict(w), dtype=np.float64)])
        order = np.argsort(best_p, kind="stable")[:top_k]
        best_w, best_p = best_w[order], best_p[order]
    if not len(best_w):
        raise ConfigError(f"none of {candidates:,} candidates satisfies the caps")
    return Mixture.from_vector(list(domains), best_w.mean(axis=0))


def split_budget(runs: int, split: Sequence[float]) -> list[int]:
    """Proxy runs per iteration, proportional to `split`, each at least 1."""
    if runs < len(split):
        raise ConfigError(
            f"a search of {runs} proxy runs is too small for {len(split)} iterations "
            "(each needs at least one run); add runs or use fewer iterations"
        )
    raw = np.asarray(split, dtype=np.float64) / np.sum(split) * runs
    out = np.maximum(1, np.floor(raw)).astype(int)
    while out.sum() < runs:  # hand the remainder to the largest fractional parts
        out[int(np.argmax(raw - out))] += 1
    while out.sum() > runs:
        out[int(np.argmax(out))] -= 1
    return out.tolist()


class ClimbSearch:
    """Ask/tell: `propose(n)` mixtures, `observe(mixture, metric)` (lower is better), `best()`."""

    def __init__(
        self,
        tokens_per_domain: Mapping[str, float],
        *,
        predictor: str = "auto",
        candidates: int = 10_000,
        top_n: int | None = None,
        regmix_top_k: int | None = None,
        lightgbm: str = "climb",
        seed: int = 0,
        **proposer: Any,
    ):
        if predictor not in ("auto", "lightgbm", "linear"):
            raise ConfigError(
                f"predictor must be 'auto', 'lightgbm' or 'linear', not {predictor!r}"
            )
        self.proposer = MixtureProposer(tokens_per_domain, seed=seed, **proposer)
        self.domains = self.proposer.domains
        self.predictor_kind = predictor
        self.lightgbm = lightgbm
        self.n_candidates, self.top_n, self.regmix_top_k = candidates, top_n, regmix_top_k
        self.rng = np.random.default_rng(seed + 1)
        self.seed = seed
        self.X: list[np.ndarray] = []
        self.y: list[float] = []
        self.predictor: Any = None
        self.auto_choice: str | None = None

    def observe(self, mixture: Mapping[str, float], metric: float) -> None:
        if not np.isfinite(metric):
            raise InputError(f"metric for {dict(mixture)} is not finite: {metric}")
        w = Mixture(mixture, normalize=True).vector(self.domains)
        self.X.append(w)
        self.y.append(float(metric))
        key = tuple(np.round(w, 10))
        self.proposer.seen.add(key)

    def fit(self) -> Any:
        if len(self.y) < 3:
            raise ConfigError(f"{len(self.y)} observed runs: the predictor needs at least 3")
        kind = self.chosen_kind()
        self.predictor = make_predictor(kind, **self._params(kind, seed=self.seed))
        self.predictor.fit(np.vstack(self.X), np.asarray(self.y))
        return self.predictor

    def _params(self, kind: str, **extra: Any) -> dict[str, Any]:
        return {"preset": self.lightgbm, **extra} if kind == "lightgbm" else {}

    def chosen_kind(self) -> str:
        """The predictor to use now: the one asked for, or with 'auto' whichever of LightGBM
        and linear has the higher k-fold held-out Spearman on the runs so far. LightGBM (CLIMB's
        choice at 64+ runs) cannot split with min 5 samples per leaf on a dozen runs; a linear
        model can still rank them."""
        if self.predictor_kind != "auto":
            return self.predictor_kind
        rho = {k: self.spearman(k) for k in ("lightgbm", "linear")}
        rho = {k: (v if np.isfinite(v) else -np.inf) for k, v in rho.items()}
        self.auto_choice = max(rho, key=lambda k: (rho[k], k == "lightgbm"))
        return self.auto_choice

    def propose(self, n: int) -> list[Mixture]:
        """The first call samples the prior; later calls sample from the predictor's top N."""
        if not self.y:
            return self.proposer.propose(n)
        self.fit()
        cand = self.proposer.candidates(self.n_candidates)
        seen = {tuple(np.round(r, 10)) for r in self.X}
        fresh = np.array([tuple(np.round(r, 10)) not in seen for r in cand])
        cand = cand[fresh]
        pred = self.predictor.predict(cand)
        top_n = min(len(cand), self.top_n or max(4 * n, len(cand) // 20))
        top = cand[np.argsort(pred, kind="stable")[:top_n]]
        pick = self.rng.choice(len(top), size=min(n, len(top)), replace=False)
        out = []
        for row in top[np.sort(pick)]:
            self.proposer.seen.add(tuple(np.round(row, 10)))
            out.append(Mixture.from_vector(self.domains, row))
        return out

    def best(self, *, average_top_k: int | None = None) -> Mixture:
        """The predictor's best candidate, or (RegMix) the mean of its top-k candidates; the
        candidates are the proposer's draws and the observed runs that keep its `max_share` and
        `max_epochs` caps (a run observed from elsewhere may not)."""
        self.fit()
        runs = np.vstack(self.X)
        runs = runs[self.proposer.allowed_final(runs)]
        cand = np.vstack([self.proposer.candidates(self.n_candidates), runs])
        pred = self.predictor.predict(cand)
        k = average_top_k or 1
        top = cand[np.argsort(pred, kind="stable")[:k]]
        return Mixture.from_vector(self.domains, top.mean(axis=0))

    def regmix_best(self, **final: Any) -> Mixture:
        """RegMix's official final step (`regmix_final`) with the predictor fitted on every run
        so far, over the corpus' token shares; the proposals' `max_share` caps and `max_epochs`
        cap, if set, are kept (the official step has none)."""
        self.fit()
        p = self.proposer
        return regmix_final(
            self.predictor,
            self.domains,
            p.natural,
            seed=self.seed,
            allowed=p.allowed_final,
            **final,
        )

    def spearman(self, kind: str | None = None) -> float:
        """k-fold held-out Spearman of the predictor on the observed runs."""
        folds = min(5, len(self.y))
        kind = kind or (self.predictor_kind if self.predictor_kind != "auto" else "lightgbm")
        X, y = np.vstack(self.X), np.asarray(self.y)
        return heldout_spearman(kind, X, y, folds=folds, **self._params(kind))


# ---------------------------------------------------------------------------------------------
# Driving the search with real proxies


@dataclass
class SearchResult:
    best: Mixture
    objective: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # per run: iteration, mixture, metric
    spearman: dict[str, float] = field(default_factory=dict)
    iterations: list[int] = field(default_factory=list)
    predictor: str = ""
    final: dict[str, Any] = field(default_factory=dict)  # how the answer was picked

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best.to_dict(),
            "objective": self.objective,
            "iterations": self.iterations,
            "spearman": self.spearman,
            "predictor": self.predictor,
            "final": self.final,
            "runs": self.runs,
        }


def objective_value(row: Mapping[str, Any], objective: str) -> float:
    """A runs-table row's objective: a column name, negated with a leading '-'."""
    sign, name = (-1.0, objective[1:]) if objective.startswith("-") else (1.0, objective)
    if name not in row or row[name] is None:
        raise ConfigError(
            f"objective {name!r} is not a column of the runs table (columns: {sorted(row)})"
        )
    return sign * float(row[name])
