"""Mixture search (CLIMB, RegMix): proxies on proposals, a predictor, the best mixture."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from assay.errors import ConfigError
from assay.mixing.climb import (
    REGMIX_FINAL,
    ClimbSearch,
    SearchResult,
    objective_value,
    split_budget,
)
from assay.util.files import write_json
from assay.util.guard import check_output
from assay.workflows.proxy_batch import ProxyOptions, heldout_paths, settings_with, train_mixtures


class SearchSettings(ProxyOptions):
    """A mixture search: its method, objective and budget, the predictor, the proposals."""

    method: Literal["climb", "regmix"] = Field(
        "climb", description="'climb' (iterative) or 'regmix' (one round)."
    )
    objective: str = Field(
        "bpb.domain_mean",
        description="Runs-table column to minimise: bpb.domain_mean, bpb.<domain>, bpb.mean, "
        "or -task.<task>.<metric>.",
    )
    tokens: int = Field(ge=1, description="Training tokens of each proxy.")
    runs: int = Field(14, ge=3, description="Proxy runs in all.")
    split: list[float] = Field(
        default_factory=lambda: [4.0, 2.0, 1.0],
        description="Share of the runs per iteration (CLIMB's 4:2:1).",
    )
    tasks: list[str] = Field(default_factory=list, description="lm-eval tasks of each proxy.")
    predictor: Literal["auto", "lightgbm", "linear"] = Field(
        "auto",
        description="'lightgbm' (CLIMB/RegMix), 'linear', or 'auto': whichever ranks the runs "
        "so far better (k-fold Spearman).",
    )
    lightgbm: Literal["climb", "regmix"] = Field(
        "climb",
        description="LightGBM settings: 'climb' (depth 4, >= 5 runs per leaf, L1/L2, early "
        "stop 20; splits on a dozen runs) or 'regmix' (the official notebook's: 31 leaves, "
        ">= 20 runs per leaf, early stop 3, seed 42; needs some 50+ runs).",
    )
    candidates: int = Field(10_000, ge=10, description="Mixtures the predictor ranks.")
    final: Literal["proposals", "regmix"] = Field(
        "proposals",
        description="The answer: 'proposals' ranks `candidates` proposer draws and the runs "
        "(the best one for climb, the mean of the top regmix_top_k for regmix); 'regmix' is "
        "RegMix's official step: final_candidates draws from Dirichlet(token shares x "
        "final_concentration), the mean of the predicted top regmix_top_k (default 128).",
    )
    regmix_top_k: int | None = Field(
        None,
        ge=1,
        description="Average the predictor's top k: default 16 for method regmix, 128 with "
        "final regmix (method climb with final proposals takes the single best).",
    )
    final_candidates: int = Field(
        100_000, ge=1, description="final regmix: Dirichlet draws ranked (RegMix: 100,000)."
    )
    final_concentration: float = Field(
        1.0, gt=0, description="final regmix: Dirichlet concentration x token shares (RegMix: 1)."
    )
    temperature: float = Field(
        0.5, gt=0, description="Prior of the proposals: token counts ** temperature."
    )
    strengths: tuple[float, float, int] = Field(
        (0.1, 5.0, 15), description="Dirichlet strengths of the proposals: low, high, steps."
    )
    max_epochs: float | None = Field(
        None, gt=0, description="No proposal repeats a domain more than this."
    )
    floor: float = Field(2e-4, ge=0, lt=1, description="Least share of a domain in a proposal.")
    max_share: float | dict[str, float] | None = Field(
        None,
        description="Guard: the most share a domain may take in every proposal and in the "
        "answer, one cap for all domains (0.4) or per domain ({junk: 0.05}). Tiny proxies can "
        "reward a junk-like or repetitive domain (it teaches word frequencies fast) and the "
        "search then pours the mixture into it; a cap bounds the damage.",
    )

    @field_validator("max_share")
    @classmethod
    def _shares(cls, v: float | dict[str, float] | None) -> float | dict[str, float] | None:
        caps = [] if v is None else list(v.values()) if isinstance(v, dict) else [v]
        if any(not 0 < c <= 1 for c in caps):
            raise ConfigError(
                f"max_share must be a share in (0, 1] (or {{domain: share}}), not {v}"
            )
        return v

    @model_validator(mode="after")
    def _top_k_fits(self) -> SearchSettings:
        if self.final == "regmix" and self.top_k > self.final_candidates:
            raise ConfigError(
                f"regmix_top_k={self.top_k} is more than final_candidates={self.final_candidates}"
            )
        return self

    @property
    def top_k(self) -> int:
        """How many of the predictor's best candidates the answer averages."""
        if self.final == "regmix":
            return self.regmix_top_k or REGMIX_FINAL["top_k"]
        if self.method == "climb":
            return 1
        return self.regmix_top_k or 16


