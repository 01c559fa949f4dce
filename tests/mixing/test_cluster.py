"""Clustering an unlabeled corpus into domains (CLIMB stage A) on real text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.common.text import top_terms
from assay.io.corpus import Corpus
from assay.mixing.cluster import (
    PRUNED,
    ClusterSettings,
    assign_domains,
    cluster_corpus,
    fold_small_domains,
    merge_centroids,
)
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.score import score_corpus


def _side(out: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted((out / "domains").glob("*.parquet"))])


@pytest.fixture(scope="module")
def clustered(demo_dir: Path, static_model: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("clusters")
    embedder = {"model": str(static_model), "cache": False}
    result = cluster_corpus(Corpus(demo_dir / "train"), out, embedder=embedder, k_init=12, n_domains=6, seed=0)  # fmt: skip
    return result, out, embedder


def test_domains_follow_the_real_sources(clustered, demo_records: list[dict]) -> None:
    result, out, _ = clustered
    side = _side(out)
    assert side.height == len(demo_records) and side.get_column("id").n_unique() == side.height
    assert set(result.domains) == set(side.get_column("domain").unique())
    assert len(result.domains) == 6
    truth = pl.DataFrame({"id": [r["id"] for r in demo_records], "src": [r["domain"] for r in demo_records]})  # fmt: skip
    joined = side.join(truth, on="id")
    # purity: most documents share their cluster with documents of their own source domain
    majority = joined.group_by("domain", "src").len().group_by("domain").agg(pl.col("len").max())
    assert majority.get_column("len").sum() / joined.height > 0.8  # measured 0.87
    news = joined.filter(pl.col("src") == "news").get_column("domain").unique()
    assert news.len() == 1  # BBC news is one domain of its own
    for info in result.domains.values():
        assert info["docs"] > 0 and info["tokens_estimate"] > 0 and len(info["top_terms"]) > 0
    relabelled = pl.concat(list(Corpus(out / "corpus").iter_batches()), how="diagonal_relaxed")
    assert {"domain", "source_domain"} <= set(relabelled.columns)
    assert relabelled.join(side, on="id").filter(pl.col("domain") != pl.col("domain_right")).height == 0  # fmt: skip


def test_the_clustered_corpus_is_a_view_not_a_copy(clustered, demo_dir: Path) -> None:
    result, out, _ = clustered
    assert result.corpus == str(out / "corpus")
    written = [f for f in (out / "corpus").rglob("*") if f.is_file()]
    assert {f.name for f in written} == {"_view.json", "_assay.json"}  # no shard copied
    assert sum(f.stat().st_size for f in written) < 20_000
    source = pl.concat(list(Corpus(demo_dir / "train").iter_batches()))
    viewed = pl.concat(list(Corpus(result.corpus).iter_batches()))
    assert viewed.select("id", "text").equals(source.select("id", "text"))  # same order
    assert viewed.get_column("domain").equals(_side(out).get_column("domain"))
    # the view is an input of whatever reads it: nothing may be written into its sources
    with pytest.raises(ValueError, match="lies inside the input"):
        score_corpus(DocStatsScorer(), Corpus(result.corpus), demo_dir / "train" / "scores")


def test_clustering_again_with_other_settings_relabels(
    clustered, demo_dir: Path, tmp_path: Path
) -> None:
    _, out, embedder = clustered
    corpus = Corpus(demo_dir / "train")
    cluster_corpus(corpus, tmp_path, embedder=embedder, k_init=12, n_domains=6, seed=0)
    assert _side(tmp_path).equals(_side(out))
    # the labels record the clustering they came from: new centroids relabel every shard
    result = cluster_corpus(corpus, tmp_path, embedder=embedder, k_init=12, n_domains=3, seed=0)
    assert len(result.domains) == 3 and _side(tmp_path).get_column("domain").n_unique() == 3
    viewed = pl.concat(list(Corpus(result.corpus).iter_batches()))
    assert viewed.get_column("domain").n_unique() == 3


def test_same_seed_same_domains(clustered, demo_dir: Path, tmp_path: Path) -> None:
    _, out, embedder = clustered
    # the same settings as a ClusterSettings, with a keyword over them
    settings = ClusterSettings(embedder=embedder, k_init=12, n_domains=6, seed=5)
    cluster_corpus(Corpus(demo_dir / "train"), tmp_path, settings, seed=0)
    assert _side(tmp_path).equals(_side(out))
    with pytest.raises(ValueError, match="k_inti"):
        cluster_corpus(Corpus(demo_dir / "train"), tmp_path / "x", settings, k_inti=3)


def test_assigning_new_shards_reuses_the_clustering(
    clustered, demo_dir: Path, tmp_path: Path
) -> None:
    _, out, _ = clustered
    # the training shards, assigned again from the saved centroids, land where they did
    assign_domains(Corpus(demo_dir / "train"), out, tmp_path / "again")
    assert _side(tmp_path / "again").equals(_side(out))
    held = assign_domains(Corpus(demo_dir / "heldout"), out, tmp_path / "heldout")
    labels = pl.concat(list(Corpus(held).iter_batches()), how="diagonal_relaxed")
    assert set(labels.get_column("domain")) <= set(_side(out).get_column("domain"))
    # held-out news lands in the news cluster, like the training news
    news = labels.filter(pl.col("source_domain") == "news").get_column("domain")
    assert news.n_unique() == 1
    with pytest.raises(FileNotFoundError, match="holds no clustering"):
        assign_domains(Corpus(demo_dir / "heldout"), tmp_path, tmp_path / "x")


def test_pruning_by_a_quality_score(clustered, demo_dir: Path, tmp_path: Path) -> None:
    _, _, embedder = clustered
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(), corpus, tmp_path / "stats")
    result = cluster_corpus(
        corpus, tmp_path / "c", embedder=embedder, k_init=12, merge_distance=0.0, seed=0,
        prune={"scores": tmp_path / "stats", "column": "alpha_frac", "below": 0.6},
    )  # fmt: skip
    side = _side(tmp_path / "c")
    assert result.pruned and PRUNED in set(side.get_column("domain"))
    assert len(result.domains) == 12 - len(result.pruned) + 1  # no merging; plus "pruned"
    with pytest.raises(ValueError, match="every cluster's mean"):
        cluster_corpus(
            corpus, tmp_path / "d", embedder=embedder, k_init=4, seed=0,
            prune={"scores": tmp_path / "stats", "column": "alpha_frac", "below": 2.0},
        )  # fmt: skip


def test_merging_and_terms() -> None:
    c = np.array([[0, 0], [0.1, 0], [5, 5], [5.1, 5], [10, 0]], dtype=np.float32)
    assert merge_centroids(c, distance=0.5).tolist() == [0, 0, 1, 1, 2]
    assert len(set(merge_centroids(c, n_domains=2).tolist())) == 2
    assert merge_centroids(c).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="more than"):
        merge_centroids(c, n_domains=9)
    texts = ["the cat sat on the mat", "a cat and a kitten", "stocks fell on the market", "market prices"]  # fmt: skip
    terms = top_terms(texts, np.array([0, 0, 1, 1]), n=2)
    assert "cat" in terms[0] and "market" in terms[1]


def test_small_clusters_join_a_neighbour(clustered, demo_dir: Path, tmp_path: Path) -> None:
    _, _, embedder = clustered
    corpus = Corpus(demo_dir / "train")  # 360 documents, all in the sample
    result = cluster_corpus(corpus, tmp_path / "c", embedder=embedder, k_init=24, min_cluster_share=0.04, seed=0)  # fmt: skip
    report = json.loads((tmp_path / "c" / "_clusters.json").read_text())
    assert report["absorbed_clusters"]  # 24 clusters of 360 documents: some are tiny
    assert len(result.domains) == 24 - len(report["absorbed_clusters"])
    assert min(d["docs"] for d in result.domains.values()) >= 0.04 * 360
    with pytest.raises(ValueError, match="every cluster holds less than"):
        cluster_corpus(corpus, tmp_path / "d", embedder=embedder, k_init=4, min_cluster_share=0.9, seed=0)  # fmt: skip


def test_no_domain_is_under_the_default_floor(clustered, demo_dir: Path, tmp_path: Path) -> None:
    _, _, embedder = clustered
    corpus = Corpus(demo_dir / "train")  # 360 documents, all in the sample
    kw = dict(embedder=embedder, k_init=60, seed=0)
    # without the floor, 60 clusters of 360 documents leave domains of a document or two
    bare = cluster_corpus(corpus, tmp_path / "bare", min_domain_share=0, **kw)
    assert min(d["docs"] for d in bare.domains.values()) < 0.01 * 360
    result = cluster_corpus(corpus, tmp_path / "c", **kw)  # the default: 1%
    report = json.loads((tmp_path / "c" / "_clusters.json").read_text())
    assert report["folded_clusters"] and len(result.domains) < len(bare.domains)
    assert min(d["docs"] for d in result.domains.values()) >= 0.01 * 360
    side = _side(tmp_path / "c")  # every document keeps a domain, numbered without gaps
    assert side.height == 360 and side.get_column("domain").null_count() == 0
    assert sorted(result.domains) == [f"cluster_{i:02d}" for i in range(len(result.domains))]
    assert sum(d["docs"] for d in result.domains.values()) == 360
    # a higher floor, through the settings model
    settings = ClusterSettings(min_domain_share=0.05, **kw)
    higher = cluster_corpus(corpus, tmp_path / "h", settings)
    assert min(d["docs"] for d in higher.domains.values()) >= 0.05 * 360
    with pytest.raises(ValueError, match="min_domain_share"):
        ClusterSettings(min_domain_share=1.0)
    with pytest.raises(ValueError, match="min_domain_share"):
        ClusterSettings(min_domain_share=-0.1)


def test_folding_small_domains_into_the_nearest() -> None:
    c = np.array([[0, 0], [1, 0], [10, 0], [11, 0], [10.4, 0]], dtype=np.float64)
    labels = np.array([0] * 40 + [1] * 40 + [2] * 30 + [3] * 2 + [4] * 1)
    names = ["cluster_00", "cluster_01", "cluster_02", "cluster_03", PRUNED]
    folded, moved = fold_small_domains(names, c, labels, 0.05)  # floor: 5.65 documents
    assert folded == ["cluster_00", "cluster_01", "cluster_02", "cluster_02", PRUNED]
    assert moved == [3]  # the pruned cluster stays pruned, and no one joins it
    # a floor nobody meets leaves one domain; 0 changes nothing
    assert set(fold_small_domains(names, c, labels, 0.9)[0]) == {"cluster_00", PRUNED}
    assert fold_small_domains(names, c, labels, 0.0) == (names, [])
