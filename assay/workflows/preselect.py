"""Fitting PreSelect: a model family's losses and benchmark scores -> labels -> fastText."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from assay.errors import ConfigError, InputError
from assay.selection.preselect import (
    MIN_MODELS,
    ModelSpec,
    PreSelectScorer,
    PreSelectSettings,
    family_losses,
    model_spec,
)


def family_benchmark_scores(
    models: Sequence[ModelSpec],
    target_texts: Sequence[str],
    *,
    batch_tokens: int = 8192,
    seq_len: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> np.ndarray:
    """A "benchmark score" per model for families without real benchmarks: minus mean bits/char.

    PreSelect orders the family by benchmark accuracy. For proxies trained by assay, which are
    far too small for benchmarks, the stand-in is how well each model predicts examples of the
    target (benchmark training items, a domain of held-out text): the mean over target examples of
    their bits per character, negated so that higher is better. Each example weighs the same, as
    in an accuracy average, whatever its length. Empty examples are ignored. The models run on
    `device` in `dtype` (see `bits_per_char`).
    """
    target = list(target_texts)
    if not any(t for t in target):
        raise InputError("no target examples: family_benchmark_scores needs non-empty texts")
    bpc = family_losses(
        models, target, batch_tokens=batch_tokens, seq_len=seq_len, device=device, dtype=dtype
    )
    return -np.nanmean(bpc, axis=1)


def fit_preselect(
    corpus: Any,
    models: Sequence[ModelSpec],
    settings: PreSelectSettings | None = None,
    *,
    targets: Any = None,
    fields: Sequence[str] | None = None,
    max_targets: int | None = None,
    **options: Any,
) -> PreSelectScorer:
    """Fit PreSelect on a uniform calibration sample of `corpus`.

    Each model is a path or a mapping with `path` and, optionally, its benchmark `score`
    (higher is better). Models without a score get one from `targets` (a file, a built-in
    benchmark name or texts): minus their bits per character on the target examples.
    `settings` (or keyword arguments such as calibration=, positive_fraction=, params=; they
    override `settings`) are `PreSelectSettings`; a seed of None is 0. The family's models run
    on its `device` in its `dtype` (default: a GPU in bfloat16 when there is one).
    """
    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = PreSelectSettings.model_validate({**base, **options})
    seed = 0 if cfg.seed is None else cfg.seed
    specs = [model_spec(m) for m in models]
    given = [m.get("score") if isinstance(m, Mapping) else None for m in models]
    if len(specs) < MIN_MODELS:
        raise ConfigError(
            f"PreSelect needs at least {MIN_MODELS} models (got {len(specs)}): with fewer, every "
            "document's predictive strength is 0 or 1"
        )
    if all(g is not None for g in given):
        scores = np.asarray(given, dtype=np.float64)
    else:
        if targets is None:
            raise ConfigError(
                "PreSelect needs a benchmark score per model: give each model a score, or "
                "targets to compute them from"
            )
        from assay.common.targets import load_targets

        examples = load_targets(targets, fields, max_items=max_targets, seed=seed)
        missing = [i for i, g in enumerate(given) if g is None]
        measured = family_benchmark_scores(
            [specs[i] for i in missing], examples, device=cfg.device, dtype=cfg.dtype
        )
        computed = dict(zip(missing, measured, strict=True))
        scores = np.asarray([computed.get(i, g) for i, g in enumerate(given)], dtype=np.float64)
    frame = corpus.sample(cfg.calibration, seed=seed)
    scorer = PreSelectScorer(
        column=cfg.column, params=cfg.params, positive_fraction=cfg.positive_fraction
    )
    return scorer.fit(
        frame.get_column("text").to_list(),
        specs,
        scores,
        ids=frame.get_column("id").to_list(),
        seed=seed,
        device=cfg.device,
        dtype=cfg.dtype,
    )
