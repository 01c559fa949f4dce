"""`inspect_scores` and `assay inspect` / `assay list` on the demo corpus: doc_stats scores and
a selection made from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from assay.cli import app
from assay.errors import MissingError, StateError
from assay.io.corpus import Corpus
from assay.io.shards import FileShard
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.inspect import inspect_scores
from assay.selection.score import score_corpus
from assay.selection.select import select

cli = CliRunner()


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspect")
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(stat="alpha_frac"), corpus, root / "scores")
    select(corpus, root / "scores", root / "sel", column="alpha_frac", keep=0.3, by="chars")
    select(corpus, root / "scores", root / "all", column="n_chars", keep=0.5, group_by=None)
    select(
        corpus, root / "scores", root / "strat", column="unique_word_frac", keep=0.3, stratify=True
    )
    return {
        "scores": root / "scores",
        "sel": root / "sel",
        "all": root / "all",
        "strat": root / "strat",
    }


def _truth(demo_records: list[dict], scores: Path, column: str) -> pl.DataFrame:
    """Every document's id, domain, text and score, read the plain way."""
    docs = pl.DataFrame(demo_records).select("id", "domain", "text")
    frames = [pl.read_parquet(f, columns=["id", column]) for f in sorted(scores.glob("*.parquet"))]
    return docs.join(pl.concat(frames), on="id")


def test_selection_histogram_cutoff_and_kept_shares(scored: dict[str, Path]) -> None:
    result = inspect_scores(scored["sel"], bins=15, examples=2)
    summary = json.loads((scored["sel"] / "_selection.json").read_text())
    assert result["kind"] == "selection" and result["group_by"] == "domain"
    column = result["columns"]["alpha_frac"]
    assert list(result["columns"]) == ["alpha_frac"]
    assert sum(column["histogram"]["counts"]) == result["docs"] == summary["docs"] == 360
    assert len(column["histogram"]["edges"]) == 16
    assert column["cutoff"] == summary["score_cutoff"] and column["mode"] == "top"
    assert column["kept"]["kept_docs"] == summary["kept_docs"]
    assert column["kept"]["kept_weight_share"] == pytest.approx(summary["kept_fraction"])
    assert list(column["groups"]) == sorted(summary["groups"])
    for g, want in summary["groups"].items():
        got = column["groups"][g]
        assert got["docs"] == want["docs"] and got["kept_docs"] == want["kept_docs"]
        assert got["kept_share"] == pytest.approx(want["kept_docs"] / want["docs"])
        assert got["kept_weight_share"] == pytest.approx(want["kept_weight"] / want["weight"])


def test_examples_are_the_extremes_and_nearest_the_cutoff(
    scored: dict[str, Path], demo_records: list[dict]
) -> None:
    n, width = 3, 50
    result = inspect_scores(scored["sel"], examples=n, width=width)
    column = result["columns"]["alpha_frac"]
    cutoff = column["cutoff"]
    truth = _truth(demo_records, scored["sel"].parent / "scores", "alpha_frac")
    kept_ids = set(
        pl.concat(
            [pl.read_parquet(f) for f in (scored["sel"] / "_select" / "keep").glob("*.parquet")]
        )["id"]
    )
    for g, entry in column["groups"].items():
        mine = truth.filter(pl.col("domain") == g)
        values = sorted(float(v) for v in mine["alpha_frac"])
        assert [d["score"] for d in entry["top"]] == pytest.approx(values[::-1][:n])
        assert [d["score"] for d in entry["bottom"]] == pytest.approx(values[:n])
        nearest = sorted(values, key=lambda v: abs(v - cutoff))[:n]
        assert sorted(abs(d["score"] - cutoff) for d in entry["near_cutoff"]) == pytest.approx(
            sorted(abs(v - cutoff) for v in nearest)
        )
        by_id = {r["id"]: r for r in mine.iter_rows(named=True)}
        for d in entry["top"] + entry["bottom"] + entry["near_cutoff"]:
            record = by_id[d["id"]]  # the document is of this group, with this score and text
            assert d["score"] == pytest.approx(record["alpha_frac"])
            assert d["kept"] == (d["id"] in kept_ids)
            flat = " ".join(record["text"].split())
            assert len(d["text"]) <= width
            assert d["text"] == flat or d["text"] == flat[: width - 1] + "…"


