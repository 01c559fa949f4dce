"""Selection policies: array functions and the corpus-level, resumable select()."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import write_select_keys

from assay.common.text import count_tokens
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.score import score_corpus
from assay.selection.select import (
    SelectConfig,
    _decide,
    gumbel_topk_mask,
    select,
    threshold_mask,
    topk_mask,
)
from assay.util.hashing import mix64, stable_hash64, uniform_from_hash

# -- arrays ------------------------------------------------------------------------------------


def test_topk_keeps_exactly_the_best_fraction_of_documents() -> None:
    s = np.random.default_rng(0).normal(size=1000)
    m = topk_mask(s, 0.1)
    assert m.sum() == 100
    assert s[m].min() >= s[~m].max()
    b = topk_mask(s, 0.1, mode="bottom")
    assert b.sum() == 100 and s[b].max() <= s[~b].min()


def test_topk_by_weight_gets_closest_to_the_target_weight() -> None:
    s = np.array([5.0, 4, 3, 2, 1])
    w = np.array([10.0, 10, 60, 10, 10])
    # 30% of 100: the top two weigh 20, the top three 80 -> 20 is closer
    assert topk_mask(s, 0.3, weights=w).tolist() == [True, True, False, False, False]
    assert topk_mask(s, 0.6, weights=w).tolist() == [True, True, True, False, False]


def test_middle_mode_keeps_the_band_around_the_median() -> None:
    s = np.arange(100, dtype=float)
    m = topk_mask(s, 0.5, mode="middle")
    assert m.sum() == 50
    assert s[m].min() == 25 and s[m].max() == 74


def test_ties_are_broken_deterministically() -> None:
    s = np.zeros(10)
    a = topk_mask(s, 0.3, tiebreak=np.arange(10)[::-1])
    assert a.tolist() == [True, True, True] + [False] * 7
    assert (topk_mask(s, 0.3) == topk_mask(s, 0.3)).all()


def test_gumbel_top1_samples_from_the_softmax() -> None:
    """Gumbel-top-k with k=1 picks item i with probability softmax(s/tau)_i."""
    s = np.array([0.0, 1.0, 2.0])
    tau = 0.7
    trials = 6000
    counts = np.zeros(3)
    for seed in range(trials):
        counts += gumbel_topk_mask(s, 1 / 3, tau=tau, seed=seed)
    expected = np.exp(s / tau) / np.exp(s / tau).sum()
    assert np.abs(counts / trials - expected).max() < 0.02
    # lower-is-better: the lowest score is now the most likely
    low = sum(
        gumbel_topk_mask(s, 1 / 3, tau=tau, seed=seed, mode="bottom")[0] for seed in range(2000)
    )
    assert abs(low / 2000 - expected[2]) < 0.03


def test_gumbel_temperature_moves_between_topk_and_random() -> None:
    s = np.random.default_rng(1).normal(size=2000)
    exact = topk_mask(s, 0.2)
    cold = gumbel_topk_mask(s, 0.2, tau=1e-4, seed=0)
    hot = gumbel_topk_mask(s, 0.2, tau=1e4, seed=0)
    assert (cold == exact).all()
    overlap_hot = (hot & exact).sum() / exact.sum()
    assert 0.1 < overlap_hot < 0.35  # about what a random 20% shares with the top 20%
    assert not (gumbel_topk_mask(s, 0.2, seed=1) == gumbel_topk_mask(s, 0.2, seed=2)).all()


def test_threshold_and_validation() -> None:
    s = np.array([0.1, 0.5, 0.9])
    assert threshold_mask(s, 0.5).tolist() == [False, True, True]
    assert threshold_mask(s, 0.5, mode="bottom").tolist() == [True, True, False]
    with pytest.raises(ValueError, match=r"keep must be a fraction in \(0, 1\]"):
        topk_mask(s, 1.5)
    with pytest.raises(ValueError, match="needs keep"):
        SelectConfig(column="x", policy="topk")
    with pytest.raises(ValueError, match="needs threshold"):
        SelectConfig(column="x", policy="threshold")
    with pytest.raises(ValueError, match="mode 'middle' needs the topk policy"):
        SelectConfig(column="x", policy="gumbel", keep=0.1, mode="middle")
    with pytest.raises(ValueError, match="by"):
        SelectConfig(column="x", keep=0.1, by="bytes")  # type: ignore[arg-type]


def test_token_counts_exact_with_a_tokenizer_and_estimated_without(
    tmp_path: Path, real_texts: list[str]
) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        real_texts, tokenizers.trainers.BpeTrainer(vocab_size=500, show_progress=False)
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    texts = pl.Series(real_texts[:50])
    exact = count_tokens(texts, str(tmp_path))
    assert exact.tolist() == [len(tok.encode(t).ids) for t in real_texts[:50]]
    est = count_tokens(texts, None)
    # a 500-token vocabulary splits words into several pieces; the estimate counts whole words
    assert (est > 0).all() and (exact >= est * 0.8).all()
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        count_tokens(texts, str(tmp_path / "missing"))


# -- corpus-level --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> tuple[Corpus, Path]:
    out = tmp_path_factory.mktemp("scores")
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(), corpus, out)
    return corpus, out


def _kept(folder: Path) -> pl.DataFrame:
    return pl.concat(
        [pl.concat(list(Corpus(p).iter_batches())) for p in sorted(folder.glob("[!._]*.jsonl.gz"))]
    )


@pytest.mark.parametrize("by", ["docs", "chars", "tokens"])
def test_select_keeps_the_top_fraction_by_measure(
    tmp_path: Path, scored: tuple[Corpus, Path], by: str
) -> None:
    corpus, scores = scored
    result = select(corpus, scores, tmp_path / "sel", column="alpha_frac", keep=0.25, by=by)
    kept = _kept(tmp_path / "sel")
    assert kept.height == result.kept_docs
    assert abs(result.kept_fraction - 0.25) < 0.01
    assert sorted(p.name for p in (tmp_path / "sel").glob("*.jsonl.gz")) == sorted(
        s.name for s in corpus.shards
    )
    all_scores = pl.concat([pl.read_parquet(p) for p in scores.glob("*.parquet")])
    kept_scores = all_scores.filter(pl.col("id").is_in(kept.get_column("id").implode()))
    dropped = all_scores.filter(~pl.col("id").is_in(kept.get_column("id").implode()))
    assert kept_scores.get_column("alpha_frac").min() >= dropped.get_column("alpha_frac").max()
    # selected shards keep every field of the input
    assert kept.columns == ["id", "text", "domain", "source"]
    summary = json.loads((tmp_path / "sel" / "_selection.json").read_text())
    assert set(summary["groups"]) == {"news", "math", "code", "reference"}
    assert sum(g["kept_docs"] for g in summary["groups"].values()) == result.kept_docs


def test_select_is_deterministic_across_workers_and_resumes(
    tmp_path: Path, scored: tuple[Corpus, Path]
) -> None:
    corpus, scores = scored
    cfg = SelectConfig(column="unique_word_frac", policy="gumbel", keep=0.3, tau=0.1, seed=7)
    a = select(corpus, scores, tmp_path / "a", cfg)
    b = select(corpus, scores, tmp_path / "b", cfg, runner=LocalRunner(workers=2))
    assert a.kept_docs == b.kept_docs
    for shard in corpus.shards:
        assert (tmp_path / "a" / shard.name).read_bytes() == (
            tmp_path / "b" / shard.name
        ).read_bytes()
    again = select(corpus, scores, tmp_path / "a", cfg)
    assert again.to_dict() == a.to_dict()
    other_seed = select(
        corpus,
        scores,
        tmp_path / "c",
        SelectConfig(column="unique_word_frac", policy="gumbel", keep=0.3, tau=0.1, seed=8),
    )
    assert set(_kept(tmp_path / "c").get_column("id")) != set(
        _kept(tmp_path / "a").get_column("id")
    )
    assert other_seed.kept_docs == pytest.approx(a.kept_docs, abs=2)


def test_changed_settings_need_overwrite(tmp_path: Path, scored: tuple[Corpus, Path]) -> None:
    corpus, scores = scored
    select(corpus, scores, tmp_path / "s", column="alpha_frac", keep=0.5)
    with pytest.raises(ValueError, match=r"other settings .*keep"):
        select(corpus, scores, tmp_path / "s", column="alpha_frac", keep=0.2)
    r = select(corpus, scores, tmp_path / "s", column="alpha_frac", keep=0.2, overwrite=True)
    assert r.kept_docs == 72 and _kept(tmp_path / "s").height == 72


def test_threshold_with_scores_and_format(tmp_path: Path, scored: tuple[Corpus, Path]) -> None:
    corpus, scores = scored
    r = select(
        corpus,
        scores,
        tmp_path / "t",
        column="n_chars",
        policy="threshold",
        threshold=2000,
        with_scores=True,
        format="parquet",
    )
    out = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "t").glob("*.parquet"))])
    assert out.height == r.kept_docs > 0
    assert (out.get_column("n_chars") >= 2000).all()
    assert {"alpha_frac", "n_chars", "dup_line_frac"} <= set(out.columns)
    assert r.score_cutoff == 2000


def test_documents_without_scores(
    tmp_path: Path, scored: tuple[Corpus, Path], demo_dir: Path
) -> None:
    corpus, scores = scored
    stale = tmp_path / "stale"
    for p in scores.glob("*"):
        if p.is_file():
            (stale / p.name).parent.mkdir(parents=True, exist_ok=True)
            data = pl.read_parquet(p).slice(1) if p.suffix == ".parquet" else None
            if data is not None:
                data.write_parquet(stale / p.name)
            else:
                (stale / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ValueError, match="has no 'alpha_frac' score"):
        select(corpus, stale, tmp_path / "x", column="alpha_frac", keep=0.5)
    r = select(
        Corpus(demo_dir / "train", on_error="skip"),
        stale,
        tmp_path / "y",
        column="alpha_frac",
        keep=0.5,
    )
    assert r.skipped == {"no_score": 4} and r.docs == 356
    with pytest.raises(ValueError, match="no score column 'nope'"):
        select(corpus, scores, tmp_path / "z", column="nope", keep=0.5)


# -- the same decisions as a plain in-memory reference, in a few bytes per document ----------------


def _reference_cut(key: np.ndarray, tb: np.ndarray, w: np.ndarray, keep: float) -> np.ndarray:
    """The decision as first written: one lexsort over every key in memory."""
    order = np.lexsort((-tb.astype(np.float64), -key))
    cum = np.cumsum(w[order], dtype=np.float64)
    target = keep * cum[-1]
    k = min(int(np.searchsorted(cum, target, side="left")) + 1, len(key))
    if k > 1 and abs(cum[k - 2] - target) <= abs(cum[k - 1] - target):
        k -= 1
    mask = np.zeros(len(key), dtype=bool)
    mask[order[:k]] = True
    return mask


def _reference_mask(score: np.ndarray, w: np.ndarray, h: np.ndarray, cfg: SelectConfig):
    seed = cfg.seed or 0
    if cfg.policy == "threshold":
        return score >= cfg.threshold if cfg.mode == "top" else score <= cfg.threshold
    if cfg.policy in ("gumbel", "gumbel_official"):
        noise = -np.log(-np.log(uniform_from_hash(mix64(h, seed))))
        if cfg.policy == "gumbel_official":  # MATES' code: the k smallest of score/tau + noise
            noise = -noise
        key = (1.0 if cfg.mode == "top" else -1.0) * score / cfg.tau + noise
        return _reference_cut(key, h, w, cfg.keep)
    tb = mix64(h, seed)
    if cfg.mode == "middle":
        order = np.lexsort((tb.astype(np.float64), score))
        cum = np.cumsum(w[order], dtype=np.float64)
        pct = np.empty(len(score))
        pct[order] = (cum - w[order] / 2.0) / max(cum[-1], 1e-300)
        key = -np.abs(pct - 0.5)
    else:
        key = score if cfg.mode == "top" else -score
    return _reference_cut(key, tb, w, cfg.keep)


@pytest.mark.parametrize(
    "settings",
    [
        {"column": "alpha_frac", "keep": 0.3, "by": "chars"},
        {"column": "dup_line_frac", "keep": 0.3, "by": "docs", "seed": 3},  # mostly exact ties
        {"column": "dup_line_frac", "keep": 0.5, "by": "tokens", "mode": "bottom"},
        {"column": "unique_word_frac", "keep": 0.4, "by": "chars", "mode": "middle", "seed": 1},
        {"column": "alpha_frac", "keep": 0.2, "policy": "gumbel", "tau": 0.1, "by": "tokens"},
        {"column": "n_chars", "keep": 0.3, "policy": "gumbel", "tau": 2.0, "mode": "bottom"},
        {
            "column": "n_chars",
            "keep": 0.3,
            "policy": "gumbel_official",
            "tau": 900.0,
            "mode": "bottom",
            "seed": 2,
        },
        {"column": "n_chars", "policy": "threshold", "threshold": 1500, "mode": "bottom"},
        {"column": "alpha_frac", "keep": 0.25, "by": "chars", "group_by": None},
    ],
)
def test_select_keeps_what_a_plain_reference_keeps(
    tmp_path: Path, scored: tuple[Corpus, Path], settings: dict
) -> None:
    corpus, scores = scored
    cfg = SelectConfig(**settings)
    result = select(corpus, scores, tmp_path / "sel", cfg)
    docs = pl.concat(list(corpus.iter_batches())).join(
        pl.concat([pl.read_parquet(p) for p in scores.glob("*.parquet")]), on="id"
    )
    text = docs.get_column("text")
    w = {
        "docs": np.ones(docs.height),
        "chars": text.str.len_chars().to_numpy().astype(np.float64),
        "tokens": count_tokens(text, None),
    }[cfg.by]
    score = docs.get_column(cfg.column).cast(pl.Float64).to_numpy()
    mask = _reference_mask(score, w, stable_hash64(docs.get_column("id").to_list()), cfg)
    ids = docs.get_column("id")
    out = [b for p in (tmp_path / "sel").glob("[!._]*.jsonl.gz") for b in Corpus(p).iter_batches()]
    assert sorted(pl.concat(out).get_column("id")) == sorted(ids.filter(mask))
    assert (result.kept_docs, result.kept_weight) == (int(mask.sum()), float(w[mask].sum()))
    group = docs.get_column("domain") if cfg.group_by else pl.Series(["(all)"] * docs.height)
    for g, counts in result.groups.items():
        in_g = (group == g).to_numpy()
        assert counts == {
            "docs": int(in_g.sum()),
            "kept_docs": int((in_g & mask).sum()),
            "weight": float(w[in_g].sum()),
            "kept_weight": float(w[in_g & mask].sum()),
        }


@pytest.mark.parametrize(
    ("settings", "limit"),
    [
        ({"keep": 0.3, "by": "chars"}, 48),
        ({"keep": 0.3, "policy": "gumbel", "tau": 0.5, "seed": 2}, 48),
        ({"keep": 0.4, "mode": "middle", "seed": 1}, 56),
    ],
)
def test_the_decision_holds_a_few_dozen_bytes_per_document(
    tmp_path: Path, settings: dict, limit: int
) -> None:
    files = write_select_keys(tmp_path, 60_000, 3, ["a", "b"])
    cfg = SelectConfig(column="q", **settings)
    tracemalloc.start()
    try:
        mask = _decide(files, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / len(mask) <= limit  # numpy's allocations; the bound is 64
    keys = pl.concat([pl.read_parquet(f) for f in files])
    score, w, h = (keys.get_column(c).to_numpy() for c in ("score", "weight", "hash"))
    assert np.array_equal(mask, _reference_mask(score, w, h, cfg))


def test_keys_of_an_older_layout_are_made_again(
    tmp_path: Path, scored: tuple[Corpus, Path]
) -> None:
    corpus, scores = scored
    first = select(corpus, scores, tmp_path / "s", column="alpha_frac", keep=0.3)
    kept = sorted(_kept(tmp_path / "s").get_column("id"))
    keys = tmp_path / "s" / "_select" / "keys"
    for f in keys.glob("*.parquet"):  # what an earlier version wrote: no row, no layout
        pl.read_parquet(f).drop("row").write_parquet(f)
        stats = keys / "_stats" / f"{f.stem}.jsonl.gz.json"
        saved = json.loads(stats.read_text())
        del saved["source"]["task"]["columns"]
        stats.write_text(json.dumps(saved))
    again = select(corpus, scores, tmp_path / "s", column="alpha_frac", keep=0.3)
    assert again.to_dict() == first.to_dict()
    assert sorted(_kept(tmp_path / "s").get_column("id")) == kept
    assert all("row" in pl.read_parquet(f).columns for f in keys.glob("*.parquet"))