def search_mixture(
    cache_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: SearchSettings | None = None,
    *,
    tokenizer: str,
    heldout: Sequence[str] | str | None = None,
    runner: Any = None,
    plot: bool = False,
    proposer: Mapping[str, Any] | None = None,
    **options: Any,
) -> SearchResult:
    """Search a mixture over the domains of a TokenCache (built once with `TokenCache.build`).

    `settings` (or keyword arguments such as tokens=, runs=, method=, objective=; those given
    apply over `settings`) say how: see `SearchSettings`. method 'climb' spends `runs` proxies
    over the iterations of `split`; 'regmix' spends them in one iteration and averages the
    predictor's top `regmix_top_k` candidates (with `final='regmix'`, RegMix's official step:
    the top 128 of 100,000 Dirichlet draws around the token shares). `proposer` passes further
    arguments to the `MixtureProposer` (such as max_ratio). `plot` draws the predictor's
    out-of-fold predictions against the measured runs (`predicted_vs_measured.png`; needs
    matplotlib).
    """
    from assay.common.tokens import TokenCache

    cfg = settings_with(SearchSettings, settings, options)
    seed = cfg.seed or 0
    per_iter = _runs_per_iteration(cfg.method, cfg.runs, cfg.split)
    cache = TokenCache.open(cache_dir)
    counts = {d: t.n_tokens for d, t in cache.domains.items()}
    search = ClimbSearch(
        counts,
        predictor=cfg.predictor,
        lightgbm=cfg.lightgbm,
        candidates=cfg.candidates,
        seed=seed,
        budget=cfg.tokens,
        temperature=cfg.temperature,
        strengths=cfg.strengths,
        max_epochs=cfg.max_epochs,
        floor=cfg.floor,
        max_share=cfg.max_share,
        **dict(proposer or {}),
    )
    out = Path(out_dir)
    check_output(out, heldout_paths(heldout), "search folder")
    check_output(out, [cache_dir], "search folder", may_contain=True)
    result_runs = _run_iterations(
        search,
        per_iter,
        cache_dir,
        out,
        cfg,
        tokenizer=tokenizer,
        heldout=heldout,
        runner=runner,
    )
    best, final = _final_mixture(search, cfg)
    spearman = {"lightgbm": search.spearman("lightgbm"), "linear": search.spearman("linear")}
    result = SearchResult(
        best, cfg.objective, result_runs, spearman, per_iter, search.chosen_kind(), final
    )
    write_json(out / "search.json", result.to_dict())
    best.save(out / "mixture.yaml")
    if plot:
        plot_search(result, out / "predicted_vs_measured.png", lightgbm=cfg.lightgbm)
    return result


def _final_mixture(search: ClimbSearch, cfg: SearchSettings) -> tuple[Any, dict[str, Any]]:
    """The answer, and how it was picked (recorded in search.json)."""
    if cfg.final == "regmix":
        final = {
            "final": "regmix",
            "candidates": cfg.final_candidates,
            "top_k": cfg.top_k,
            "concentration": cfg.final_concentration,
        }
        best = search.regmix_best(
            candidates=cfg.final_candidates, top_k=cfg.top_k, concentration=cfg.final_concentration
        )
        return best, final
    final = {"final": "proposals", "candidates": cfg.candidates, "top_k": cfg.top_k}
    return search.best(average_top_k=cfg.top_k), final


def _runs_per_iteration(method: str, runs: int, split: Sequence[float]) -> list[int]:
    """Proxy runs per iteration: `split` of `runs` for CLIMB, all of them at once for RegMix."""
    if method not in ("climb", "regmix"):
        raise ConfigError(f"method must be 'climb' or 'regmix', not {method!r}")
    per_iter = split_budget(runs, (1,) if method == "regmix" else split)
    if per_iter[0] < 3:
        raise ConfigError(
            f"the first iteration has {per_iter[0]} runs; the predictor needs at least 3"
        )
    return per_iter


def _run_iterations(
    search: ClimbSearch,
    per_iter: list[int],
    cache_dir: str | os.PathLike,
    out: Path,
    cfg: SearchSettings,
    *,
    tokenizer: str,
    heldout: Sequence[str] | str | None,
    runner: Any,
) -> list[dict[str, Any]]:
    """Each iteration: the search's proposals, a proxy trained on each (a row per run in
    `out/runs.parquet`), and their objective told to the search; returns one entry per run."""
    from assay.proxies.runs import run_row

    result_runs: list[dict[str, Any]] = []
    for it, n in enumerate(per_iter):
        mixtures = search.propose(n)
        done = train_mixtures(
            cache_dir,
            [m.to_dict() for m in mixtures],
            [out / "proxies" / f"it{it}-{k:03d}" for k in range(len(mixtures))],
            tokens=cfg.tokens,
            tokenizer=tokenizer,
            preset=cfg.preset,
            seeds=cfg.seed or 0,
            heldout=heldout,
            eval_docs=cfg.eval_docs,
            train=cfg.train.model_dump(),
            tasks=cfg.tasks,
            runner=runner,
            runs_table=out / "runs.parquet",
        )
        for mix, run in zip(mixtures, done, strict=True):
            value = objective_value(run_row(run), cfg.objective)
            search.observe(mix, value)
            result_runs.append(
                {"iteration": it, "mixture": mix.to_dict(), "metric": value, "run": run["out_dir"]}
            )
    return result_runs


def plot_search(result: SearchResult, path: str | os.PathLike, *, lightgbm: str = "climb") -> None:
    """The search predictor's out-of-fold predictions against the measured runs, as a PNG
    (`lightgbm`: the LightGBM preset, when the predictor is LightGBM)."""
    import numpy as np

    from assay.common.mixture import Mixture
    from assay.mixing.predictors import out_of_fold
    from assay.report import plot_predicted_vs_measured

    domains = sorted(result.best)
    X = np.vstack([Mixture(r["mixture"]).vector(domains) for r in result.runs])
    y = np.array([r["metric"] for r in result.runs])
    params = {"preset": lightgbm} if result.predictor == "lightgbm" else {}
    pred = out_of_fold(result.predictor, X, y, folds=min(5, len(y)), **params)
    label = f"{result.predictor} (out-of-fold)"
    plot_predicted_vs_measured({label: (pred, y)}, path, metric=result.objective)
