"""Junk in the pool: the demo's junk generator is deterministic, and a quality selection of 80%
of the characters drops it. The pool: the small demo corpus' 360 training documents plus 90 junk
copies of them (30 of each kind, 19% of the characters). Shares are of the kept characters.

What holds (measured): an n-gram model of clean demo text that is not in the pool (CCNet,
`ngram_lm`, lowest perplexity kept) drops every character-noised copy and most word-shuffled
ones, but a real sentence repeated has a real sentence's perplexity, so alone it keeps ~4% junk;
gated by repetition (`doc_stats`' dup_line_frac <= 0.3) it keeps under 2%. Document statistics
alone, a DCLM-style fastText classifier (clean text vs the pool) and random keep over 10%."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from assay.demo import (
    JUNK_KINDS,
    code_docs,
    make_junk,
    news_docs,
    reference_docs,
    sympy_docs,
)
from assay.errors import ConfigError
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.fasttext import train_quality_classifier
from assay.selection.ngram_lm import NgramLMScorer
from assay.selection.policies import topk_mask
from assay.selection.random_scorer import RandomScorer

KEEP = 0.8


@pytest.fixture(scope="module")
def pool(demo_records: list[dict]) -> list[dict]:
    rng = np.random.default_rng(0)
    picked = [demo_records[i] for i in sorted(rng.choice(len(demo_records), 90, replace=False))]
    junk = [j for k, kind in enumerate(JUNK_KINDS) for j in make_junk(picked[k::3], kind)]
    return demo_records + junk


@pytest.fixture(scope="module")
def clean_reference(demo_dir: Path, demo_records: list[dict]) -> list[str]:
    """Demo text of the four domains that is in neither the pool nor its junk."""
    from assay.io.corpus import Corpus

    pool_ids = {r["id"] for r in demo_records}
    pool_ids |= {r["id"] for b in Corpus(demo_dir / "heldout").iter_batches() for r in b.to_dicts()}
    sources = (news_docs(), reference_docs(), sympy_docs(every=8), code_docs(every=8))
    return [d.text for src in sources for d in src if d.id not in pool_ids]


def _junk_share(pool: list[dict], scores: np.ndarray, mode: str) -> tuple[float, Counter]:
    """Junk's share of the kept characters, and the kept junk documents of each kind."""
    chars = np.array([len(r["text"]) for r in pool], dtype=np.float64)
    kept = topk_mask(scores, KEEP, weights=chars, mode=mode)
    junk = np.array([bool(r.get("junk_kind")) for r in pool])
    kinds = Counter(
        r["junk_kind"] for r, k in zip(pool, kept, strict=True) if k and r.get("junk_kind")
    )
    return float(chars[kept & junk].sum() / chars[kept].sum()), kinds


def test_junk_is_deterministic_and_of_its_kind(demo_records: list[dict]) -> None:
    records = demo_records[:20]
    for kind in JUNK_KINDS:
        a = make_junk(records, kind, seed=3)
        assert a == make_junk(records, kind, seed=3)
        assert a[::-1] == make_junk(records[::-1], kind, seed=3)  # not the records' order
        assert [j["text"] for j in a] != [j["text"] for j in make_junk(records, kind, seed=4)]
        assert all(
            j["junk_kind"] == kind and j["id"] == f"junk/{kind}/{r['id']}"
            for j, r in zip(a, records, strict=True)
        )
        assert all(j["domain"] == r["domain"] for j, r in zip(a, records, strict=True))
    for r, j in zip(records, make_junk(records, "shuffled"), strict=True):
        assert sorted(j["text"].split()) == sorted(r["text"].split()) and j["text"] != r["text"]
    for r, j in zip(records, make_junk(records, "noised"), strict=True):
        same = sum(a == b for a, b in zip(r["text"], j["text"], strict=False))
        assert (
            j["text"] != r["text"]
            and abs(len(j["text"]) - len(r["text"])) < 0.1 * len(r["text"]) + 5
        )
        assert same < len(r["text"])
    for r, j in zip(records, make_junk(records, "boilerplate"), strict=True):
        lines = j["text"].split("\n")
        assert len(lines) >= 3 and len(set(lines)) == 1
        assert 0.5 * len(r["text"]) - 100 < len(j["text"]) < 1.5 * len(r["text"]) + 200
    with pytest.raises(ConfigError):
        make_junk(records, "spam")


def test_ngram_lm_gated_by_repetition_keeps_under_2_percent_junk(
    pool: list[dict], clean_reference: list[str]
) -> None:
    texts = [r["text"] for r in pool]
    assert len(pool) == 450 and len(clean_reference) > 1000
    ppl = NgramLMScorer(order=3).fit(clean_reference).score(texts)
    share, kinds = _junk_share(pool, ppl, "bottom")
    assert kinds["noised"] == 0 and kinds["shuffled"] <= 10  # of 30 each
    assert share <= 0.06  # alone: repeated real sentences get through (measured 3.8%)
    dup_lines = DocStatsScorer(stat="dup_line_frac").score(texts)
    gated = np.where(dup_lines > 0.3, np.inf, ppl.astype(np.float64))
    share, kinds = _junk_share(pool, gated, "bottom")
    assert share <= 0.02, (share, kinds)  # measured 0.9%
    assert kinds["boilerplate"] == 0 and kinds["noised"] == 0