def test_scores_folder_every_column_grouped_by_the_corpus_field(
    scored: dict[str, Path], demo_records: list[dict], demo_dir: Path
) -> None:
    meta = json.loads((scored["scores"] / "_scores.json").read_text())
    assert meta["corpus"] == {"paths": [str(demo_dir / "train")], "options": {}}
    result = inspect_scores(scored["scores"], examples=1)
    assert result["kind"] == "scores" and result["group_by"] == "domain"
    assert set(result["columns"]) == set(meta["columns"])
    for name, column in result["columns"].items():
        assert sum(column["histogram"]["counts"]) == column["count"] == 360
        assert column["cutoff"] is None and column["kept"] is None
        truth = _truth(demo_records, scored["scores"], name)
        for g, entry in column["groups"].items():
            values = truth.filter(pl.col("domain") == g)[name]
            assert entry["docs"] == len(values) == 90
            assert entry["top"][0]["score"] == pytest.approx(float(values.max()))
            assert entry["bottom"][0]["score"] == pytest.approx(float(values.min()))
            assert "near_cutoff" not in entry
    one = inspect_scores(scored["scores"], columns=["n_words"], group_by=None, bins=4)
    assert list(one["columns"]) == ["n_words"] and one["group_by"] is None
    assert list(one["columns"]["n_words"]["groups"]) == ["(all)"]


