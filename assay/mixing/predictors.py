"""Mixture -> metric regressors, the surrogate that RegMix and CLIMB search with.

Both predictors are scikit-learn-style: `fit(X, y)`, `predict(X)`, with X the mixture weights
(one column per domain, in a fixed order) and y the proxy metric (lower is better, e.g. bits
per byte; negate accuracies).

- `LightGBMPredictor`: gradient-boosted trees, with one of two named presets
  (`LIGHTGBM_PRESETS`), early-stopped on a held-out share of the runs (also where its Spearman
  correlation is measured when it is fitted):
  - "climb" (the default): CLIMB's settings (L1 and L2 regularisation, max depth 4, at least
    5 samples per leaf, early stopping after 20 rounds) with RegMix's learning rate 0.01 and
    up to 1,000 rounds; it can split on a dozen runs;
  - "regmix": what RegMix's official regression notebook passes to LightGBM
    (sail-sg/regmix, regression_fitting/regression.ipynb): gbdt, objective regression,
    metrics l1 and l2, 1,000 iterations, learning rate 0.01, seed 42, early stopping after 3
    rounds, everything else LightGBM's defaults (31 leaves, no depth limit, at least 20
    samples per leaf, no regularisation), written out here. With fewer than about 2 x 20
    training runs its trees cannot split: the official fit had 512 runs.
- `LinearPredictor`: least squares on the weights (RegMix's linear baseline), with a small
  ridge so that collinear weights (they sum to 1) do not break it.

`heldout_spearman(predictor, X, y)` reports what the issue of any mixture search is: does the
predictor rank unseen mixtures as the proxies do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from assay.common.numerics import spearman
from assay.errors import ConfigError, DependencyError, InputError


def _split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * share)) if n >= 8 else 0
    return order[n_val:], order[:n_val]


class LinearPredictor:
    def __init__(self, alpha: float = 1e-6):
        self.alpha = alpha
        self.model: Any = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearPredictor:
        from sklearn.linear_model import Ridge

        X, y = _check(X, y)
        self.model = Ridge(alpha=self.alpha).fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(np.asarray(X, dtype=np.float64))


#: LightGBM settings by name: each preset's model parameters and its early-stopping patience
LIGHTGBM_PRESETS: dict[str, dict[str, Any]] = {
    "climb": {
        "params": {
            "learning_rate": 0.01,
            "n_estimators": 1000,
            "max_depth": 4,
            "num_leaves": 16,
            "min_child_samples": 5,
            "reg_alpha": 0.1,
            "reg_lambda": 0.1,
        },
        "early_stopping": 20,
        "seed": 0,
    },
    # sail-sg/regmix, regression_fitting/regression.ipynb: `hyper_params` and
    # `lgb.early_stopping(stopping_rounds=3)`; the rest are LightGBM's own defaults
    "regmix": {
        "params": {
            "boosting_type": "gbdt",
            "objective": "regression",
            "metric": ["l1", "l2"],
            "learning_rate": 0.01,
            "n_estimators": 1000,
            "num_leaves": 31,
            "max_depth": -1,
            "min_child_samples": 20,
            "reg_alpha": 0.0,
            "reg_lambda": 0.0,
        },
        "early_stopping": 3,
        "seed": 42,
    },
}

#: the keyword arguments of `LightGBMPredictor` that set a model parameter, by its LightGBM name
_PARAM_OF = {
    "learning_rate": "learning_rate",
    "rounds": "n_estimators",
    "max_depth": "max_depth",
    "num_leaves": "num_leaves",
    "min_child_samples": "min_child_samples",
    "reg_alpha": "reg_alpha",
    "reg_lambda": "reg_lambda",
}


class LightGBMPredictor:
    """LightGBM on the mixture weights: a preset of `LIGHTGBM_PRESETS`, any of whose values the
    keyword arguments replace (with the "climb" preset, `max_depth` also sets `num_leaves` to
    2 ** max_depth unless `num_leaves` is given)."""

    def __init__(
        self,
        *,
        preset: str = "climb",
        learning_rate: float | None = None,
        rounds: int | None = None,
        max_depth: int | None = None,
        num_leaves: int | None = None,
        min_child_samples: int | None = None,
        reg_alpha: float | None = None,
        reg_lambda: float | None = None,
        early_stopping: int | None = None,
        validation: float = 0.2,
        seed: int | None = None,
    ):
        if preset not in LIGHTGBM_PRESETS:
            raise ConfigError(
                f"LightGBM preset must be one of {sorted(LIGHTGBM_PRESETS)}, not {preset!r}"
            )
        base = LIGHTGBM_PRESETS[preset]
        given = {
            "learning_rate": learning_rate,
            "rounds": rounds,
            "max_depth": max_depth,
            "num_leaves": num_leaves,
            "min_child_samples": min_child_samples,
            "reg_alpha": reg_alpha,
            "reg_lambda": reg_lambda,
        }
        params = dict(base["params"])
        params.update({_PARAM_OF[k]: v for k, v in given.items() if v is not None})
        if preset == "climb" and max_depth is not None and num_leaves is None:
            params["num_leaves"] = 2**max_depth
        self.preset = preset
        self.seed = base["seed"] if seed is None else seed
        self.early_stopping = base["early_stopping"] if early_stopping is None else early_stopping
        self.validation = validation
        self.params = {
            **params,
            "random_state": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "n_jobs": 1,
            "verbose": -1,
        }
        self.model: Any = None
        self.validation_spearman: float = float("nan")
        self.best_rounds: int = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> LightGBMPredictor:
        try:
            import lightgbm as lgb
        except ImportError as e:  # pragma: no cover - depends on the install
            raise DependencyError(
                "the LightGBM predictor needs lightgbm: pip install 'assay[mixing]'"
            ) from e
        X, y = _check(X, y)
        train, val = _split(len(y), self.validation, self.seed)
        self.model = lgb.LGBMRegressor(**self.params)
        if len(val):
            import inspect

            # lightgbm 4.6 renamed eval_set to eval_X / eval_y
            if "eval_X" in inspect.signature(self.model.fit).parameters:
                evaluation = {"eval_X": (X[val],), "eval_y": (y[val],)}
            else:  # pragma: no cover - older lightgbm
                evaluation = {"eval_set": [(X[val], y[val])]}
            self.model.fit(
                X[train],
                y[train],
                **evaluation,
                callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)],
            )
            self.validation_spearman = spearman(self.model.predict(X[val]), y[val])
            self.best_rounds = int(self.model.best_iteration_ or self.params["n_estimators"])
        else:
            self.model.fit(X, y)
            self.best_rounds = int(self.params["n_estimators"])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(np.asarray(X, dtype=np.float64))


def _check(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(y):
        raise InputError(f"X must be (runs, domains) and y one value per run: {X.shape}, {y.shape}")
    if len(y) < 2:
        raise InputError(f"{len(y)} proxy runs: too few to fit a predictor")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise InputError("mixtures and metrics must be finite to fit a predictor")
    return X, y


def make_predictor(kind: str, **params: Any) -> Any:
    if kind == "lightgbm":
        return LightGBMPredictor(**params)
    if kind == "linear":
        return LinearPredictor(**params)
    raise ConfigError(f"predictor must be 'lightgbm' or 'linear', not {kind!r}")


def out_of_fold(
    kind: str, X: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0, **params: Any
) -> np.ndarray:
    """Each run's prediction by a predictor fitted on the other folds (k-fold)."""
    X, y = _check(X, y)
    order = np.random.default_rng(seed).permutation(len(y))
    pred = np.empty(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        pred[test] = make_predictor(kind, **params).fit(X[train], y[train]).predict(X[test])
    return pred


def heldout_spearman(
    kind: str, X: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0, **params: Any
) -> float:
    """Spearman correlation of out-of-fold predictions with the measured metric (k-fold)."""
    return spearman(out_of_fold(kind, X, y, folds=folds, seed=seed, **params), np.asarray(y))