def test_statistics_classifier_and_random_keep_junk(
    pool: list[dict], clean_reference: list[str]
) -> None:
    texts = [r["text"] for r in pool]
    stats = DocStatsScorer().score_table(texts)
    rng = np.random.default_rng(1)
    positives = [clean_reference[i] for i in rng.choice(len(clean_reference), 450, replace=False)]
    classifier = train_quality_classifier(positives, texts, seed=0, params={"thread": 1})
    cases = {
        "alpha_frac, high": (stats["alpha_frac"], "top"),
        "unique_word_frac, high": (stats["unique_word_frac"], "top"),
        "fastText clean vs pool": (classifier.score(texts), "top"),
        "random": (RandomScorer(seed=0).score(texts), "top"),
    }
    for name, (scores, mode) in cases.items():
        share, kinds = _junk_share(pool, scores, mode)
        assert share > 0.1, (name, share, kinds)  # measured 15% to 21%


def test_quality_then_target_recipe(
    tmp_path: Path, pool: list[dict], clean_reference: list[str]
) -> None:
    """The shipped recipe on the small demo pool with its junk (the reference: clean text of
    the four domains in place of the full demo's held-out news)."""
    import json

    import polars as pl
    import yaml

    from assay.io.corpus import Corpus
    from assay.recipe.pipeline import run_recipe
    from assay.recipe.recipe import parse_recipe

    root = Path(__file__).parent.parent.parent
    data = yaml.safe_load((root / "recipes" / "quality_then_target.yaml").read_text())
    write = tmp_path / "pool.jsonl"
    write.write_text("".join(json.dumps(r) + "\n" for r in pool))
    ref = tmp_path / "reference.jsonl"
    ref.write_text("".join(json.dumps({"text": t}) + "\n" for t in clean_reference))
    data["corpus"] = {"paths": [str(write)]}
    data["steps"] = [s for s in data["steps"] if "demo_corpus" not in s]
    for s in data["steps"]:
        if "ngram_lm" in s:
            s["ngram_lm"]["reference"] = {"source": str(ref)}
    outcome = run_recipe(parse_recipe(data), run_dir=tmp_path / "run", progress=False)
    assert [s.status for s in outcome.steps] == ["ran"] * 6

    def kept(name: str) -> pl.DataFrame:
        folder = tmp_path / "run" / name / "selected"
        return pl.concat(list(Corpus(folder).iter_batches()), how="diagonal_relaxed")

    def junk_chars(frame: pl.DataFrame) -> float:
        chars = frame.get_column("text").str.len_chars()
        return float(chars.filter(frame.get_column("junk_kind").is_not_null()).sum() / chars.sum())

    repetition, quality, target = kept("repetition"), kept("quality"), kept("target")
    assert "boilerplate" not in set(repetition.get_column("junk_kind").drop_nulls())
    assert junk_chars(quality) <= 0.02, junk_chars(quality)
    q_chars = quality.get_column("text").str.len_chars().sum()
    t_chars = target.get_column("text").str.len_chars().sum()
    assert abs(t_chars / q_chars - 0.1) < 0.05
    assert set(target.get_column("id")) <= set(quality.get_column("id"))
    # DSIR toward competition math keeps more math than the gate passed
    math = {
        n: (f.get_column("domain") == "math").mean() for n, f in (("q", quality), ("t", target))
    }
    assert math["t"] > math["q"], math


@pytest.mark.parametrize("recipe", ["climb", "regmix"])
def test_mixing_recipes_gate_junk_before_the_search(
    tmp_path: Path, pool: list[dict], clean_reference: list[str], recipe: str
) -> None:
    """CLIMB's and RegMix's recipes cluster, then gate for quality before the search (tiny
    proxies reward junk): run up to the gate on the small demo pool with its junk; the gated
    corpus keeps 80% of the characters, every domain, and under 2% junk (measured 0.04%)."""
    import json

    import polars as pl
    import yaml

    from assay.io.corpus import Corpus
    from assay.recipe.pipeline import run_recipe
    from assay.recipe.recipe import parse_recipe

    root = Path(__file__).parent.parent.parent
    data = yaml.safe_load((root / "recipes" / f"{recipe}.yaml").read_text())
    names = [next(iter(s)) for s in data["steps"]]
    gated = [s for s in data["steps"][: names.index("tokenizer")] if "demo_corpus" not in s]
    assert [next(iter(s)) for s in gated] == ["cluster", "score", "select", "ngram_lm", "select"]
    assert all(s["tokenizer" if "tokenizer" in s else next(iter(s))].get("corpus") == {"step": "quality"} for s in data["steps"][names.index("tokenizer") :] if next(iter(s)) in ("tokenizer", "search"))  # fmt: skip
    write = tmp_path / "pool.jsonl"
    write.write_text("".join(json.dumps(r) + "\n" for r in pool))
    ref = tmp_path / "reference"
    ref.mkdir()
    (ref / "clean.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in clean_reference))  # fmt: skip
    data["corpus"] = {"paths": [str(write)]}
    gated[0]["cluster"].pop("heldout")
    gated[3]["ngram_lm"]["reference"] = {"source": str(ref)}
    data["steps"] = gated
    outcome = run_recipe(parse_recipe(data), run_dir=tmp_path / "run", progress=False)
    assert [s.status for s in outcome.steps] == ["ran"] * 5

    def kept(name: str) -> pl.DataFrame:
        folder = tmp_path / "run" / name / "selected"
        return pl.concat(list(Corpus(folder).iter_batches()), how="diagonal_relaxed")

    repetition, quality = kept("repetition"), kept("quality")
    chars = quality.get_column("text").str.len_chars()
    junk = float(chars.filter(quality.get_column("junk_kind").is_not_null()).sum() / chars.sum())
    assert junk <= 0.02, junk  # the pool: 19% junk by characters
    assert abs(chars.sum() / repetition.get_column("text").str.len_chars().sum() - KEEP) < 0.02
    assert set(quality.get_column("domain")) == set(repetition.get_column("domain"))
    assert quality.get_column("domain").str.starts_with("cluster_").all()
