"""Mixture -> metric predictors rank unseen mixtures like the truth does."""

from __future__ import annotations

import numpy as np
import pytest

from assay.common.numerics import spearman
from assay.mixing.predictors import LightGBMPredictor, LinearPredictor, heldout_spearman


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(4), size=n)
    # a smooth, non-linear "loss": more of domain 0 helps with diminishing returns, domain 3 hurts
    y = 3.0 - 0.8 * np.sqrt(X[:, 0]) + 0.5 * X[:, 3] ** 2 + 0.2 * X[:, 1] * X[:, 2]
    return X, y + rng.normal(0, 0.005, n)


def test_both_predictors_rank_unseen_mixtures() -> None:
    X, y = _data(120)
    Xt, yt = _data(200, seed=1)
    gbm = LightGBMPredictor(seed=0).fit(X, y)
    assert spearman(gbm.predict(Xt), yt) > 0.85
    assert gbm.validation_spearman > 0.7 and 0 < gbm.best_rounds <= 1000
    lin = LinearPredictor().fit(X, y)
    assert spearman(lin.predict(Xt), yt) > 0.85
    assert heldout_spearman("linear", X, y) > 0.85
    again = LightGBMPredictor(seed=0).fit(X, y)
    np.testing.assert_array_equal(again.predict(Xt), gbm.predict(Xt))  # deterministic


def test_bad_fit_data() -> None:
    with pytest.raises(ValueError, match="too few"):
        LinearPredictor().fit(np.ones((1, 3)), np.ones(1))
    with pytest.raises(ValueError, match="finite"):
        LinearPredictor().fit(np.ones((3, 2)), np.array([1.0, np.nan, 2.0]))


def test_lightgbm_presets() -> None:
    climb = LightGBMPredictor()  # the default: CLIMB's settings, as before the presets
    assert climb.early_stopping == 20 and climb.seed == 0
    expected = {
        "learning_rate": 0.01, "n_estimators": 1000, "max_depth": 4, "num_leaves": 16,
        "min_child_samples": 5, "reg_alpha": 0.1, "reg_lambda": 0.1,
    }  # fmt: skip
    assert {k: climb.params[k] for k in expected} == expected
    assert LightGBMPredictor(max_depth=3).params["num_leaves"] == 8
    # RegMix's regression notebook (sail-sg/regmix), with LightGBM's defaults written out
    X, y = _data(120)
    regmix = LightGBMPredictor(preset="regmix").fit(X, y)
    assert regmix.early_stopping == 3 and regmix.seed == 42
    fitted = regmix.model.get_params()
    expected = {
        "boosting_type": "gbdt", "objective": "regression", "metric": ["l1", "l2"],
        "learning_rate": 0.01, "n_estimators": 1000, "num_leaves": 31, "max_depth": -1,
        "min_child_samples": 20, "reg_alpha": 0.0, "reg_lambda": 0.0, "random_state": 42,
    }  # fmt: skip
    assert {k: fitted[k] for k in expected} == expected
    assert 0 < regmix.best_rounds < 1000  # stopped early, after 3 rounds without progress
    assert spearman(regmix.predict(_data(200, seed=1)[0]), _data(200, seed=1)[1]) > 0.7
    over = LightGBMPredictor(preset="regmix", rounds=50, seed=1, min_child_samples=4)
    assert (over.params["n_estimators"], over.seed, over.params["min_child_samples"]) == (50, 1, 4)
    assert over.params["num_leaves"] == 31
    with pytest.raises(ValueError, match="LightGBM preset must be one of"):
        LightGBMPredictor(preset="doremi")
