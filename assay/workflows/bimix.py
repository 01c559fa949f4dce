"""Fitting BiMix's law on proxy runs and the optimal mixture for a budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from assay.errors import ConfigError, InputError
from assay.mixing.bimix import BiMix, BiMixFit, evaluate_fit, points_from_runs
from assay.workflows.proxy_batch import ProxyOptions, settings_with


class BiMixSettings(ProxyOptions):
    """BiMix's fitting runs and the budget, weights and floor of the optimal mixture."""

    tokens: int = Field(ge=1, description="Training tokens of each fitting run.")
    runs: int = Field(5, ge=2, description="Fitting runs (different mixtures).")
    evals: int = Field(8, ge=4, description="Evaluations along each run.")
    budget: float | None = Field(
        None, gt=0, description="Token budget to optimise for (default: tokens)."
    )
    budgets: list[float] | None = Field(None, description="Budgets of the loss-budget curve.")
    weights: dict[str, float] | None = Field(
        None, description="Domain weights in the objective, domain=w."
    )
    concentration: tuple[float, float] = Field(
        (2.0, 10.0), description="Dirichlet strength range of the fitting mixtures (per domain)."
    )
    min_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Floor of every domain in the optimum (0: none, as in the paper; a fitted "
        "alpha near 0 is warned about).",
    )
    unit: Literal["loss", "bpb"] = Field(
        "loss",
        description="What the law fits and the optimum sums per domain: loss (held-out loss "
        "per token, the paper's) or bpb (bits per byte, which weights domains by tokens per "
        "byte).",
    )


def fit_bimix(
    cache_dir: Any,
    out_dir: Any,
    settings: BiMixSettings | None = None,
    *,
    tokenizer: str,
    heldout: Any,
    mixtures: Sequence[Mapping[str, float]] | None = None,
    runner: Any = None,
    plot: bool = False,
    **options: Any,
) -> BiMixFit:
    """Train `runs` proxies on different mixtures, fit the law on their evaluation curves,
    and return the optimal mixture for `budget` tokens (default: `tokens`).

    `settings` (or keyword arguments such as tokens=, runs=, evals=, budget=; those given apply
    over `settings`) say how: see `BiMixSettings`. Each run is evaluated `evals` times (at least
    4: the law needs 3 evaluation steps per run to fit, and one more to check its extrapolation)
    on the held-out corpus, which must be labelled with the same domains as the cache
    (`assay.mixing.cluster.assign_domains` does that for clusters). The mixtures default to
    Dirichlet proposals around the natural mixture, so every domain is seen at several
    proportions (the law cannot place alpha otherwise). Writes law.json, fit.json, mixture.yaml,
    points.parquet and runs.parquet to `out_dir`, and with `plot` the fits against the measured
    points (fits.png; needs matplotlib).
    """
    from assay.common.tokens import TokenCache
    from assay.util.guard import check_output
    from assay.workflows.proxy_batch import heldout_paths, train_mixtures

    cfg = settings_with(BiMixSettings, settings, options)
    if heldout is None:
        raise ConfigError("BiMix fits per-domain held-out losses: give a held-out corpus")
    seed, tokens, evals = cfg.seed or 0, cfg.tokens, cfg.evals
    out = Path(out_dir)
    check_output(out, heldout_paths(heldout), "BiMix folder")
    check_output(out, [cache_dir], "BiMix folder", may_contain=True)
    train = cfg.train
    cache = TokenCache.open(cache_dir)
    counts = {d: t.n_tokens for d, t in cache.domains.items() if t.n_tokens > 0}
    if mixtures is None:
        mixtures = _proposed_mixtures(counts, cfg.runs, cfg.concentration, tokens, train, seed)
    steps = tokens // (train.batch_size * train.grad_accum * train.seq_len)
    if steps < evals:
        raise ConfigError(f"{tokens:,} tokens make {steps} steps: too few for {evals} evaluations")
    train_cfg = {**train.model_dump(), "eval_every": max(1, steps // evals)}
    done = train_mixtures(
        cache_dir,
        mixtures,
        [out / "proxies" / f"run-{k:03d}" for k in range(len(mixtures))],
        tokens=tokens,
        tokenizer=tokenizer,
        preset=cfg.preset,
        seeds=seed,
        heldout=heldout,
        eval_docs=cfg.eval_docs,
        train=train_cfg,
        runner=runner,
        runs_table=out / "runs.parquet",
    )
    points = _fit_points(out, done, counts, cfg.unit)
    target = float(cfg.budget or tokens)
    result = _fit_law(points, done, target, cfg)
    _save_fit(out, result, points, plot)
    return result


def _proposed_mixtures(
    counts: Mapping[str, int],
    runs: int,
    concentration: tuple[float, float],
    tokens: int,
    cfg: Any,
    seed: int,
) -> list[dict[str, float]]:
    """`runs` Dirichlet proposals around the natural mixture (every domain at several
    proportions, which the law needs to place alpha)."""
    from assay.mixing.propose import MixtureProposer

    if runs < 2:
        raise ConfigError(f"runs={runs}: the law needs at least 2 runs with different mixtures")
    k = len(counts)
    lo, hi = concentration
    proposer = MixtureProposer(
        counts,
        seed=seed,
        temperature=0.5,
        strengths=(lo * k, hi * k, 5),
        budget=tokens,
        max_epochs=cfg.max_epochs,
        floor=0.01,
    )
    return [m.to_dict() for m in proposer.propose(runs)]


def _fit_points(
    out: Path, done: list[dict[str, Any]], counts: Mapping[str, int], unit: str
) -> dict[str, list]:
    """The fit points of the runs `done` (from `out/runs.parquet`), written to
    `out/points.parquet`; every domain of the cache must have some."""
    import polars as pl

    from assay.proxies.runs import RunsTable

    table = RunsTable(out / "runs.parquet").read()
    table = table.filter(pl.col("run_id").is_in([r["run_id"] for r in done]))
    points = points_from_runs(table, unit=unit)
    missing = sorted(set(counts) - set(points["domain"]))
    if missing:
        raise InputError(
            f"the held-out corpus has no documents of domains {missing}: label it with the "
            "cache's domains (assign_domains for clusters)"
        )
    pl.DataFrame(points).write_parquet(out / "points.parquet")
    return points


def _fit_law(
    points: dict[str, list], done: list[dict[str, Any]], target: float, cfg: BiMixSettings
) -> BiMixFit:
    """The law fitted on `points`, its quality, and the optimal mixture at `target` tokens."""
    law = BiMix(unit=cfg.unit).fit(points)
    quality = evaluate_fit(points)
    mixture = law.optimal_mixture(target, cfg.weights, min_share=cfg.min_share)
    grid = cfg.budgets or [target * f for f in (0.25, 0.5, 1, 2, 4, 8)]
    return BiMixFit(
        law,
        quality,
        mixture,
        target,
        law.predict(mixture, target),
        law.budget_curve(grid, cfg.weights, min_share=cfg.min_share),
        [
            {
                "run": r["out_dir"],
                "mixture": r["mixture"],
                "bpb": r["bpb"],
                "loss": r.get("loss", {}),
            }
            for r in done
        ],
    )


def _save_fit(out: Path, result: BiMixFit, points: dict[str, list], plot: bool) -> None:
    """law.json, fit.json and mixture.yaml in `out`, and with `plot` fits.png."""
    from assay.util.files import write_json

    result.law.save(out / "law.json")
    write_json(out / "fit.json", result.to_dict())
    result.mixture.save(out / "mixture.yaml")
    if plot:
        from assay.report import plot_bimix_fits

        plot_bimix_fits(points, result.law, out / "fits.png")
