"""Mixture search: the ask/tell core on a known objective, and a real (tiny) CLIMB search."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.mixing.climb import CLIMB_PAPER, ClimbSearch, regmix_final, split_budget
from assay.workflows.search import SearchSettings, _final_mixture, search_mixture

COUNTS = {"a": 4e6, "b": 2e6, "c": 1e6, "d": 5e5}
OPTIMUM = np.array([0.1, 0.2, 0.6, 0.1])  # domains in sorted order


def _loss(w: np.ndarray) -> float:
    return float(np.sum((w - OPTIMUM) ** 2))


def test_budget_split() -> None:
    assert split_budget(112, (4, 2, 1)) == [64, 32, 16]
    assert sum(split_budget(14, (4, 2, 1))) == 14
    assert split_budget(3, (4, 2, 1)) == [1, 1, 1]
    with pytest.raises(ValueError, match="too small for 3 iterations"):
        split_budget(2, (4, 2, 1))


def test_iterations_move_towards_the_optimum() -> None:
    search = ClimbSearch(COUNTS, predictor="lightgbm", candidates=3000, seed=0, max_ratio=None)
    found = {}
    for it, n in enumerate(split_budget(56, (4, 2, 1))):
        mixes = search.propose(n)
        values = [_loss(m.vector(search.domains)) for m in mixes]
        for m, v in zip(mixes, values, strict=True):
            search.observe(m, v)
        found[it] = float(np.median(values))
    assert found[1] < found[0] and found[2] < found[0]
    best = search.best()
    assert _loss(best.vector(search.domains)) < found[0] / 3
    regmix = search.best(average_top_k=16)
    assert sum(regmix.values()) == pytest.approx(1.0)
    assert search.spearman("linear") > 0.3
    with pytest.raises(ValueError, match="not finite"):
        search.observe(best, float("nan"))


@pytest.mark.slow
def test_a_real_search_trains_proxies_and_resumes(token_cache, proxy_tokenizer, demo_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    proxy_tokenizer.save_pretrained(str(tmp_path / "tok"))
    kwargs = dict(
        objective="bpb.math", tokenizer=str(tmp_path / "tok"), tokens=8 * 128 * 8,
        runs=6, split=(2, 1), heldout=str(demo_dir / "heldout"), eval_docs=10,
        train={"batch_size": 8, "seq_len": 128}, candidates=500, seed=0,
        proposer={"max_ratio": None},
    )  # fmt: skip
    t0 = time.perf_counter()
    result = search_mixture(token_cache.root, tmp_path / "s", **kwargs)
    first = time.perf_counter() - t0
    assert result.iterations == [4, 2] and len(result.runs) == 6
    table = pl.read_parquet(tmp_path / "s" / "runs.parquet")
    assert table.height == 6 and "bpb.math" in table.columns
    assert set(result.best) == set(token_cache.domains)
    saved = json.loads((tmp_path / "s" / "search.json").read_text())
    assert saved["best"] == result.best.to_dict() and set(saved["spearman"]) == {
        "lightgbm",
        "linear",
    }
    t0 = time.perf_counter()
    again = search_mixture(token_cache.root, tmp_path / "s", **kwargs)  # every proxy is reused
    assert time.perf_counter() - t0 < first / 2
    assert again.best == result.best
    assert pl.read_parquet(tmp_path / "s" / "runs.parquet").height == 6
    with pytest.raises(ValueError, match="not a column"):
        search_mixture(token_cache.root, tmp_path / "s", **{**kwargs, "objective": "bpb.nope"})


def test_auto_predictor_takes_the_one_that_ranks_better() -> None:
    # a dozen runs of a linear objective: LightGBM (min 5 per leaf) cannot split, linear can
    search = ClimbSearch(COUNTS, predictor="auto", candidates=500, seed=0, max_ratio=None)
    slope = np.array([1.0, -2.0, 0.5, 3.0])
    for m in search.propose(12):
        search.observe(m, float(m.vector(search.domains) @ slope))
    assert search.chosen_kind() == "linear" == search.auto_choice
    assert search.spearman("linear") > 0.9 > search.spearman("lightgbm")
    best = search.best().vector(search.domains)
    assert int(np.argmax(best)) == 1  # the domain whose weight lowers the objective most
    with pytest.raises(ValueError, match="predictor must be"):
        ClimbSearch(COUNTS, predictor="forest")


class _Recording:
    """A fitted predictor that remembers every row it ranked."""

    def __init__(self, model) -> None:
        self.model, self.rows = model, []

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.rows.append(np.array(X))
        return self.model.predict(X)


class _Quadratic:
    """A toy predictor: least squares on the weights and their squares (fast on 100k rows)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Quadratic:
        self.coef = np.linalg.lstsq(np.hstack([X, X**2]), y, rcond=None)[0]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.hstack([X, X**2]) @ self.coef


