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
