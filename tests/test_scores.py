"""Side-car scores: one parquet per shard, joined back to documents by id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import write_jsonl

from assay.io.corpus import Corpus
from assay.io.scores import ScoreSet, describe_scores, join_scores, read_scores
from assay.selection.base import Scorer, register_scorer
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.score import score_corpus


@register_scorer("test_length")
class LengthScorer(Scorer):
    def score(self, texts):
        return np.array([len(t) for t in texts], dtype=np.float32)


def test_one_parquet_per_shard_with_id_and_score_columns(tmp_path: Path, demo_dir: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(), corpus, tmp_path / "stats")
    files = sorted(p.name for p in (tmp_path / "stats").glob("*.parquet"))
    assert files == sorted(f"{s.stem}.parquet" for s in corpus.shards)
    df = pl.read_parquet(tmp_path / "stats" / files[0])
    assert df.columns == ["id", *DocStatsScorer().columns]
    assert all(df.schema[c] == pl.Float32 for c in df.columns[1:])
    docs = pl.concat(
        list(Corpus(demo_dir / "train" / files[0].replace(".parquet", ".jsonl.gz")).iter_batches())
    )
    assert df.get_column("id").to_list() == docs.get_column("id").to_list()
    assert (
        df.get_column("n_chars").to_list()
        == docs.get_column("text").str.len_chars().cast(pl.Float32).to_list()
    )


def test_several_scorers_coexist_and_join_on_id(tmp_path: Path, demo_dir: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(), corpus, tmp_path / "a")
    score_corpus(LengthScorer(column="length"), corpus, tmp_path / "b")
    scores = ScoreSet([tmp_path / "a", tmp_path / "b"])
    assert scores.columns == [*DocStatsScorer().columns, "length"]
    shard = corpus.shards[1]
    table = scores.for_shard(shard)
    assert table.height == 90 and (table.get_column("length") == table.get_column("n_chars")).all()

    batch = next(iter(shard.read(corpus.options)))
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=1)
    joined = join_scores(batch, shuffled)
    assert joined.get_column("id").to_list() == batch.get_column("id").to_list()
    assert (
        joined.get_column("length").to_list()
        == batch.get_column("text").str.len_chars().cast(pl.Float32).to_list()
    )

    everything = read_scores([tmp_path / "a", tmp_path / "b"], corpus, ["length"])
    assert everything.columns == ["id", "length", "shard"] and everything.height == 360
    summary = describe_scores(tmp_path / "b", corpus)["length"]
    assert summary["count"] == 360 and summary["p1"] <= summary["p50"] <= summary["p99"]


def test_column_collisions_and_missing_scores_are_clear_errors(
    tmp_path: Path, demo_dir: Path
) -> None:
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(), corpus, tmp_path / "a")
    score_corpus(DocStatsScorer(), corpus, tmp_path / "b")
    with pytest.raises(ValueError, match=r"score column 'n_chars' is in both"):
        ScoreSet([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FileNotFoundError, match="not a scores folder"):
        ScoreSet(tmp_path / "nowhere")
    (tmp_path / "a" / f"{corpus.shards[0].stem}.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=f"no scores for shard '{corpus.shards[0].name}'"):
        ScoreSet(tmp_path / "a").for_shard(corpus.shards[0])
    with pytest.raises(ValueError, match="no score column 'nope'"):
        ScoreSet(tmp_path / "a").for_shard(corpus.shards[1], ["nope"])


def test_a_folder_keeps_one_scorer(tmp_path: Path, demo_dir: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(), corpus, tmp_path / "a")
    with pytest.raises(ValueError, match="already holds scores from another scorer"):
        score_corpus(LengthScorer(), corpus, tmp_path / "a")
    assert score_corpus(LengthScorer(), corpus, tmp_path / "a", overwrite=True).ran == 4


def test_duplicate_ids_and_nan_scores_are_refused(tmp_path: Path, real_texts: list[str]) -> None:
    path = write_jsonl(
        tmp_path / "in" / "d.jsonl",
        [{"id": "same", "text": real_texts[0]}, {"id": "same", "text": real_texts[1]}],
    )
    with pytest.raises(ValueError, match=r"duplicate id 'same' in shard d\.jsonl"):
        score_corpus(DocStatsScorer(), Corpus(path), tmp_path / "out")
    assert not (tmp_path / "out" / "d.parquet").exists()
    # generated ids are unique
    assert (
        score_corpus(DocStatsScorer(), Corpus(path, id_field=None), tmp_path / "out2").docs_out == 2
    )

    class NaNScorer(Scorer):
        kind = "nan"

        def score(self, texts):
            return np.full(len(texts), np.nan)

    with pytest.raises(ValueError, match="scorer returned NaN for document"):
        score_corpus(NaNScorer(), Corpus(path, id_field=None), tmp_path / "out3")


def test_scorer_output_shape_is_checked(tmp_path: Path, real_texts: list[str]) -> None:
    class Short(Scorer):
        kind = "short"

        def score(self, texts):
            return np.zeros(1)

    path = write_jsonl(tmp_path / "s.jsonl", [{"text": t} for t in real_texts[:3]])
    with pytest.raises(ValueError, match=r"returned shape \(1,\)"):
        score_corpus(Short(), Corpus(path), tmp_path / "o")
