"""MASS: skills, merging, the skill graph, the quadratic score, persistence and real-text sanity."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from assay.common.embed import Embedder
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import load_scorer
from assay.selection.mass import (
    MassScorer,
    MassSettings,
    RawSkills,
    build_skill_graph,
    champ_skill_tags,
    fit_mass,
    graph_scores,
    incidence_from_lists,
    keyphrase_skills,
    load_reference,
    merge_skills,
    normalize_tags,
    phrase_candidates,
    skill_similarities,
    split_sentences,
)
from assay.selection.score import score_corpus


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _raw(lists: list[list[str]], vecs: dict[str, np.ndarray] | None = None) -> RawSkills:
    """Raw skills from per-example lists; embeddings orthogonal unless given (no merging)."""
    names, incidence = incidence_from_lists(lists)
    if vecs is None:
        emb = np.eye(len(names), dtype=np.float32)
    else:
        emb = _unit(np.stack([vecs[n] for n in names]))
    return RawSkills(names, incidence, emb)


# -- the graph --------------------------------------------------------------------------------


def test_node_weights_and_edges_follow_frequency_and_cooccurrence() -> None:
    lists = [["a", "b"], ["a", "b", "c"], ["a", "c"], ["a"], ["d", "b"]]
    g = build_skill_graph(_raw(lists), min_cooccurrence=1)
    assert g.names == ["a", "b", "c", "d"]  # by frequency, then name
    np.testing.assert_array_equal(g.frequency, [4, 3, 2, 1])
    np.testing.assert_allclose(g.weights, np.array([4, 3, 2, 1]) / 10)
    assert g.weights.sum() == pytest.approx(1.0)
    e = g.edges.toarray()
    np.testing.assert_array_equal(e, e.T)
    assert np.diag(e).sum() == 0 and e.sum() == pytest.approx(1.0)
    # pairs: ab 2, ac 2, bc 1, bd 1 -> e_kl = c_kl / 6, split over (k, l) and (l, k)
    counts = g.cooccurrence.toarray()
    assert counts[0, 1] == 2 and counts[0, 2] == 2 and counts[1, 2] == 1 and counts[1, 3] == 1
    assert e[0, 1] + e[1, 0] == pytest.approx(2 / 6) and e[1, 3] * 2 == pytest.approx(1 / 6)
    assert g.n_edges == 4

    kept = build_skill_graph(_raw(lists), min_cooccurrence=2)
    assert kept.n_edges == 2  # only a-b and a-c co-occur twice
    assert kept.edges.sum() == pytest.approx(1.0) and kept.edges[0, 1] == pytest.approx(0.25)
    # same node weights whatever the edge threshold
    np.testing.assert_array_equal(kept.weights, g.weights)
    none = build_skill_graph(_raw(lists), min_cooccurrence=9)
    assert none.n_edges == 0 and none.edges.sum() == 0


def test_near_duplicates_merge_and_the_result_ignores_order() -> None:
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(3, 16)))
    vecs = {
        "quadratic equation": base[0],
        "quadratic equations": base[0] + 0.05 * base[1],  # cosine ~0.999: a duplicate
        "prime numbers": base[1],
        "geometry": base[2],
    }
    lists = [
        ["quadratic equation", "prime numbers"],
        ["quadratic equations"],
        ["quadratic equations", "geometry"],
        ["quadratic equations"],
    ]
    g = build_skill_graph(_raw(lists, vecs), merge_threshold=0.9)
    assert g.names == ["quadratic equations", "geometry", "prime numbers"]  # most frequent name
    assert g.members[0] == ["quadratic equations", "quadratic equation"]
    np.testing.assert_array_equal(g.frequency, [4, 1, 1])  # an example counts a skill once
    # merged embedding: frequency-weighted mean of the members, renormalised
    expect = _unit(3 * _unit(vecs["quadratic equations"][None]) + vecs["quadratic equation"])
    np.testing.assert_allclose(g.embeddings[0], expect[0], atol=1e-6)

    # single linkage: a~b and b~c merge a, b and c even if a and c are apart; any order
    names = ["a", "b", "c", "d"]
    theta = np.radians([0.0, 20.0, 40.0, 120.0])
    emb = _unit(np.stack([np.cos(theta), np.sin(theta)], axis=1))  # cos(20deg) = 0.94 > 0.9
    freq = np.array([1, 5, 2, 7])
    labels, merged = merge_skills(names, emb, freq, 0.9)
    assert merged == ["b", "d"] and list(labels) == [0, 0, 0, 1]
    for perm in ([3, 2, 1, 0], [2, 0, 3, 1]):
        lab2, merged2 = merge_skills([names[i] for i in perm], emb[perm], freq[perm], 0.9)
        assert merged2 == merged
        assert {names[p]: merged2[lab2[j]] for j, p in enumerate(perm)} == {
            n: merged[labels[i]] for i, n in enumerate(names)
        }
    # distinct skills stay apart; a threshold of 1 merges nothing
    assert merge_skills(names, emb, freq, 0.99)[1] == names


# -- scoring ----------------------------------------------------------------------------------


def _dense_topk(sims: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(sims)
    idx = np.argsort(-sims, axis=1)[:, :k]
    np.put_along_axis(out, idx, np.take_along_axis(sims, idx, axis=1), axis=1)
    return np.maximum(out, 0)


def test_quadratic_form_matches_a_dense_reference() -> None:
    rng = np.random.default_rng(3)
    docs, skills = _unit(rng.normal(size=(40, 12))), _unit(rng.normal(size=(25, 12)))
    lists = [
        list(rng.choice([f"s{i:02d}" for i in range(25)], 4, replace=False)) for _ in range(60)
    ]
    g = build_skill_graph(_raw(lists), min_cooccurrence=2)
    assert g.n_edges > 0
    sims = skill_similarities(docs, skills, top_k=5)
    s = _dense_topk(docs @ skills.T, 5)
    np.testing.assert_allclose(sims.toarray(), s, atol=1e-6)
    a = np.diag(g.weights) + 0.5 * g.edges.toarray()
    q = graph_scores(sims, g.weights, g.edges, edge_weight=0.5)
    np.testing.assert_allclose(q, np.einsum("nk,kl,nl->n", s, a, s), rtol=1e-6)
    np.testing.assert_allclose(
        q,
        graph_scores(sims, g.weights, g.adjacency(0.5) - sp.diags(g.weights), edge_weight=1.0),
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        graph_scores(sims, g.weights, g.edges, aggregation="linear"), s @ g.weights, rtol=1e-6
    )
    with pytest.raises(ValueError, match="aggregation"):
        graph_scores(sims, g.weights, g.edges, aggregation="pagerank")


def test_top_k_keeps_the_largest_positive_similarities() -> None:
    rng = np.random.default_rng(4)
    docs, skills = _unit(rng.normal(size=(30, 8))), _unit(rng.normal(size=(50, 8)))
    sims = skill_similarities(docs, skills, top_k=3)
    dense = docs @ skills.T
    assert (np.diff(sims.indptr) <= 3).all() and sims.data.min() > 0
    for i in range(len(docs)):
        row = sims[i].toarray().ravel()
        kept = np.flatnonzero(row)
        best3 = np.argsort(-dense[i])[:3]
        assert set(kept) == {j for j in best3 if dense[i, j] > 0}
    full = skill_similarities(docs, skills, top_k=None)
    np.testing.assert_allclose(full.toarray(), np.maximum(dense, 0), atol=1e-6)
    # more skills asked than exist: all of them
    assert skill_similarities(docs, skills[:2], top_k=10).shape == (30, 2)


def test_quadratic_rewards_skill_pairs_that_cooccur_linear_does_not() -> None:
    # a-b co-occur, c-d never do; all four equally frequent
    g = build_skill_graph(_raw([["a", "b"], ["a", "b"], ["c"], ["c"], ["d"], ["d"]]))
    assert g.names == ["a", "b", "c", "d"]
    both_pair = sp.csr_matrix(np.array([[0.6, 0.6, 0, 0]]))
    two_loose = sp.csr_matrix(np.array([[0, 0, 0.6, 0.6]]))
    lin = [
        graph_scores(x, g.weights, g.edges, aggregation="linear")[0] for x in (both_pair, two_loose)
    ]
    quad = [graph_scores(x, g.weights, g.edges)[0] for x in (both_pair, two_loose)]
    assert lin[0] == pytest.approx(lin[1])
    assert quad[0] > quad[1] > 0


# -- skills from text -------------------------------------------------------------------------


def test_keyphrases_are_noun_like_and_shared() -> None:
    found = phrase_candidates("Let x be the sum of squares of positive integers. Find x mod 7.")
    assert {"sum of squares", "positive integers", "integers", "squares"} <= set(found)
    assert not {"let", "positive", "find", "sum of squares of"} & set(found)
    texts = [
        "Find the sum of squares of the first ten positive integers.",
        "The sum of squares of two primes is a prime number. Find the prime number.",
        "How many positive integers below 100 are a perfect square?",
        "Is every perfect square a sum of squares of two integers?",
        "The weather stayed sunny in London.",
    ]
    skills = keyphrase_skills(texts, max_skills=2, max_df=0.9)
    assert all(len(s) <= 2 for s in skills)
    assert "sum of squares" in skills[0] and "perfect square" in skills[2]
    assert skills[4] == []  # nothing it shares with another example
    sents, owner = split_sentences(
        ["One sentence here, long enough. And a second one, long too!\nx", "short"]
    )
    assert sents == ["One sentence here, long enough.", "And a second one, long too!", "short"]
    assert owner.tolist() == [0, 0, 1]


def test_champ_concepts_are_real_skill_tags() -> None:
    tags = champ_skill_tags()
    assert len(tags) == 270 and all(tags.values())  # every problem has its category at least
    flat = {t for v in tags.values() for t in v}
    assert "Vieta's formula for quadratic equation" in flat and "number theory" in flat
    bare = champ_skill_tags(parents=False, category=False)
    assert sum(not v for v in bare.values()) > 0 and len(
        {t for v in bare.values() for t in v}
    ) < len(flat)
    texts, found = load_reference("assay_champ")
    assert len(texts) == len(found) == 270 and found[0] == tags["P_Combinatorics_1"]
    assert load_reference("assay_champ", want_tags=False)[1] is None


# -- the scorer on real text (static embedder) ------------------------------------------------


@pytest.fixture(scope="module")
def embedder_cfg(static_model: Path) -> dict:
    return {"model": str(static_model), "cache": False}


@pytest.fixture(scope="module")
def champ_mass(embedder_cfg: dict) -> MassScorer:
    return fit_mass("assay_champ", embedder=embedder_cfg)


@pytest.fixture(scope="module")
def demo_frame(demo_dir: Path) -> pl.DataFrame:
    return pl.concat(list(Corpus(demo_dir / "train").iter_batches()), how="diagonal_relaxed")


def test_champ_skill_graph_scores_math_above_news(champ_mass: MassScorer, demo_frame) -> None:
    r = champ_mass.report
    assert r["skills_source"] == "tags" and r["reference_examples"] == 270
    assert r["examples_with_skills"] == 270 and r["raw_skills"] == 93
    assert 30 < r["merged_skills"] <= 93 and r["edges"] > 50
    assert r["top_skills"][0]["name"] == "number theory"
    assert champ_mass.skill_table()[0]["degree"] > 0
    texts = demo_frame.get_column("text").to_list()
    domain = np.array(demo_frame.get_column("domain").to_list())
    s = champ_mass.score(texts)
    assert s.dtype == np.float32 and s.shape == (len(texts),) and np.isfinite(s).all()
    assert champ_mass.score([]).shape == (0,) and champ_mass.score([""]).tolist() == [0.0]
    math, news = s[domain == "math"], s[domain == "news"]
    assert np.median(math) > np.median(news)
    auc = (math[:, None] > news[None, :]).mean()
    assert auc > 0.85


def test_save_load_round_trip_and_scoring_a_corpus(
    champ_mass: MassScorer, demo_dir: Path, demo_frame, tmp_path: Path
) -> None:
    texts = demo_frame.get_column("text").to_list()[:80]
    # unsaved, it pickles whole (numpy state + embedder settings) for pool workers
    assert champ_mass.path is None and champ_mass.portable
    copy = pickle.loads(pickle.dumps(champ_mass))
    np.testing.assert_array_equal(copy.score(texts), champ_mass.score(texts))
    champ_mass.save(tmp_path / "mass")
    with np.load(tmp_path / "mass" / "mass_graph.npz", allow_pickle=False) as z:
        assert z["embeddings"].shape[0] == len(champ_mass.graph.names)
    again = load_scorer(tmp_path / "mass")
    assert isinstance(again, MassScorer) and again.get_config() == champ_mass.get_config()
    np.testing.assert_array_equal(again.score(texts), champ_mass.score(texts))
    assert (again.graph.edges != champ_mass.graph.edges).nnz == 0
    assert again.report["merged_skills"] == champ_mass.report["merged_skills"]
    result = score_corpus(
        again, Corpus(demo_dir / "train"), tmp_path / "s", runner=LocalRunner(2, progress=False)
    )
    assert result.docs_out == demo_frame.height
    scores = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "s").glob("*.parquet"))])
    joined = demo_frame.select("id", "text").join(scores, on="id")
    # Other batches (and another process' thread count) change the matrix products' rounding:
    # the scores agree to float32 precision, not bit for bit. Bit-identical are a scorer and its
    # saved-and-loaded or pickled copy on the same batch (above), and the selections made from
    # these scores (tests/selection/test_select.py).
    np.testing.assert_allclose(
        joined.get_column("mass").to_numpy(),
        champ_mass.score(joined.get_column("text").to_list()),
        rtol=1e-5,
        atol=1e-6,
    )


def test_same_seed_same_skills_and_scores(embedder_cfg: dict, demo_frame) -> None:
    texts = demo_frame.get_column("text").to_list()[:60]
    for skills in ("cluster", "keyphrase"):
        a = fit_mass("assay_champ", skills=skills, embedder=embedder_cfg, seed=1)
        b = fit_mass("assay_champ", skills=skills, embedder=embedder_cfg, seed=1)
        assert a.graph.names == b.graph.names and a.graph.members == b.graph.members
        assert a.report["skills_source"] == skills and a.report["merged_skills"] >= 2
        np.testing.assert_array_equal(a.score(texts), b.score(texts))
    # keyphrase skills: a plural merges into its singular's skill
    assert any("integer" in m and "integers" in m for m in a.graph.members)


def test_fit_mass_takes_settings_or_keywords(
    champ_mass: MassScorer, embedder_cfg: dict, demo_frame
) -> None:
    default, scorer = MassSettings(), MassScorer()
    for name in ("column", "skills", "merge_threshold", "min_cooccurrence", "top_k", "aggregation"):
        assert getattr(scorer, name) == getattr(default, name)  # declared once, in the settings
    texts = demo_frame.get_column("text").to_list()[:40]
    # the settings, and keywords over settings, give the scorer the keywords alone give
    a = fit_mass("assay_champ", MassSettings(embedder=embedder_cfg))
    b = fit_mass(
        "assay_champ", MassSettings(top_k=3, seed=5), top_k=10, seed=None, embedder=embedder_cfg
    )
    for other in (a, b):
        assert other.get_config() == champ_mass.get_config()
        assert other.graph.names == champ_mass.graph.names
        np.testing.assert_array_equal(other.score(texts), champ_mass.score(texts))
    assert fit_mass("assay_champ", embedder=embedder_cfg, top_k=3).get_config()["top_k"] == 3
    with pytest.raises(ValueError, match="topk"):
        fit_mass("assay_champ", topk=3)  # an unknown option, before any work
    with pytest.raises(ValueError, match="merge_threshold"):
        MassSettings(merge_threshold=0)


def test_tags_from_a_file_and_from_lists(tmp_path: Path, embedder_cfg: dict) -> None:
    rows = [
        {
            "question": "Solve x^2 - 5x + 6 = 0.",
            "answer": "x = 2 or 3",
            "skills": ["quadratic equations", "factoring"],
        },
        {
            "question": "Factor 91 into primes.",
            "answer": "7 * 13",
            "skills": ["prime factorization", "factoring"],
        },
        {"question": "", "answer": "", "skills": ["dropped with its empty text"]},
        {"question": "How many primes are below 20?", "answer": "8", "skills": "prime numbers"},
    ]
    path = tmp_path / "ref.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    scorer = fit_mass(path, tags_field="skills", embedder=embedder_cfg, merge_threshold=0.99)
    assert scorer.report["reference_examples"] == 3
    assert scorer.graph.names[0] == "factoring" and scorer.graph.n_edges == 2
    assert "dropped with its empty text" not in scorer.graph.names
    with pytest.raises(ValueError, match="tags_field"):
        fit_mass(path, skills="tags", embedder=embedder_cfg)
    direct = MassScorer(embedder=embedder_cfg, merge_threshold=0.99).fit(
        ["a b", "c d", "e f"], [["factoring"], ["factoring", "prime numbers"], None]
    )
    assert direct.report["skills_source"] == "tags" and direct.graph.names[0] == "factoring"


def test_bad_input_is_a_clear_error(embedder_cfg: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = MassScorer(embedder=embedder_cfg)
    with pytest.raises(RuntimeError, match="not fitted"):
        scorer.score(["x"])
    with pytest.raises(ValueError, match="reference set: it is empty"):
        scorer.fit([])
    with pytest.raises(ValueError, match="reference set is empty"):
        load_reference(["", "  "])
    with pytest.raises(ValueError, match="2 tag lists for 3 reference examples"):
        scorer.fit(["one", "two", "three"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="every example's tag list is empty"):
        scorer.fit(["one text", "two texts"], [[], ["  "]])
    with pytest.raises(ValueError, match="no keyphrase is shared"):
        scorer.fit(["1 + 1 = 2", "3 * 4 = 12", "x^2 = 9"])
    with pytest.raises(ValueError, match="skills='tags' needs tags"):
        MassScorer(skills="tags").fit(["text"])
    with pytest.raises(ValueError, match="single string"):
        normalize_tags("algebra")
    with pytest.raises(ValueError, match="skills must be one of"):
        MassScorer(skills="llm")
    with pytest.raises(ValueError, match="top_k"):
        MassScorer(top_k=0)
    with pytest.raises(ValueError, match="non-finite"):
        skill_similarities(np.full((2, 4), np.nan, np.float32), np.eye(4, dtype=np.float32))

    def nan_embed(self, texts, progress=False):  # a broken model
        return np.full((len(texts), 8), np.nan, dtype=np.float32)

    monkeypatch.setattr(Embedder, "embed", nan_embed)
    with pytest.raises(ValueError, match=r"non-finite values .* skill-name embeddings"):
        MassScorer(embedder=embedder_cfg).fit(["a", "b"], [["algebra"], ["geometry"]])