def _toy_predictor() -> _Quadratic:
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(4), size=200)
    return _Quadratic().fit(X, np.array([_loss(w) for w in X]))


def test_regmix_final_is_the_mean_of_the_top_128_of_dirichlet_draws() -> None:
    domains = sorted(COUNTS)
    shares = np.array([COUNTS[d] for d in domains]) / sum(COUNTS.values())
    rec = _Recording(_toy_predictor())
    mix = regmix_final(rec, domains, shares, candidates=100_000, seed=3, chunk=30_000)
    rows = np.vstack(rec.rows)
    assert len(rec.rows) == 4 and len(rows) == 100_000  # every candidate ranked, once
    assert np.allclose(rows.sum(axis=1), 1.0)
    # Dirichlet(shares x 1): the draws' mean is the token shares
    np.testing.assert_allclose(rows.mean(axis=0), shares, atol=0.01)
    top = rows[np.argsort(rec.model.predict(rows), kind="stable")[:128]]
    np.testing.assert_allclose(mix.vector(domains), top.mean(axis=0), atol=1e-9)
    assert _loss(mix.vector(domains)) < _loss(shares) / 2  # towards the optimum
    again = regmix_final(_toy_predictor(), domains, shares, candidates=100_000, seed=3)
    assert again == mix  # same seed, same answer, whatever the chunk size
    other = regmix_final(_toy_predictor(), domains, shares, candidates=100_000, seed=4)
    assert other != mix
    small = _Recording(_toy_predictor())
    regmix_final(small, domains, shares, candidates=500, top_k=5, concentration=10.0)
    assert sum(len(r) for r in small.rows) == 500
    with pytest.raises(ValueError, match="top_k=600 must be between"):
        regmix_final(small, domains, shares, candidates=500, top_k=600)
    with pytest.raises(ValueError, match="concentration must be positive"):
        regmix_final(small, domains, shares, concentration=0.0)


def test_a_search_ends_with_regmix_final_step_and_preset() -> None:
    search = ClimbSearch(COUNTS, predictor="lightgbm", lightgbm="regmix", candidates=500, seed=0)
    for m in search.propose(48):
        search.observe(m, _loss(m.vector(search.domains)))
    cfg = SearchSettings(tokens=1000, method="regmix", final="regmix", lightgbm="regmix")
    best, final = _final_mixture(search, cfg)
    assert final == {"final": "regmix", "candidates": 100_000, "top_k": 128, "concentration": 1.0}
    assert search.predictor.preset == "regmix" and search.predictor.params["num_leaves"] == 31
    assert sum(best.values()) == pytest.approx(1.0)
    assert _final_mixture(search, cfg)[0] == best  # deterministic
    # the defaults are unchanged: our proposals' top 16 for regmix, the single best for climb
    assert SearchSettings(tokens=1, method="regmix").top_k == 16
    assert SearchSettings(tokens=1).top_k == 1
    assert SearchSettings(tokens=1, method="regmix", regmix_top_k=4).top_k == 4
    old = _final_mixture(search, SearchSettings(tokens=1000, method="regmix", candidates=500))
    assert old[1] == {"final": "proposals", "candidates": 500, "top_k": 16}
    with pytest.raises(ValueError, match="regmix_top_k=200 is more than"):
        SearchSettings(tokens=1, final="regmix", regmix_top_k=200, final_candidates=100)
    with pytest.raises(ValueError, match="final"):
        SearchSettings(tokens=1, final="best")
    with pytest.raises(ValueError, match="lightgbm"):
        SearchSettings(tokens=1, lightgbm="xgboost")


