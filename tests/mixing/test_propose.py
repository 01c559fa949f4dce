"""Dirichlet proposals: prior, caps, floor, deduplication, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from assay.mixing.propose import MixtureProposer

COUNTS = {"code": 8e6, "math": 1.6e6, "news": 5e6, "reference": 4e5}


def test_proposals_respect_caps_floor_and_are_distinct() -> None:
    p = MixtureProposer(COUNTS, budget=4e6, max_epochs=2, floor=0.01, seed=0)
    mixes = p.propose(50)
    assert len({tuple(m.vector(p.domains)) for m in mixes}) == 50
    for m in mixes:
        w = m.vector(p.domains)
        assert w.sum() == pytest.approx(1.0)
        assert ((w == 0) | (w >= 0.01 - 1e-12)).all()
        assert (w * 4e6 <= p.tokens * 2 * (1 + 1e-9)).all()  # at most 2 epochs of any domain
    more = p.propose(10)
    assert not {tuple(m.vector(p.domains)) for m in more} & {tuple(m.vector(p.domains)) for m in mixes}  # fmt: skip


def test_prior_and_strength_shape_the_draws() -> None:
    p = MixtureProposer(COUNTS, temperature=0.5, max_ratio=None, floor=0, seed=1)
    prior = np.sqrt(p.natural) / np.sqrt(p.natural).sum()
    np.testing.assert_allclose(p.prior, prior)
    draws = p.candidates(4000)
    np.testing.assert_allclose(draws.mean(axis=0), prior, atol=0.03)  # Dirichlet mean = prior
    a = MixtureProposer(COUNTS, seed=3).propose(5)
    b = MixtureProposer(COUNTS, seed=3).propose(5)
    assert a == b


def test_impossible_requests_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="needs more than 1 epochs"):
        MixtureProposer(COUNTS, budget=1e8, max_epochs=1)
    with pytest.raises(ValueError, match="at least 2 domains"):
        MixtureProposer({"a": 10})
    tight = MixtureProposer({"a": 100, "b": 100}, floor=0.5, max_ratio=None, seed=0)
    with pytest.raises(ValueError, match="distinct mixtures"):
        tight.propose(5, max_tries=20)
