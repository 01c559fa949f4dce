"""PreSelect: predictive strength, bits per character under real proxies, the distilled scorer."""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.io.corpus import Corpus
from assay.selection.base import load_scorer
from assay.selection.perplexity import PerplexityScorer
from assay.selection.preselect import (
    PreSelectScorer,
    PreSelectSettings,
    bits_per_char,
    family_losses,
    predictive_strength,
)
from assay.workflows.preselect import family_benchmark_scores, fit_preselect

pytest.importorskip("fasttext")

#: fastText settings for a few hundred documents (the official 3 epochs at lr 0.1 need more data),
#: with an 80 MB model (not 800 MB) and one thread, so that the same data trains the same model
SMALL_DATA = {"lr": 0.3, "epoch": 20, "bucket": 200_000, "thread": 1}
#: the synthetic family: row order is deliberately not the benchmark order
NAMES = ["m", "xs", "l", "s"]
SCORES = [0.42, 0.30, 0.50, 0.35]  # worst to best: xs, s, m, l


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _heldout(demo_dir: Path) -> pl.DataFrame:
    return pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()))


# -- predictive strength ---------------------------------------------------------------------------


def test_predictive_strength_known_answers() -> None:
    # rows: models with benchmark scores 1, 2, 3 (row 2 is the best); columns: documents
    losses = np.array(
        [
            [3.0, 1.0, 2.0, 3.0, 2.0],
            [2.0, 2.0, 1.0, 1.0, 2.0],
            [1.0, 3.0, 3.0, 2.0, 1.0],
        ]
    )
    expected = np.array([1.0, 0.0, 1 / 3, 2 / 3, 2 / 3], dtype=np.float32)  # equal losses: 0
    s = predictive_strength(losses, [1.0, 2.0, 3.0])
    assert s.dtype == np.float32 and s.shape == (5,)
    assert np.allclose(s, expected)
    # only the order of the benchmark scores counts, not the order of the rows
    perm = [2, 0, 1]
    assert np.array_equal(predictive_strength(losses[perm], np.array([3.0, 1.0, 2.0])), s)
    # the reversed order turns every concordant pair into a discordant one (without ties)
    reversed_s = predictive_strength(losses[:, :4], [3.0, 2.0, 1.0])
    assert np.allclose(reversed_s, 1.0 - s[:4])


def test_predictive_strength_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    losses = rng.normal(size=(5, 300)).round(1)  # rounding makes ties
    scores = rng.normal(size=5)
    order = np.argsort(scores)
    naive = [
        np.mean([losses[order[i], d] > losses[order[j], d] for i, j in itertools.combinations(range(5), 2)])
        for d in range(300)
    ]  # fmt: skip
    assert np.allclose(predictive_strength(losses, scores), naive)


