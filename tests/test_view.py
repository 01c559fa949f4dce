"""Views: a corpus' own files read with a column from side-car tables (what clustering writes)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import polars as pl
import pytest
from conftest import read_all, write_jsonl

from assay.io.corpus import Corpus
from assay.io.view import VIEW_FILE, sidecar_file, write_view
from assay.recipe.steps._common import shard_paths
from assay.util.guard import UnsafeOutputError


def _label(corpus: Corpus, side: Path) -> pl.DataFrame:
    """A side-car per shard: each document's label from its id (in the shard's row order)."""
    frames = []
    for shard in corpus.shards:
        ids = pl.concat([b.select("id") for b in shard.read(corpus.options)])
        frame = ids.with_columns(domain=pl.format("d{}", pl.col("id").hash(7) % 3))
        path = sidecar_file(side, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path, row_group_size=50)  # row groups that cut across batches
        frames.append(frame)
    return pl.concat(frames)


def test_a_view_reads_the_sources_with_the_sidecar_column(demo_dir: Path, tmp_path: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    labels = _label(corpus, tmp_path / "side")
    view = write_view(tmp_path / "view", corpus.shards, corpus.options, tmp_path / "side",
                      inputs=corpus.inputs)  # fmt: skip
    source = read_all(corpus)
    for given in (view, view / VIEW_FILE):
        for batch_rows in (8192, 37):  # batches that cut across the side-car's row groups
            read = read_all(Corpus(given, batch_rows=batch_rows))
            assert read.columns == ["id", "text", "source_domain", "source", "domain"]
            assert read.select("id", "text").equals(source.select("id", "text"))
            assert read.get_column("source_domain").equals(source.get_column("domain"), check_names=False)  # fmt: skip
            assert read.get_column("domain").equals(labels.get_column("domain"))
    view_corpus = Corpus(view)
    assert [s.name for s in view_corpus.shards] == [s.name for s in corpus.shards]
    # proxy workers reopen a held-out corpus from paths: a view's shards by their view
    assert shard_paths(view_corpus) == [str(view.resolve())]
    assert read_all(Corpus(shard_paths(view_corpus))).equals(read_all(view_corpus))
    # nothing copied: the view is a small manifest
    assert sum(f.stat().st_size for f in view.rglob("*") if f.is_file()) < 20_000
    # what depends on the corpus sees the labels change
    before = view_corpus.fingerprint()
    _label(corpus, tmp_path / "side")
    assert Corpus(view).fingerprint() != before


def test_nothing_is_written_into_what_a_view_reads(demo_dir: Path, tmp_path: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    _label(corpus, tmp_path / "side")
    view = write_view(tmp_path / "view", corpus.shards, corpus.options, tmp_path / "side",
                      inputs=corpus.inputs)  # fmt: skip
    viewed = Corpus(view)
    for place in (demo_dir / "train" / "out", tmp_path / "side" / "x", view / "x", view):
        with pytest.raises(UnsafeOutputError):
            viewed.check_output(place)
    with pytest.raises(UnsafeOutputError, match="view folder"):  # a view never goes in its input
        write_view(demo_dir / "train" / "v", corpus.shards, corpus.options, tmp_path / "side",
                   inputs=corpus.inputs)  # fmt: skip
    assert not (demo_dir / "train" / "v").exists()


def test_a_view_of_a_changed_source_is_refused(demo_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(demo_dir / "train", tmp_path / "train")
    corpus = Corpus(tmp_path / "train")
    _label(corpus, tmp_path / "side")
    view = write_view(tmp_path / "view", corpus.shards, corpus.options, tmp_path / "side",
                      inputs=corpus.inputs)  # fmt: skip
    first = corpus.shards[0]
    # side-car rows out of order: the ids no longer line up
    side = pl.read_parquet(sidecar_file(tmp_path / "side", first))
    side.reverse().write_parquet(sidecar_file(tmp_path / "side", first))
    with pytest.raises(ValueError, match="do not line up"):
        read_all(Corpus(view))
    side.write_parquet(sidecar_file(tmp_path / "side", first))
    read_all(Corpus(view))
    # a source edited since it was labelled
    records = [r for b in first.read(corpus.options) for r in b.to_dicts()][:-1]
    write_jsonl(tmp_path / "plain.jsonl", records)
    Path(first.path).write_bytes(gzip.compress((tmp_path / "plain.jsonl").read_bytes()))
    with pytest.raises(ValueError, match="changed since it was labelled"):
        read_all(Corpus(view))
    sidecar_file(tmp_path / "side", first).unlink()
    with pytest.raises(FileNotFoundError, match="labels of shard"):
        read_all(Corpus(view))


def test_a_view_reads_its_sources_as_they_were_labelled(
    demo_records: list[dict], tmp_path: Path
) -> None:
    """Sources with their own field names: the view reads them with the labelling's options."""
    rows = [{"doc": r["id"], "body": r["text"], "domain": r["domain"]} for r in demo_records[:120]]
    write_jsonl(tmp_path / "src" / "a.jsonl", rows[:70])
    write_jsonl(tmp_path / "src" / "b.jsonl", rows[70:])
    corpus = Corpus(tmp_path / "src", text_field="body", id_field="doc")
    labels = _label(corpus, tmp_path / "side")
    view = write_view(tmp_path / "view", corpus.shards, corpus.options, tmp_path / "side",
                      inputs=corpus.inputs)  # fmt: skip
    read = read_all(Corpus(view))  # the default options (text, id) name no field of the sources
    assert read.get_column("id").to_list() == [r["doc"] for r in rows]
    assert read.get_column("text").to_list() == [r["body"] for r in rows]
    assert read.get_column("domain").equals(labels.get_column("domain"))
    # a view of that view reads the same files the same way
    again = write_view(tmp_path / "view2", Corpus(view).shards, Corpus(view).options,
                       tmp_path / "side", inputs=Corpus(view).inputs)  # fmt: skip
    assert read_all(Corpus(again)).equals(read)
