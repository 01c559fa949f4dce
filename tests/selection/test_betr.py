"""BETR: rank labels against brute force, the distilled classifier on real text, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.common.targets import load_targets
from assay.exec.runner import LocalRunner, RayRunner
from assay.io.corpus import Corpus
from assay.selection.base import load_scorer
from assay.selection.betr import BETRScorer, BETRSettings, betr_keep_rate, fit_betr, rank_scores
from assay.selection.fasttext import adapt_to_sample, binary_report
from assay.selection.score import score_corpus


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_max_aggregation_matches_full_ranks() -> None:
    rng = np.random.default_rng(1)
    targets, sample = _unit(rng.normal(size=(9, 8))), _unit(rng.normal(size=(400, 8)))
    out = rank_scores(targets, sample, aggregation="max", min_ranked=60)
    sims = targets @ sample.T
    ranks = np.argsort(np.argsort(-sims, axis=1, kind="stable"), axis=1) + 1
    best = ranks.min(axis=0)
    k = int(out["k"])
    ranked = best <= k
    assert ranked.sum() >= 60
    np.testing.assert_array_equal(out["best_rank"][ranked], best[ranked])
    assert (out["best_rank"][~ranked] == len(sample) + 1).all()
    # best first, then the higher cosine at that rank
    expect = np.lexsort((-sims.max(axis=0), best))[:60]
    assert set(np.argsort(-out["score"], kind="stable")[:60]) == set(expect)


def test_mean_aggregation_matches_full_ranks() -> None:
    rng = np.random.default_rng(2)
    targets, sample = _unit(rng.normal(size=(5, 8))), _unit(rng.normal(size=(50, 8)))
    out = rank_scores(targets, sample, aggregation="mean")
    ranks = np.argsort(np.argsort(-(targets @ sample.T), axis=1, kind="stable"), axis=1) + 1
    np.testing.assert_allclose(out["score"], np.log2(1 / ranks).mean(axis=0), rtol=1e-9)
    with pytest.raises(ValueError, match="aggregation"):
        rank_scores(targets, sample, aggregation="median")


def test_small_samples_get_fitting_fasttext_settings() -> None:
    base = {"minCount": 5, "epoch": 5, "lr": 0.03}
    assert adapt_to_sample(base, 2_000_000) == base
    assert adapt_to_sample(base, 400) == {"minCount": 1, "epoch": 50, "lr": 0.03}
    assert adapt_to_sample(base, 5_000) == {"minCount": 2, "epoch": 10, "lr": 0.03}
    assert 0.025 < betr_keep_rate(1e20) < 0.045 and betr_keep_rate(1e30) == 1.0


@pytest.fixture(scope="module")
def champ_betr(demo_dir: Path, static_model: Path, tmp_path_factory: pytest.TempPathFactory):
    corpus = Corpus(demo_dir / "train")
    sample = pl.concat(list(corpus.iter_batches()), how="diagonal_relaxed")
    # the paper's settings, with a 100 MB model (2M buckets x dim 128 would be 1 GB)
    scorer = BETRScorer(embedder={"model": str(static_model), "cache": False},
                        params={"bucket": 200_000})  # fmt: skip
    scorer.fit(
        load_targets("assay_champ"),
        sample.get_column("text").to_list(),
        ids=sample.get_column("id").to_list(),
        seed=0,
    )
    return scorer, sample


def test_betr_labels_and_classifier_find_the_target_domain(champ_betr, demo_dir: Path) -> None:
    scorer, sample = champ_betr
    label = scorer.labels["label"]
    domains = np.array(sample.get_column("domain").to_list())
    assert label.sum() == round(0.1 * len(sample))
    assert (domains[label == 1] == "math").mean() > 0.7  # competition-math targets
    assert scorer.report["fasttext"]["validation"]["auc"] > 0.8
    held = pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()), how="diagonal_relaxed")
    s = scorer.score(held.get_column("text").to_list())
    is_math = np.array(held.get_column("domain").to_list()) == "math"
    assert binary_report(s[is_math], s[~is_math])["auc"] > 0.75


def test_save_load_and_scoring_a_corpus(champ_betr, demo_dir: Path, tmp_path: Path) -> None:
    scorer, sample = champ_betr
    texts = sample.get_column("text").to_list()[:50]
    scorer.save(tmp_path / "betr")
    labels = pl.read_parquet(tmp_path / "betr" / "labels.parquet")
    assert {"id", "label", "best_rank", "best_cosine", "best_target", "score"} <= set(
        labels.columns
    )
    assert labels.height == len(sample)
    again = load_scorer(tmp_path / "betr")
    np.testing.assert_array_equal(again.score(texts), scorer.score(texts))
    assert again.report["targets"] == scorer.report["targets"]
    result = score_corpus(again, Corpus(demo_dir / "train"), tmp_path / "s", runner=LocalRunner(2))
    assert result.docs_out == len(sample)


@pytest.mark.slow
def test_a_saved_betr_scorer_runs_on_ray_unchanged(champ_betr, demo_dir: Path, tmp_path: Path):
    ray = pytest.importorskip("ray")
    scorer, _ = champ_betr
    scorer.save(tmp_path / "betr")
    corpus = Corpus(demo_dir / "train")
    try:
        score_corpus(scorer, corpus, tmp_path / "ray", runner=RayRunner(workers=1, progress=False))
    finally:
        ray.shutdown()
    score_corpus(scorer, corpus, tmp_path / "local")
    read = lambda d: pl.concat([pl.read_parquet(p) for p in sorted(d.glob("*.parquet"))])  # noqa: E731
    assert read(tmp_path / "ray").equals(read(tmp_path / "local"))


def test_bad_input_is_a_clear_error(real_texts: list[str], static_model: Path) -> None:
    # the paper's settings, with a 100 MB model (2M buckets x dim 128 would be 1 GB)
    scorer = BETRScorer(embedder={"model": str(static_model), "cache": False},
                        params={"bucket": 200_000})  # fmt: skip
    with pytest.raises(ValueError, match="target set is empty"):
        scorer.fit([], real_texts)
    with pytest.raises(ValueError, match=r"too small.*at least 100"):
        scorer.fit(["a target"], real_texts[:60])
    with pytest.raises(RuntimeError, match="not fitted"):
        scorer.score(["x"])
    with pytest.raises(ValueError, match="positive_fraction"):
        BETRScorer(positive_fraction=1.5)


def test_settings_are_the_one_declaration_of_the_defaults() -> None:
    default, scorer = BETRSettings(), BETRScorer()
    for name in ("column", "aggregation", "positive_fraction"):
        assert getattr(scorer, name) == getattr(default, name)
    assert default.seed is None and default.params == {}
    # the model (name, folder or a dict of Embedder settings) and long_docs when it is given (a
    # step always gives it); a dict keeps its own long_docs
    assert default.embedder_config() == {"model": None} == scorer.embedder
    assert BETRSettings(embedder="static", long_docs="mean").embedder_config() == {
        "model": "static",
        "long_docs": "mean",
    }
    given = {"model": "static", "cache": False, "long_docs": "mean"}
    assert BETRSettings(embedder=given, long_docs="truncate").embedder_config() == given
    with pytest.raises(ValueError, match="positive_fraction"):
        BETRSettings(positive_fraction=1.0)
    with pytest.raises(ValueError, match="sampel"):
        fit_betr(None, ["a target"], sampel=300)  # an unknown option, before any work


def test_fit_betr_takes_settings_or_keywords(demo_dir: Path, static_model: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    embedder = {"model": str(static_model), "cache": False}
    small = {"lr": 0.3, "epoch": 20, "bucket": 200_000, "thread": 1}  # 1 thread: reproducible
    settings = BETRSettings(sample=200, embedder=embedder, params=small, column="b")
    a = fit_betr(corpus, "assay_champ", settings, max_targets=50)
    # keywords alone (a seed of None is 0), and keywords over settings
    b = fit_betr(corpus, "assay_champ", max_targets=50, sample=200, embedder=embedder,
                 params=small, column="b", seed=0)  # fmt: skip
    c = fit_betr(corpus, "assay_champ", BETRSettings(sample=999, long_docs="truncate"),
                 max_targets=50, sample=200, embedder=embedder, params=small, column="b")  # fmt: skip
    assert a.get_config() == b.get_config() and a.get_config()["embedder"] == embedder
    assert c.get_config() == {**a.get_config(), "embedder": {**embedder, "long_docs": "truncate"}}
    assert a.columns == ["b"] and a.report["sample"] == 200 and a.report["targets"] == 50
    texts = corpus.sample(20, seed=1).get_column("text").to_list()
    for other in (b, c):
        np.testing.assert_array_equal(other.labels["label"], a.labels["label"])
        np.testing.assert_array_equal(other.score(texts), a.score(texts))