def test_predictive_strength_rejects_bad_families() -> None:
    good = np.ones((3, 4))
    with pytest.raises(ValueError, match="at least 3 models"):
        predictive_strength(np.ones((2, 4)), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"distinct.*tied: b and c"):
        predictive_strength(good, [1.0, 2.0, 2.0], model_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="benchmark scores must be finite; not for model 1"):
        predictive_strength(good, [1.0, np.nan, 2.0])
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"losses must be finite.*model 1, document 2"):
        predictive_strength(bad, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        predictive_strength(np.ones((4, 4)), [1.0, 2.0, 3.0])


# -- the distilled scorer on a synthetic family ------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(demo_records: list[dict]) -> dict:
    """Losses of a 4-model family that agrees with its benchmark order on math documents only.

    On math documents the losses fall strictly with the benchmark score (perfect predictive
    strength); elsewhere each document gets the models in a random order. Plus one empty
    document and one with a failed (NaN) loss, which must be left out.
    """
    rng = np.random.default_rng(0)
    rank = np.argsort(np.argsort(SCORES))  # 0 = worst
    texts = [r["text"] for r in demo_records] + [""]
    ids = [r["id"] for r in demo_records] + ["empty"]
    domains = np.array([r["domain"] for r in demo_records] + ["none"])
    losses = np.empty((len(SCORES), len(texts)))
    for d in range(len(texts)):
        base = rng.uniform(1.0, 2.0)
        pos = (len(SCORES) - 1 - rank) if domains[d] == "math" else rng.permutation(len(SCORES))
        losses[:, d] = base + 0.1 * pos + rng.uniform(0, 0.05, len(SCORES))
    nan_doc = int(np.flatnonzero(domains == "news")[0])
    losses[1, nan_doc] = np.nan
    return {"texts": texts, "ids": ids, "domains": domains, "losses": losses, "nan_doc": nan_doc}


@pytest.fixture(scope="module")
def fitted(synthetic: dict) -> PreSelectScorer:
    return PreSelectScorer(params=SMALL_DATA).fit(
        synthetic["texts"],
        benchmark_scores=SCORES,
        losses=synthetic["losses"],
        ids=synthetic["ids"],
        model_names=NAMES,
        seed=0,
    )


def test_fit_labels_perfectly_concordant_documents(
    fitted: PreSelectScorer, synthetic: dict
) -> None:
    rep = fitted.report["preselect"]
    assert rep["calibration_docs"] == 361 and rep["usable_docs"] == 359
    assert rep["dropped_empty"] == 1 and rep["dropped_nonfinite_loss"] == 1
    assert rep["order"] == ["xs", "s", "m", "l"] and rep["pairs"] == 6
    assert rep["positive_rule"] == "perfect"
    # 89 usable math documents plus about 1 in 24 of the others by chance
    assert 89 <= rep["perfect"] <= 89 + 30 and rep["histogram"]["6/6"] == rep["perfect"]
    assert sum(rep["histogram"].values()) == 359
    assert rep["positives"] == rep["negatives"] == rep["perfect"]
    assert rep["positive_min_strength"] == 1.0 > rep["negative_max_strength"]
    assert fitted.report["fasttext"]["positive"] == rep["positives"]

    cal = fitted.calibration
    assert cal.columns == [
        "id", "chars", "bpc.m", "bpc.xs", "bpc.l", "bpc.s", "predictive_strength", "label",
    ]  # fmt: skip
    assert cal.get_column("id").to_list() == synthetic["ids"]
    assert cal.get_column("chars").to_list() == [len(t) for t in synthetic["texts"]]
    label = cal.get_column("label").to_numpy()
    math = synthetic["domains"] == "math"
    assert (label[math] == 1).all()  # every math document is perfect, and perfect is positive
    assert label[-1] == -1 and label[synthetic["nan_doc"]] == -1
    assert np.isnan(
        cal.get_column("predictive_strength").to_numpy()[[-1, synthetic["nan_doc"]]]
    ).all()
    assert (label == 1).sum() == rep["positives"] and (label == 0).sum() == rep["negatives"]
    strength = cal.get_column("predictive_strength").to_numpy()
    assert np.allclose(strength[label == 1], 1.0)
    # negatives come from the bottom of the ranking
    unused = (label == -1) & ~np.isnan(strength)
    assert strength[label == 0].max() <= strength[unused].min()


def test_classifier_learns_the_concordant_domain(fitted: PreSelectScorer, demo_dir: Path) -> None:
    held = _heldout(demo_dir)
    s = fitted.score(held.get_column("text").to_list())
    assert s.dtype == np.float32 and ((s >= 0) & (s <= 1)).all()
    math = held.get_column("domain").to_numpy() == "math"
    assert _auc(s[math], s[~math]) > 0.7


def test_save_load_round_trip(fitted: PreSelectScorer, tmp_path: Path, demo_dir: Path) -> None:
    texts = _heldout(demo_dir).get_column("text").to_list()
    with pytest.raises(TypeError, match="save"):
        pickle.dumps(fitted)  # native fastText state: it travels as a saved folder
    config = fitted.get_config()
    assert json.loads(json.dumps(config)) == config
    assert PreSelectScorer(**config).get_config() == config
    assert config["params"]["epoch"] == 20 and config["params"]["wordNgrams"] == 2

    fitted.save(tmp_path / "ps")
    names = {p.name for p in (tmp_path / "ps").iterdir()}
    assert names == {
        "scorer.json",
        "classifier",
        "calibration.parquet",
        "family.json",
        "fit_report.json",
    }
    loaded = load_scorer(tmp_path / "ps")
    assert isinstance(loaded, PreSelectScorer) and loaded.column == "preselect"
    assert np.array_equal(loaded.score(texts), fitted.score(texts))
    assert loaded.report["preselect"] == json.loads(json.dumps(fitted.report["preselect"]))
    clone = pickle.loads(pickle.dumps(fitted))  # now pickled as its path
    assert np.array_equal(clone.score(texts[:5]), fitted.score(texts[:5]))

    cal = pl.read_parquet(tmp_path / "ps" / "calibration.parquet")
    assert cal.equals(fitted.calibration)
    assert set(cal.get_column("label").unique().to_list()) == {-1, 0, 1}
    family = json.loads((tmp_path / "ps" / "family.json").read_text())
    assert family["order"] == ["xs", "s", "m", "l"]
    assert [m["rank"] for m in family["models"]] == [2, 0, 3, 1]
    # a loaded scorer saved elsewhere keeps its calibration file
    loaded.save(tmp_path / "again")
    assert pl.read_parquet(tmp_path / "again" / "calibration.parquet").equals(cal)
    assert np.array_equal(load_scorer(tmp_path / "again").score(texts), fitted.score(texts))


def test_too_few_perfect_documents_falls_back_to_the_top_fraction(synthetic: dict) -> None:
    def fit() -> PreSelectScorer:
        return PreSelectScorer(params=SMALL_DATA, min_positives=1000).fit(
            synthetic["texts"], benchmark_scores=SCORES, losses=synthetic["losses"], seed=3
        )

    with pytest.warns(UserWarning, match="departs from the paper"):
        scorer = fit()
    rep = scorer.report["preselect"]
    assert rep["positive_rule"] == "top_fraction"
    assert rep["positives"] == rep["negatives"] == round(0.1 * 359)
    assert rep["positive_min_strength"] == 1.0 and rep["negative_max_strength"] < 0.5
    # ties (many documents share a score) are broken by the seed, the same way every time
    with pytest.warns(UserWarning):
        again = fit()
    assert again.calibration.equals(scorer.calibration)


def test_mostly_perfect_family_balances_positives(real_texts: list[str]) -> None:
    # a family that ranks the same way on 40 of 60 documents (like checkpoints of one run)
    losses = np.tile(np.array([[3.0], [2.0], [1.0]]), (1, 60))
    losses[:, 40:] = losses[::-1, 40:]  # the last 20 are perfectly discordant
    with pytest.warns(UserWarning, match="more than half"):
        scorer = PreSelectScorer(params=SMALL_DATA).fit(
            real_texts[::6], benchmark_scores=[1.0, 2.0, 3.0], losses=losses
        )
    rep = scorer.report["preselect"]
    assert rep["perfect"] == 40 and rep["positives"] == rep["negatives"] == 20
    label = scorer.calibration.get_column("label").to_numpy()
    assert (label[40:] == 0).all() and (label[:40] == 1).sum() == 20


def test_fit_errors(real_texts: list[str]) -> None:
    texts = real_texts[:30]
    rng = np.random.default_rng(0)
    losses = rng.uniform(1, 2, (3, 30))
    with pytest.raises(ValueError, match="PreSelect needs at least 20"):
        PreSelectScorer().fit(texts[:15], benchmark_scores=[1, 2, 3], losses=losses[:, :15])
    with pytest.raises(ValueError, match=r"models=.*losses="):
        PreSelectScorer().fit(texts, benchmark_scores=[1, 2, 3])
    with pytest.raises(ValueError, match="one number per model"):
        PreSelectScorer().fit(texts, benchmark_scores=[1, 2], losses=losses)
    with pytest.raises(ValueError, match="at least 3 models"):
        PreSelectScorer().fit(texts, benchmark_scores=[1, 2], losses=losses[:2])
    with pytest.raises(ValueError, match=r"shape \(n_models, 30\)"):
        PreSelectScorer().fit(texts, benchmark_scores=[1, 2, 3], losses=losses[:, :29])
    with pytest.raises(ValueError, match="tied: b and c"):
        PreSelectScorer().fit(
            texts, benchmark_scores=[1, 2, 2], losses=losses, model_names=["a", "b", "c"]
        )
    with pytest.raises(ValueError, match="same predictive strength"):
        PreSelectScorer().fit(texts, benchmark_scores=[1, 2, 3], losses=np.ones((3, 30)))
    with pytest.raises(ValueError, match="positive_fraction"):
        PreSelectScorer(positive_fraction=0.8)
    with pytest.raises(ValueError, match="unknown fastText parameters"):
        PreSelectScorer(params={"learning_rate": 0.1})
    with pytest.raises(RuntimeError, match="not fitted"):
        PreSelectScorer().score(["text"])


def test_fit_preselect_takes_settings_or_keywords(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import assay.selection.preselect as module

    def fake_bits_per_char(model, texts, **_):  # a fixed loss per (model, document)
        digest = lambda t: hashlib.sha256(f"{Path(model).name}|{t}".encode()).digest()  # noqa: E731
        return np.asarray([int.from_bytes(digest(t)[:4], "little") / 2**32 for t in texts])

    monkeypatch.setattr(module, "bits_per_char", fake_bits_per_char)
    default, scorer = PreSelectSettings(), PreSelectScorer()
    assert (scorer.column, scorer.positive_fraction) == (default.column, default.positive_fraction)
    corpus = Corpus(demo_dir / "train")
    models = [
        {"path": str(tmp_path / n), "score": v} for n, v in (("a", 0.3), ("b", 0.5), ("c", 0.1))
    ]
    settings = PreSelectSettings(calibration=200, params=SMALL_DATA, column="pre")
    a = fit_preselect(corpus, models, settings)
    b = fit_preselect(corpus, models, calibration=200, params=SMALL_DATA, column="pre", seed=0)
    c = fit_preselect(corpus, models, PreSelectSettings(calibration=50, column="x"), calibration=200,
                      params=SMALL_DATA, column="pre")  # fmt: skip
    texts = corpus.sample(20, seed=1).get_column("text").to_list()
    for other in (b, c):
        assert other.get_config() == a.get_config() and other.columns == ["pre"]
        assert other.calibration.equals(a.calibration)
        np.testing.assert_array_equal(other.score(texts), a.score(texts))
    assert a.report["preselect"]["calibration_docs"] == 200
    with pytest.raises(ValueError, match="calibraton"):
        fit_preselect(corpus, models, calibraton=200)  # an unknown option, before any work


def test_the_family_runs_on_the_device_and_dtype_given(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import assay.selection.preselect as module

    calls = []

    def fake_bits_per_char(model, texts, **where):
        calls.append((Path(model).name, where["device"], where["dtype"]))
        rng = np.random.default_rng(ord(Path(model).name))
        return rng.random(len(texts))

    monkeypatch.setattr(module, "bits_per_char", fake_bits_per_char)
    corpus = Corpus(demo_dir / "train")
    models = [{"path": str(tmp_path / "a"), "score": 0.3}, str(tmp_path / "b"), str(tmp_path / "c")]
    targets = corpus.sample(20, seed=3).get_column("text").to_list()
    fit_preselect(corpus, models, calibration=200, params=SMALL_DATA, targets=targets,
                  device="cpu", dtype="bfloat16")  # fmt: skip
    # benchmark scores of b and c from the targets, then every model's calibration losses
    assert calls == [("b", "cpu", "bfloat16"), ("c", "cpu", "bfloat16")] + [
        (m, "cpu", "bfloat16") for m in "abc"
    ]
    assert PreSelectSettings(device="cuda:1").device == "cuda:1"
    with pytest.raises(ValueError, match="unknown device"):
        PreSelectSettings(device="gpu")


# -- real models -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_bits_per_char_agrees_with_bits_per_byte(trained_proxy, real_texts: list[str]) -> None:
    texts = [*real_texts[::40], ""]
    bpc = bits_per_char(trained_proxy.model_dir, texts)
    assert bpc.dtype == np.float64 and np.isnan(bpc[-1]) and (bpc[:-1] > 0).all()
    bpb = PerplexityScorer(trained_proxy.model_dir).score(texts[:-1]).astype(np.float64)
    ratio = np.array([len(t.encode("utf-8")) / len(t) for t in texts[:-1]])
    assert np.allclose(bpc[:-1], bpb * ratio, rtol=1e-5)
    # the token budget changes only the batching
    small_batches = bits_per_char(trained_proxy.model_dir, texts, batch_tokens=512)
    assert np.allclose(small_batches, bpc, rtol=1e-6, equal_nan=True)


@pytest.mark.slow
def test_a_family_of_checkpoints(
    tmp_path: Path, trained_proxy, token_cache, proxy_tokenizer, demo_dir: Path
) -> None:
    from assay.proxies.train import train_proxy

    short = {
        steps: train_proxy(
            token_cache, "natural", steps * 8 * 128, "tiny", 0, out_dir=tmp_path / f"s{steps}",
            tokenizer=proxy_tokenizer, progress=False, batch_size=8, seq_len=128,
        )
        for steps in (20, 60)
    }  # fmt: skip
    models = [
        short[20].model_dir,
        {"path": short[60].model_dir, "name": "s60"},
        trained_proxy,  # a ProxyRun stands for its model_dir
    ]
    held = _heldout(demo_dir)
    texts = held.get_column("text").to_list()
    losses = family_losses(models, texts)
    assert losses.shape == (3, 40) and np.isfinite(losses).all()
    mean = losses.mean(axis=1)
    assert mean[2] < mean[0]  # 200 steps know more than 20
    math = [t for t, d in zip(texts, held.get_column("domain"), strict=True) if d == "math"]
    bench = family_benchmark_scores(models, math)
    assert bench[2] > bench[0]
    assert np.allclose(bench, -losses[:, held.get_column("domain").to_numpy() == "math"].mean(1))
    # Checkpoints of one run rank the same way on nearly every document: nothing to learn from.
    with pytest.raises(ValueError, match=r"ranks the same way|same predictive strength"):
        PreSelectScorer().fit(texts, models, bench, losses=losses)