def test_examples_are_fetched_from_their_shards_only(
    scored: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A selection's numbers come from its keys: with no examples no document is read, and
    with examples only the shards that hold one are, once each."""
    read = FileShard.read
    calls: list[str] = []

    def counted(self, *args, **kwargs):
        calls.append(self.name)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(FileShard, "read", counted)
    none = inspect_scores(scored["all"], examples=0)
    assert calls == [] and none["group_by"] is None
    assert none["columns"]["n_chars"]["kept"]["kept_docs"] == 180
    result = inspect_scores(scored["all"], examples=1)
    shown = result["columns"]["n_chars"]["groups"]["(all)"]
    holding = {d["shard"] for kind in ("top", "bottom", "near_cutoff") for d in shown[kind]}
    assert sorted(calls) == sorted(holding) and len(holding) < 4


def test_corpus_not_recorded_or_not_the_selections(
    scored: dict[str, Path], demo_dir: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "scores"
    shutil.copytree(scored["scores"], bare)
    meta = json.loads((bare / "_scores.json").read_text())
    del meta["corpus"]
    (bare / "_scores.json").write_text(json.dumps(meta))
    with pytest.raises(MissingError, match="--corpus"):
        inspect_scores(bare)
    given = inspect_scores(bare, corpus=Corpus(demo_dir / "train"), columns=["n_chars"])
    assert given["docs"] == 360
    with pytest.raises(StateError, match="not the one"):
        inspect_scores(scored["sel"], corpus=Corpus(demo_dir / "heldout"))


def test_cli_inspect_text_and_json(scored: dict[str, Path]) -> None:
    result = cli.invoke(app, ["inspect", str(scored["sel"]), "--json", "--examples", "1"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed == json.loads(json.dumps(inspect_scores(scored["sel"], examples=1, width=100)))
    text = cli.invoke(app, ["inspect", str(scored["sel"]), "--bins", "8", "--width", "40"])
    assert text.exit_code == 0, text.output
    assert "cutoff" in text.output and "reference" in text.output and "kept %" in text.output
    scores = cli.invoke(app, ["inspect", str(scored["scores"]), "--column", "n_chars", "--json"])
    assert list(json.loads(scores.output)["columns"]) == ["n_chars"]


def test_cli_inspect_of_step_folders_and_a_given_corpus(tmp_path: Path, demo_dir: Path) -> None:
    train = str(demo_dir / "train")
    for args in (
        ["score", train, "--scorer", "doc_stats", "--out", str(tmp_path / "s")],
        [
            "select",
            train,
            "--scores",
            str(tmp_path / "s"),
            "--column",
            "n_words",
            "--keep",
            "0.2",
            "--out",
            str(tmp_path / "sel"),
        ],
    ):
        assert cli.invoke(app, args).exit_code == 0
    shown = cli.invoke(app, ["inspect", str(tmp_path / "sel"), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["columns"]["n_words"]["kept"]["kept_docs"] == 72
    wrong = cli.invoke(
        app, ["inspect", str(tmp_path / "sel"), "--corpus", str(demo_dir / "heldout")]
    )
    assert wrong.exit_code != 0 and "not the one" in str(wrong.exception)


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("scorers", {"doc_stats", "fasttext", "random"}),
        ("steps", {"score", "select", "cluster"}),
        ("tasks", {"assay_champ", "assay_mmlu_dev"}),
    ],
)
def test_cli_list(kind: str, names: set[str]) -> None:
    text = cli.invoke(app, ["list", kind])
    assert text.exit_code == 0, text.output
    assert all(n in text.output for n in names)
    listed = json.loads(cli.invoke(app, ["list", kind, "--json"]).output)
    assert names <= {e["name"] for e in listed}
    assert all(e["description"] and "\n" not in e["description"] for e in listed)
    if kind == "scorers":  # the older verb still lists the names, one a line
        assert set(cli.invoke(app, ["scorers"]).output.split()) == {e["name"] for e in listed}


def test_documents_without_a_score_are_counted_missing(
    scored: dict[str, Path], tmp_path: Path
) -> None:
    partial = tmp_path / "scores"
    shutil.copytree(scored["scores"], partial)
    table = next(iter(sorted(partial.glob("*.parquet"))))
    pl.read_parquet(table).slice(5).write_parquet(table)  # its first 5 documents lose their scores
    result = inspect_scores(partial, columns=["n_chars"], examples=1)
    column = result["columns"]["n_chars"]
    assert column["missing"] == 5 and column["count"] == sum(column["histogram"]["counts"]) == 355
    assert sum(g["docs"] for g in column["groups"].values()) == 360
    assert sum(g["count"] for g in column["groups"].values()) == 355


def test_stratified_selection_has_a_cutoff_per_group(
    scored: dict[str, Path], demo_records: list[dict]
) -> None:
    n = 2
    result = inspect_scores(scored["strat"], examples=n)
    summary = json.loads((scored["strat"] / "_selection.json").read_text())
    column = result["columns"]["unique_word_frac"]
    truth = _truth(demo_records, scored["scores"], "unique_word_frac")
    keep = pl.concat(
        [pl.read_parquet(f) for f in (scored["strat"] / "_select" / "keep").glob("*.parquet")]
    )
    kept = truth.filter(pl.col("id").is_in(keep["id"].implode()))
    cutoffs = []
    for g, entry in column["groups"].items():
        assert entry["kept_docs"] == summary["groups"][g]["kept_docs"] == 27  # 30% of 90
        lowest_kept = float(kept.filter(pl.col("domain") == g)["unique_word_frac"].min())
        assert entry["cutoff"] == pytest.approx(lowest_kept)
        cutoffs.append(entry["cutoff"])
        values = truth.filter(pl.col("domain") == g)["unique_word_frac"].to_list()
        nearest = sorted(abs(v - entry["cutoff"]) for v in values)[:n]
        got = sorted(abs(d["score"] - entry["cutoff"]) for d in entry["near_cutoff"])
        assert got == pytest.approx(nearest)
    assert column["cutoff"] == pytest.approx(summary["score_cutoff"]) == pytest.approx(min(cutoffs))


def test_a_remote_selection_and_its_remote_corpus(
    tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scores and a selection in a store (fsspec's memory store), of a corpus there too."""
    import fsspec

    monkeypatch.setenv("ASSAY_REMOTE_CACHE", str(tmp_path / "mirrors"))
    mem = fsspec.filesystem("memory")
    for f in sorted((demo_dir / "train").glob("*")):
        mem.pipe_file(f"/insp/train/{f.name}", f.read_bytes())
    try:
        corpus = Corpus("memory://insp/train")
        score_corpus(DocStatsScorer(), corpus, "memory://insp/stats")
        select(corpus, "memory://insp/stats", "memory://insp/sel", column="n_words", keep=0.5)
        result = inspect_scores("memory://insp/sel", examples=1)
        assert result["corpus"] == ["memory://insp/train"]
        column = result["columns"]["n_words"]
        assert column["kept"]["kept_docs"] == 180 and sum(column["histogram"]["counts"]) == 360
        assert all(len(e["top"]) == 1 for e in column["groups"].values())
    finally:
        mem.rm("/insp", recursive=True)


def test_dedup_folders_record_their_corpus(demo_dir: Path, tmp_path: Path) -> None:
    """`assay dedup` writes a scores folder that `inspect` opens without `--corpus`; a folder
    written before the corpus was recorded is resumed, not refused as other settings."""
    from assay.selection.dedup import dedup_corpus

    corpus = Corpus(demo_dir / "train")
    dedup_corpus(corpus, tmp_path / "dedup")
    meta_path = tmp_path / "dedup" / "_scores.json"
    meta = json.loads(meta_path.read_text())
    assert meta["corpus"] == {"paths": [str(demo_dir / "train")], "options": {}}
    result = inspect_scores(tmp_path / "dedup", columns=["dup_exact"], examples=1)
    assert result["columns"]["dup_exact"]["count"] == 360
    del meta["corpus"]
    meta_path.write_text(json.dumps(meta))
    dedup_corpus(corpus, tmp_path / "dedup")
    assert json.loads(meta_path.read_text())["corpus"]["paths"] == [str(demo_dir / "train")]
