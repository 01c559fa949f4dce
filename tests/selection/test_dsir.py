"""DSIR: hashed n-gram features against a plain-Python reference, importance weights that find
the target domain on real text, persistence, the runner, the verb, and Gumbel resampling."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import load_scorer
from assay.selection.dsir import (
    DSIRScorer,
    count_vectors,
    fit_dsir,
    ngram_buckets,
)
from assay.selection.score import score_corpus
from assay.selection.select import select

M = (1 << 64) - 1
P = 0x100000001B3


def _mix(z: int, seed: int) -> int:
    z ^= (seed * 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def _word_hash(word: str) -> int:
    """The word hash, one word at a time in Python integers."""
    b = word.encode("utf-8")
    if len(b) <= 64:
        h = (len(b) * 0x9E3779B97F4A7C15) & M
        for k in range(0, len(b), 8):
            x = ((h ^ int.from_bytes(b[k : k + 8], "little")) * P) & M
            h = x ^ (x >> 29)
    else:
        h = sum(c * pow(P, len(b) - 1 - j, 1 << 64) for j, c in enumerate(b)) & M
        h = (h + (len(b) << 56)) & M
    return _mix(h, 0x5D51)


def _reference_counts(words: list[str], num_buckets: int) -> np.ndarray:
    hashes = [_word_hash(w) for w in words]
    out = np.zeros(num_buckets, dtype=np.int64)
    for h in hashes:
        out[h % num_buckets] += 1
    for a, b in itertools.pairwise(hashes):
        out[_mix((a * 0x9E3779B97F4A7C15 + b) & M, 0xB16) % num_buckets] += 1
    return out


def test_features_match_a_hand_computed_example() -> None:
    long_word = "x" * 70 + "y"  # longer than 64 bytes: the polynomial hash
    texts = [
        "Hello, World! Hello world.",
        "",
        "Café — naïve;  2+2=4 \u00a0ok",  # not ASCII: split by Python's regex
        f"a {long_word} (b_c)",
    ]
    words = [
        ["hello", ",", "world", "!", "hello", "world", "."],
        [],
        ["café", "—", "naïve", ";", "2", "+", "2", "=", "4", "ok"],
        ["a", long_word, "(", "b_c", ")"],
    ]
    got = count_vectors(texts, num_buckets=97)
    for row, w in zip(got, words, strict=True):
        np.testing.assert_array_equal(row, _reference_counts(w, 97))
        assert row.sum() == max(0, 2 * len(w) - 1)  # unigrams and bigrams
    # a word's bucket is the same wherever it occurs ("hello", "world" twice each)
    buckets, doc = ngram_buckets(texts, 97, ngrams=1)
    assert np.bincount(doc, minlength=4).tolist() == [7, 0, 10, 5]
    assert buckets[0] == buckets[4] and buckets[2] == buckets[5]
    assert count_vectors(texts, 97, ngrams=1)[0].sum() == 7


def test_words_follow_the_official_tokenizer_on_real_text(real_texts: list[str]) -> None:
    from assay.selection.dsir import WORD_PUNCT, _word_spans

    texts = real_texts[::3]
    buf, starts, lengths, doc = _word_spans(texts)
    got = [bytes(buf[s : s + n]).decode() for s, n in zip(starts, lengths, strict=True)]
    assert got == [w for t in texts for w in WORD_PUNCT.findall(t.lower())]
    assert np.bincount(doc, minlength=len(texts)).tolist() == [
        len(WORD_PUNCT.findall(t.lower())) for t in texts
    ]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


@pytest.fixture(scope="module")
def math_dsir(demo_records: list[dict]) -> DSIRScorer:
    math = [r["text"] for r in demo_records if r["domain"] == "math"]
    return DSIRScorer(num_buckets=10_000).fit(math, [r["text"] for r in demo_records])


def test_weights_rank_held_out_target_documents_first(
    math_dsir: DSIRScorer, demo_dir: Path, demo_records: list[dict]
) -> None:
    held = pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()), how="diagonal_relaxed")
    scores = math_dsir.score(held.get_column("text").to_list())
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    is_math = (held.get_column("domain") == "math").to_numpy()
    assert is_math.sum() >= 5 and (~is_math).sum() >= 5
    assert _auc(scores[is_math], scores[~is_math]) > 0.9
    # the weight is the sum of the n-grams' log ratios, as the official np.dot(log_diff, counts)
    texts = held.get_column("text").to_list()[:5]
    expect = count_vectors(texts, 10_000) @ math_dsir.log_diff
    np.testing.assert_allclose(math_dsir.log_weights(texts), expect, rtol=1e-9, atol=1e-6)
    assert math_dsir.report["targets"] == 90 and math_dsir.report["raw_documents"] == len(
        demo_records
    )


def test_smoothing_and_the_empty_bucket_guard() -> None:
    scorer = DSIRScorer(num_buckets=50, target_laplace_smoothing=1.0)
    scorer.fit(["alpha beta"], ["alpha gamma delta", "gamma"])
    assert np.isfinite(scorer.log_diff).all()
    assert scorer.report["target_ngrams"] == 3 and scorer.report["raw_ngrams"] == 6
    bare = DSIRScorer(num_buckets=50).fit(["alpha beta"], ["alpha gamma delta", "gamma"])
    assert bare.log_diff.max() > 15  # a bucket seen only in the target: log(p / 1e-8)


def test_save_load_runner_and_gumbel_resampling(
    math_dsir: DSIRScorer, demo_dir: Path, tmp_path: Path
) -> None:
    corpus = Corpus(demo_dir / "train")
    math_dsir.save(tmp_path / "model")
    again = load_scorer(tmp_path / "model")
    assert isinstance(again, DSIRScorer) and again.get_config() == math_dsir.get_config()
    texts = [r for b in corpus.iter_batches() for r in b.get_column("text").to_list()]
    np.testing.assert_array_equal(again.score(texts), math_dsir.score(texts))

    score_corpus(again, corpus, tmp_path / "s1")
    score_corpus(again, corpus, tmp_path / "s2", runner=LocalRunner(2, progress=False))
    one, two = (
        pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / s).rglob("*.parquet"))])
        for s in ("s1", "s2")
    )
    assert one.height == len(texts) and one.equals(two)

    # DSIR's resampling: Gumbel top-k of the log weights at tau 1, deterministic for a seed
    def kept(out: str, seed: int) -> pl.DataFrame:
        select(corpus, tmp_path / "s1", tmp_path / out, column="dsir", policy="gumbel", tau=1.0,
               keep=0.2, seed=seed)  # fmt: skip
        return pl.concat(list(Corpus(tmp_path / out).iter_batches()), how="diagonal_relaxed")

    a, b = kept("k1", 3), kept("k2", 3)
    assert a.get_column("id").to_list() == b.get_column("id").to_list()
    assert a.height == round(0.2 * len(texts))
    assert (a.get_column("domain") == "math").mean() > 0.8  # a third of the pool


def test_fit_dsir_from_a_corpus_and_targets(demo_dir: Path, tmp_path: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    scorer = fit_dsir(corpus, "assay_champ", sample=100, num_buckets=2_000, seed=1)
    assert scorer.report["raw_documents"] == 100 and scorer.report["targets"] > 100
    assert scorer.log_diff.shape == (2_000,)
    again = fit_dsir(corpus, "assay_champ", sample=100, num_buckets=2_000, seed=1)
    np.testing.assert_array_equal(again.log_diff, scorer.log_diff)
    other = fit_dsir(corpus, "assay_champ", sample=100, num_buckets=2_000, seed=2)
    assert not np.array_equal(other.log_diff, scorer.log_diff)


def test_dsir_verb_then_gumbel_select(demo_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from assay.cli import app

    def ok(args: list[str]) -> str:
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    train = str(demo_dir / "train")
    out = ok([
        "dsir", train, "--targets", "assay_champ", "--out", str(tmp_path / "d"), "--sample", "150",
        "--num-buckets", "5000", "--no-progress",
    ])  # fmt: skip
    assert "150 sampled documents" in out and "5,000 buckets" in out
    scorer = load_scorer(tmp_path / "d" / "model")
    assert scorer.kind == "dsir" and scorer.get_config()["num_buckets"] == 5000
    ok([
        "select", train, "--scores", str(tmp_path / "d" / "scores"), "--column", "dsir",
        "--policy", "gumbel", "--tau", "1", "--keep", "0.1", "--out", str(tmp_path / "sel"),
    ])  # fmt: skip
    kept = pl.concat(
        list(Corpus(tmp_path / "sel" / "selected").iter_batches()), how="diagonal_relaxed"
    )
    assert kept.height == 36 and (kept.get_column("domain") == "math").mean() > 0.5
