"""Mixture search by proxies and a predictor: CLIMB's iterative bootstrapping (Diao et al.
2025), with RegMix (Liu et al. 2025) as its one-iteration case.

CLIMB, stage B:
- iteration 1 trains proxies on Dirichlet proposals around the token prior;
- each later iteration fits the predictor on every (mixture, metric) pair so far, scores a
  large candidate set with it, takes the top N and trains proxies on M of them, sampled;
- the proxy budget is split over iterations 4:2:1 by default (the paper's 64/32/16);
- the answer is the best candidate under the final predictor.

RegMix: one iteration of proposals, then predict over many candidates and average the top-k
predicted mixtures (more robust than the single argmin).

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
        self.predictor = make_predictor(kind, **({"seed": self.seed} if kind == "lightgbm" else {}))
        self.predictor.fit(np.vstack(self.X), np.asarray(self.y))
        return self.predictor

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
        """The predictor's best candidate, or (RegMix) the mean of its top-k candidates."""
        self.fit()
        cand = np.vstack([self.proposer.candidates(self.n_candidates), *self.X])
        pred = self.predictor.predict(cand)
        k = average_top_k or 1
        top = cand[np.argsort(pred, kind="stable")[:k]]
        return Mixture.from_vector(self.domains, top.mean(axis=0))

    def spearman(self, kind: str | None = None) -> float:
        """k-fold held-out Spearman of the predictor on the observed runs."""
        folds = min(5, len(self.y))
        kind = kind or (self.predictor_kind if self.predictor_kind != "auto" else "lightgbm")
        return heldout_spearman(kind, np.vstack(self.X), np.asarray(self.y), folds=folds)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best.to_dict(),
            "objective": self.objective,
            "iterations": self.iterations,
            "spearman": self.spearman,
            "predictor": self.predictor,
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
