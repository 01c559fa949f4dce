"""Mixture search: the ask/tell core on a known objective, and a real (tiny) CLIMB search."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.mixing.climb import ClimbSearch, split_budget
from assay.workflows.search import search_mixture

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
