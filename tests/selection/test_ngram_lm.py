"""The n-gram scorer (CCNet): Kneser-Ney probabilities against a direct computation, contexts that
sum to one, a model of news that finds news and sees word order, persistence, the runner, and
the verb followed by CCNet's head (select --mode bottom)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import load_scorer
from assay.selection.ngram_kn import words
from assay.selection.ngram_lm import NgramLMScorer, fit_ngram_lm
from assay.selection.score import score_corpus

TINY = [
    "the cat sat on the mat.\nthe dog sat on the log.",
    "a cat and a dog sat on a mat",
    "the cat saw the dog; the dog saw 12 cats",
    "on the mat the cat sat",
]


def _discounts(adjusted: list[int]) -> list[float]:
    n = [sum(1 for a in adjusted if a == j) for j in (1, 2, 3, 4)]
    out = [0.5, 1.0, 1.5]
    if n[0] and n[1]:
        y = n[0] / (n[0] + 2 * n[1])
        for j in range(3):
            if n[j]:
                d = (j + 1) - (j + 2) * y * n[j + 1] / n[j]
                out[j] = d if 0 < d < j + 1 else out[j]
    return out


class DirectKN:
    """Interpolated modified Kneser-Ney written from its definition over n-gram tuples."""

    def __init__(self, texts: list[str], order: int):
        self.order = order
        sents = [["<s>", *words(line), "</s>"] for t in texts for line in t.split("\n")]
        raw = [Counter() for _ in range(order)]
        for s in sents:
            for j in range(len(s)):
                for k in range(1, min(order, j + 1) + 1):
                    raw[k - 1][tuple(s[j - k + 1 : j + 1])] += 1
        self.a: list[dict] = []
        for k in range(1, order + 1):
            if k == order:
                a = dict(raw[k - 1])
            else:
                left = Counter(g[1:] for g in raw[k])
                a = {g: (c if g[0] == "<s>" else left[g]) for g, c in raw[k - 1].items()}
            a.pop(("<s>",), None)
            self.a.append(a)
        self.d = [_discounts(list(a.values())) for a in self.a]
        self.tot: list[Counter] = [Counter() for _ in range(order)]
        self.left: list[Counter] = [Counter() for _ in range(order)]
        for k, a in enumerate(self.a):
            for g, c in a.items():
                self.tot[k][g[:-1]] += c
                self.left[k][g[:-1]] += self.d[k][min(c, 3) - 1]
        self.vocab = len(self.a[0]) + 1

    def prob(self, history: list[str], w: str) -> float:
        p = 1.0 / self.vocab
        for k in range(1, self.order + 1):
            if len(history) < k - 1:
                break
            h = tuple(history[len(history) - k + 1 :]) if k > 1 else ()
            if self.tot[k - 1][h] == 0:
                continue
            c = self.a[k - 1].get((*h, w), 0)
            disc = self.d[k - 1][min(c, 3) - 1] if c else 0.0
            p = (c - disc + self.left[k - 1][h] * p) / self.tot[k - 1][h]
        return p


@pytest.mark.parametrize("order", [2, 3, 4])
def test_probabilities_match_a_direct_computation(order: int) -> None:
    scorer = NgramLMScorer(order=order).fit(TINY)
    direct = DirectKN(TINY, order)
    tests = ["the cat sat on the log", "a dog saw 7 mats; the mat", "zebra on the cat", ""]
    lp, doc = scorer.token_log10(tests)
    expect = []
    for t in tests:
        s = ["<s>", *words(t), "</s>"]
        expect += [direct.prob(s[:j], s[j]) for j in range(1, len(s))]
    np.testing.assert_allclose(10.0**lp, expect, rtol=1e-5)
    assert doc.tolist() == [i for i, t in enumerate(tests) for _ in range(len(words(t)) + 1)]
    assert scorer.report["ngrams"][0] == len(direct.a[0]) + 1  # and `<s>`, a context only
    # the perplexity: 10 ** -(mean log10 p) over words and </s>, as CCNet computes it
    ppl = scorer.score(tests)
    for i in range(len(tests)):
        assert ppl[i] == pytest.approx(10.0 ** -lp[doc == i].mean(), rel=1e-5)


def test_each_context_sums_to_one_over_the_vocabulary() -> None:
    scorer = NgramLMScorer(order=3).fit(TINY)
    vocab = [*sorted({w for t in TINY for w in words(t)}), "an-unseen-word"]
    for context in ["the cat", "sat on", "a", "", "dog ;", "never seen"]:
        n = len(words(context))
        texts = [f"{context} {w}" for w in vocab] + [context]  # the last: </s> after the context
        lp, doc = scorer.token_log10(texts)
        at = np.searchsorted(doc, np.arange(len(texts))) + n
        total = float((10.0 ** lp[at]).sum())
        assert total == pytest.approx(1.0, abs=1e-5), context


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


@pytest.fixture(scope="module")
def news_lm(demo_records: list[dict]) -> NgramLMScorer:
    return NgramLMScorer(order=3).fit([r["text"] for r in demo_records if r["domain"] == "news"])


def test_held_out_news_is_closer_than_code_and_math(news_lm: NgramLMScorer, demo_dir: Path) -> None:
    held = pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()), how="diagonal_relaxed")
    ppl = news_lm.score(held.get_column("text").to_list())
    assert ppl.dtype == np.float32 and np.isfinite(ppl).all() and (ppl > 1).all()
    domain = held.get_column("domain").to_numpy()
    news, other = ppl[domain == "news"], ppl[np.isin(domain, ["code", "math"])]
    assert len(news) >= 5 and len(other) >= 10
    assert _auc(other, news) > 0.9
    assert news_lm.report["reference_texts"] == 90


def test_word_order_matters(news_lm: NgramLMScorer, demo_dir: Path) -> None:
    held = pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()), how="diagonal_relaxed")
    rng = np.random.default_rng(0)
    originals, shuffled = [], []
    for text in held.get_column("text").to_list():
        toks = text.split()
        if len(toks) >= 20:
            originals.append(" ".join(toks))
            shuffled.append(" ".join(rng.permutation(toks)))
    assert len(originals) >= 30
    a, b = news_lm.score(originals), news_lm.score(shuffled)
    assert (b > a).mean() >= 0.95


def test_save_load_and_the_runner(news_lm: NgramLMScorer, demo_dir: Path, tmp_path: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    news_lm.save(tmp_path / "model")
    again = load_scorer(tmp_path / "model")
    assert isinstance(again, NgramLMScorer) and again.get_config() == news_lm.get_config()
    assert again.report == news_lm.report
    texts = [r for b in corpus.iter_batches() for r in b.get_column("text").to_list()]
    np.testing.assert_array_equal(again.score(texts), news_lm.score(texts))
    score_corpus(again, corpus, tmp_path / "s1")
    score_corpus(again, corpus, tmp_path / "s2", runner=LocalRunner(2, progress=False))
    one, two = (
        pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / s).rglob("*.parquet"))])
        for s in ("s1", "s2")
    )
    assert one.height == len(texts) and one.equals(two)
    np.testing.assert_array_equal(one.get_column("ngram_ppl").to_numpy(), news_lm.score(texts))


def test_fit_from_a_corpus_sample_is_seeded(demo_dir: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    a = fit_ngram_lm(corpus, sample=50, seed=1, order=2)
    b = fit_ngram_lm(corpus, sample=50, seed=1, order=2)
    c = fit_ngram_lm(corpus, sample=50, seed=2, order=2)
    probe = ["The market rose on Tuesday.", "def f(x): return x"]
    assert a.report["reference_texts"] == 50 and a.report["order"] == 2
    np.testing.assert_array_equal(a.score(probe), b.score(probe))
    assert not np.array_equal(a.score(probe), c.score(probe))


def test_verb_then_ccnet_head(demo_dir: Path, demo_records: list[dict], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from assay.cli import app

    def ok(args: list[str]) -> str:
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    ref = tmp_path / "news.jsonl"
    news = [r for r in demo_records if r["domain"] == "news"]
    ref.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in news))
    train = str(demo_dir / "train")
    out = ok([
        "ngram-lm", train, "--reference", str(ref), "--order", "3", "--out",
        str(tmp_path / "lm"), "--no-progress",
    ])  # fmt: skip
    assert "3-gram model of 90 reference texts" in out
    assert load_scorer(tmp_path / "lm" / "model").kind == "ngram_lm"
    ok([
        "select", train, "--scores", str(tmp_path / "lm" / "scores"), "--column", "ngram_ppl",
        "--mode", "bottom", "--keep", "0.2", "--out", str(tmp_path / "head"),
    ])  # fmt: skip
    head = pl.concat(
        list(Corpus(tmp_path / "head" / "selected").iter_batches()), how="diagonal_relaxed"
    )
    assert head.height == 72 and (head.get_column("domain") == "news").mean() > 0.8


def test_recipe_step_then_ccnet_middle(
    demo_dir: Path, demo_records: list[dict], tmp_path: Path
) -> None:
    from assay.recipe.pipeline import run_recipe

    ref = tmp_path / "news.jsonl"
    news = [r for r in demo_records if r["domain"] == "news"]
    ref.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in news))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: ccnet\nseed: 0\ncorpus: {{paths: [{demo_dir / 'train'}]}}\nsteps:\n"
        f"  - ngram_lm: {{reference: {{source: {ref}}}, order: 2}}\n"
        "  - select: {scores: [ngram_lm], column: ngram_ppl, mode: middle, keep: 0.5}\n"
    )
    run_recipe(recipe, run_dir=tmp_path / "run")
    scores = pl.concat(
        [pl.read_parquet(p) for p in (tmp_path / "run" / "ngram_lm" / "scores").rglob("*.parquet")]
    )
    kept = Corpus(tmp_path / "run" / "select" / "selected")
    ids = {i for b in kept.iter_batches() for i in b.get_column("id")}
    assert len(ids) == 180 and scores.height == 360
    ppl = scores.filter(pl.col("id").is_in(list(ids))).get_column("ngram_ppl")
    low, high = (
        scores.get_column("ngram_ppl").quantile(0.2),
        scores.get_column("ngram_ppl").quantile(0.8),
    )
    assert ppl.min() > low and ppl.max() < high  # the band around the median, not an end


def test_ccnet_normalisation_accents_digits_and_case() -> None:
    scorer = NgramLMScorer(order=2).fit(TINY)
    same = scorer.score(
        ["The Café saw 1984 dogs.", "the cafe saw 0000 dogs.", "THE CAFE SAW 7777 DOGS."]
    )
    assert same[0] == same[1] == same[2]
    assert words("Ångström’s 3.14 – «x»") == [
        "angstrom",
        "'",
        "s",
        "0",
        ".",
        "00",
        "-",
        '"',
        "x",
        '"',
    ]
    assert scorer.score(["the cat sat on the mat"])[0] < scorer.score(["mat the on sat cat the"])[0]


def test_a_reference_without_words_is_refused() -> None:
    from assay.errors import InputError

    for reference in ([], ["", "   ", "\n\n"]):
        with pytest.raises(InputError, match="has no words"):
            NgramLMScorer().fit(reference)
