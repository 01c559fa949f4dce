"""Pretrained fastText classifiers with labels of their own (DCLM's `__label__hq`), trained on
real text inside the test, scored by a label's probability or by the expected numeric label."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.errors import ConfigError, MissingError
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import make_scorer
from assay.selection.score import score_corpus

fasttext = pytest.importorskip("fasttext")

from assay.selection.fasttext import to_line, zeroed_allocations  # noqa: E402

#: small, quick, reproducible models: one thread, few buckets
TRAIN = {"lr": 0.5, "epoch": 25, "dim": 16, "bucket": 20_000, "wordNgrams": 2, "thread": 1}


def _train(path: Path, examples: list[tuple[str, str]], **params) -> Path:
    """A supervised fastText model trained on (label, text) pairs, saved at `path`."""
    data = path.with_suffix(".txt")
    data.write_text("".join(f"{label} {to_line(text)}\n" for label, text in examples))
    with zeroed_allocations():
        model = fasttext.train_supervised(input=str(data), seed=0, verbose=0, **{**TRAIN, **params})
    model.save_model(str(path))
    return path


def _texts(records: list[dict], domain: str) -> list[str]:
    return [r["text"] for r in records if r["domain"] == domain]


@pytest.fixture(scope="module")
def dclm_like(demo_records: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DCLM's label names: news prose is `__label__hq`, code `__label__cc`."""
    folder = tmp_path_factory.mktemp("dclm")
    pairs = [("__label__hq", t) for t in _texts(demo_records, "news")]
    pairs += [("__label__cc", t) for t in _texts(demo_records, "code")]
    order = np.random.default_rng(0).permutation(len(pairs))
    return _train(folder / "hq.bin", [pairs[i] for i in order])


@pytest.fixture(scope="module")
def graded(demo_records: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Numeric labels, as FineWeb-Edu's educational scores: code 0, news 1, math 3."""
    folder = tmp_path_factory.mktemp("graded")
    grades = {"code": "0", "news": "1", "math": "3"}
    pairs = [(f"__label__{g}", t) for d, g in grades.items() for t in _texts(demo_records, d)]
    order = np.random.default_rng(1).permutation(len(pairs))
    return _train(folder / "edu.bin", [pairs[i] for i in order])


def test_the_probability_of_any_label(dclm_like: Path, demo_dir: Path) -> None:
    held = pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()))
    texts, domain = held.get_column("text").to_list(), held.get_column("domain").to_numpy()
    scorer = make_scorer("fasttext_classifier", model=str(dclm_like), label="__label__hq")
    assert sorted(scorer.labels) == ["__label__cc", "__label__hq"]
    hq = scorer.score(texts)
    assert hq.dtype == np.float32 and ((hq >= 0) & (hq <= 1)).all()
    assert hq[domain == "news"].mean() > 0.8 > 0.2 > hq[domain == "code"].mean()
    # the model's own prediction, label by label
    model = fasttext.load_model(str(dclm_like))
    for text, got in zip(texts, hq, strict=True):
        labels, probs = model.predict(to_line(text), k=-1)
        assert got == pytest.approx(min(1.0, probs[labels.index("__label__hq")]), abs=1e-6)
    # the prefix may be left out; the other label is the complement
    short = make_scorer("fasttext_classifier", model=str(dclm_like), label="hq").score(texts)
    assert np.array_equal(short, hq)
    cc = make_scorer("fasttext_classifier", model=str(dclm_like), label="cc").score(texts)
    np.testing.assert_allclose(hq + cc, 1.0, atol=3e-5)
    # the scorer pickles as its settings and loads the model again where it runs
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone._model is None and np.array_equal(clone.score(texts[:5]), hq[:5])


def test_a_missing_label_or_file_is_named(
    dclm_like: Path, graded: Path, demo_dir: Path, tmp_path: Path
) -> None:
    scorer = make_scorer("fasttext_classifier", model=str(dclm_like), label="__label__pos")
    with pytest.raises(
        ConfigError, match=r"hq\.bin has no label '__label__pos'; its labels: "
    ) as e:
        scorer.score(["Some text to score."])
    assert "__label__hq" in str(e.value) and "__label__cc" in str(e.value)
    with pytest.raises(ConfigError, match="give label"):
        make_scorer("fasttext_classifier", model=str(dclm_like))
    gone = make_scorer("fasttext_classifier", model=str(tmp_path / "gone.bin"), label="hq")
    with pytest.raises(MissingError, match=r"no fastText model at .*gone\.bin"):
        gone.score(["Some text to score."])
    with pytest.raises(MissingError, match="no fastText model at"):  # before any shard is scored
        score_corpus(gone, Corpus(demo_dir / "heldout"), tmp_path / "scores")
    assert not list((tmp_path / "scores").glob("*.parquet"))
    with pytest.raises(ConfigError, match="output must be one of"):
        make_scorer("fasttext_classifier", model=str(graded), output="mean")
    words = make_scorer("fasttext_classifier", model=str(dclm_like), output="expected")
    with pytest.raises(ConfigError, match=r"needs numeric labels.*'__label__(hq|cc)'"):
        words.score(["Some text to score."])


