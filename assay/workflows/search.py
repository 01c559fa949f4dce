"""Mixture search (CLIMB, RegMix): proxies on proposals, a predictor, the best mixture."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from assay.errors import ConfigError
from assay.mixing.climb import ClimbSearch, SearchResult, objective_value, split_budget
from assay.util.files import write_json
from assay.util.guard import check_output
from assay.workflows.proxy_batch import heldout_paths, train_mixtures


def search_mixture(
    cache_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    objective: str,
    tokenizer: str,
    tokens: int,
    runs: int = 14,
    split: Sequence[float] = (4, 2, 1),
    method: str = "climb",
    preset: str = "tiny",
    heldout: Sequence[str] | str | None = None,
    eval_docs: int | None = None,
    tasks: Sequence[str] = (),
    train: Mapping[str, Any] | None = None,
    predictor: str = "auto",
    candidates: int = 10_000,
    regmix_top_k: int = 16,
    seed: int = 0,
    runner: Any = None,
    plot: bool = False,
    **proposer: Any,
) -> SearchResult:
    """Search a mixture over the domains of a TokenCache (built once with `TokenCache.build`).

    method 'climb' spends `runs` proxies over the iterations of `split`; 'regmix' spends them
    in one iteration and averages the predictor's top `regmix_top_k` candidates. `plot` draws
    the predictor's out-of-fold predictions against the measured runs
    (`predicted_vs_measured.png`; needs matplotlib).
    """
    from assay.common.tokens import TokenCache

    per_iter = _runs_per_iteration(method, runs, split)
    cache = TokenCache.open(cache_dir)
    counts = {d: t.n_tokens for d, t in cache.domains.items()}
    search = ClimbSearch(
        counts, predictor=predictor, candidates=candidates, seed=seed, budget=tokens, **proposer
    )
    out = Path(out_dir)
    check_output(out, heldout_paths(heldout), "search folder")
    check_output(out, [cache_dir], "search folder", may_contain=True)
    result_runs = _run_iterations(
        search,
        per_iter,
        cache_dir,
        out,
        objective,
        tokens=tokens,
        tokenizer=tokenizer,
        preset=preset,
        seed=seed,
        heldout=heldout,
        eval_docs=eval_docs,
        train=train,
        tasks=tasks,
        runner=runner,
    )
    best = search.best(average_top_k=regmix_top_k if method == "regmix" else None)
    spearman = {"lightgbm": search.spearman("lightgbm"), "linear": search.spearman("linear")}
    result = SearchResult(best, objective, result_runs, spearman, per_iter, search.chosen_kind())
    write_json(out / "search.json", result.to_dict())
    best.save(out / "mixture.yaml")
    if plot:
        plot_search(result, out / "predicted_vs_measured.png")
    return result


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
    objective: str,
    *,
    tokens: int,
    tokenizer: str,
    preset: str,
    seed: int,
    heldout: Sequence[str] | str | None,
    eval_docs: int | None,
    train: Mapping[str, Any] | None,
    tasks: Sequence[str],
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
            tokens=tokens,
            tokenizer=tokenizer,
            preset=preset,
            seeds=seed,
            heldout=heldout,
            eval_docs=eval_docs,
            train=train,
            tasks=tasks,
            runner=runner,
            runs_table=out / "runs.parquet",
        )
        for mix, run in zip(mixtures, done, strict=True):
            value = objective_value(run_row(run), objective)
            search.observe(mix, value)
            result_runs.append(
                {"iteration": it, "mixture": mix.to_dict(), "metric": value, "run": run["out_dir"]}
            )
    return result_runs


def plot_search(result: SearchResult, path: str | os.PathLike) -> None:
    """The search predictor's out-of-fold predictions against the measured runs, as a PNG."""
    import numpy as np

    from assay.common.mixture import Mixture
    from assay.mixing.predictors import out_of_fold
    from assay.report import plot_predicted_vs_measured

    domains = sorted(result.best)
    X = np.vstack([Mixture(r["mixture"]).vector(domains) for r in result.runs])
    y = np.array([r["metric"] for r in result.runs])
    pred = out_of_fold(result.predictor, X, y, folds=min(5, len(y)))
    label = f"{result.predictor} (out-of-fold)"
    plot_predicted_vs_measured({label: (pred, y)}, path, metric=result.objective)