def test_the_climb_paper_values_are_valid_settings() -> None:
    from assay.mixing.cluster import ClusterSettings

    search = SearchSettings(tokens=1, **CLIMB_PAPER["search"])
    assert split_budget(search.runs, search.split) == [64, 32, 16] and search.top_k == 1
    cluster = dict(CLIMB_PAPER["cluster"])
    assert cluster.pop("prune_below") == 3.0
    assert ClusterSettings(**cluster).k_init == 1000


def test_the_final_step_keeps_an_epoch_cap() -> None:
    kw = dict(predictor="linear", candidates=500, seed=0, budget=3e6)
    searches = [ClimbSearch(COUNTS, **kw), ClimbSearch(COUNTS, max_epochs=1.0, **kw)]
    for search in searches:
        for m in search.propose(24):
            search.observe(m, _loss(m.vector(search.domains)))
    free, capped = (s.regmix_best(candidates=20_000) for s in searches)
    assert free["c"] > 1 / 3  # the optimum wants 60% of c: more than one epoch of it
    assert capped["c"] * 3e6 <= COUNTS["c"] * (1 + 1e-9)  # at most one epoch of each domain
    assert capped["d"] * 3e6 <= COUNTS["d"] * (1 + 1e-9)


def test_a_share_cap_binds_the_proposals_and_every_final_answer() -> None:
    """The guard against a search that pours the mixture into one over-rewarded domain."""
    kw = dict(predictor="linear", candidates=500, seed=0)
    free, capped = ClimbSearch(COUNTS, **kw), ClimbSearch(COUNTS, max_share={"c": 0.2}, **kw)
    for search in (free, capped):
        for m in search.propose(24):
            search.observe(m, _loss(m.vector(search.domains)))
    assert free.best()["c"] > 0.3  # the objective wants 60% of c
    assert all(m["c"] <= 0.2 + 1e-9 for m in capped.propose(8))
    told = ClimbSearch(COUNTS, max_share={"c": 0.2}, **kw)  # runs observed from a free search
    for x, y in zip(free.X, free.y, strict=True):
        told.observe(dict(zip(free.domains, x, strict=True)), y)
    assert told.best()["c"] <= 0.2 + 1e-9
    for answer in (capped.best(), capped.best(average_top_k=16), capped.regmix_best(candidates=5000)):  # fmt: skip
        assert answer["c"] <= 0.2 + 1e-9
    everywhere = ClimbSearch(COUNTS, max_share=0.3, **kw)
    assert all(max(m.values()) <= 0.3 + 1e-9 for m in everywhere.propose(8))
    with pytest.raises(ValueError, match="no mixture sums to 1"):
        ClimbSearch(COUNTS, max_share=0.2, **kw)
    with pytest.raises(ValueError, match="does not have"):
        ClimbSearch(COUNTS, max_share={"junk": 0.1}, **kw)
    assert SearchSettings(tokens=10, max_share={"c": 0.2}).max_share == {"c": 0.2}
    assert SearchSettings(tokens=10, max_share=0.5).max_share == 0.5
    for bad in (1.5, 0.0, {"c": -0.1}):
        with pytest.raises(ValueError, match="max_share must be a share"):
            SearchSettings(tokens=10, max_share=bad)