def test_the_expected_value_of_numeric_labels(graded: Path, demo_dir: Path) -> None:
    held = pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()))
    texts, domain = held.get_column("text").to_list(), held.get_column("domain").to_numpy()
    scorer = make_scorer("fasttext_classifier", model=str(graded), output="expected")
    got = scorer.score(texts)
    assert got.dtype == np.float32 and ((got >= 0) & (got <= 3)).all()
    assert got[domain == "math"].mean() > 2.5 and got[domain == "code"].mean() < 0.5
    model = fasttext.load_model(str(graded))
    for text, value in zip(texts, got, strict=True):
        labels, probs = model.predict(to_line(text), k=-1)
        grades = np.array([float(lb.removeprefix("__label__")) for lb in labels])
        assert value == pytest.approx(float(probs @ grades / probs.sum()), abs=1e-5)
    # a folder holding one model file names it
    assert np.array_equal(
        make_scorer("fasttext_classifier", model=str(graded.parent), output="expected").score(
            texts[:4]
        ),
        got[:4],
    )


def test_scores_follow_the_model_file(dclm_like: Path, graded: Path, demo_dir: Path, tmp_path):
    """Through score_corpus and the runner; a model file replaced at the same path is a new
    input, and its scores are made again."""
    corpus = Corpus(demo_dir / "heldout")
    texts = pl.concat(list(corpus.iter_batches())).get_column("text").to_list()
    model = tmp_path / "model.bin"
    shutil.copyfile(dclm_like, model)
    scorer = make_scorer("fasttext_classifier", model=str(model), label="hq", column="dclm")
    out = tmp_path / "scores"
    score_corpus(scorer, corpus, out, runner=LocalRunner(workers=2))
    unchanged = score_corpus(scorer, corpus, out, runner=LocalRunner(workers=1))
    assert unchanged.resumed == len(corpus.shards) and unchanged.ran == 0
    first = pl.concat([pl.read_parquet(f) for f in sorted(out.glob("*.parquet"))])
    assert first.columns == ["id", "dclm"]
    np.testing.assert_array_equal(first.get_column("dclm").to_numpy(), scorer.score(texts))

    # another classifier with the same labels at the same path: the scores follow it
    pairs = [("__label__hq", t) for t in texts[1::2]] + [("__label__cc", t) for t in texts[::2]]
    _train(tmp_path / "other.bin", pairs)
    shutil.copyfile(tmp_path / "other.bin", model)
    again = make_scorer("fasttext_classifier", model=str(model), label="hq", column="dclm")
    result = score_corpus(again, corpus, out, runner=LocalRunner(workers=1))
    n_shards = len(corpus.shards)
    assert result.stale == result.ran == n_shards and result.resumed == 0
    second = pl.concat([pl.read_parquet(f) for f in sorted(out.glob("*.parquet"))])
    expected = again.score(texts)
    assert not np.array_equal(expected, first.get_column("dclm").to_numpy())
    np.testing.assert_array_equal(second.get_column("dclm").to_numpy(), expected)


def test_the_command_line_scores_with_a_pretrained_classifier(
    dclm_like: Path, demo_dir: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from assay.cli import app

    cli = CliRunner()
    listed = cli.invoke(app, ["scorers"], catch_exceptions=False).output.split()
    assert "fasttext_classifier" in listed and "hf_classifier" in listed
    heldout, out = demo_dir / "heldout", tmp_path / "dclm"
    args = [
        "score",
        str(heldout),
        "--scorer",
        "fasttext_classifier",
        "--params",
        f"model={dclm_like}",
    ]
    done = cli.invoke(
        app, [*args, "--params", "label=hq", "--params", "column=dclm", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "scored 40 documents (columns: dclm)" in done.output
    corpus = Corpus(heldout)
    texts = pl.concat(list(corpus.iter_batches())).get_column("text").to_list()
    frame = pl.concat([pl.read_parquet(f) for f in sorted((out / "scores").glob("*.parquet"))])
    direct = make_scorer("fasttext_classifier", model=str(dclm_like), label="hq").score(texts)
    np.testing.assert_array_equal(frame.get_column("dclm").to_numpy(), direct)
    wrong = cli.invoke(app, [*args, "--params", "label=pos", "--out", str(tmp_path / "wrong")])
    # (`assay.cli.main` prints an AssayError as one line and exits with 2)
    assert isinstance(wrong.exception, ConfigError)
    assert f"{dclm_like} has no label 'pos'; its labels: __label__" in str(wrong.exception)
