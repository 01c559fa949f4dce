"""Hugging Face datasets as corpora and as outputs: a `save_to_disk` folder, a dataset by name
in the local cache (`hf-dataset:NAME?...`), streamed or not; selections written as a dataset
that `datasets.load_from_disk` opens. From the library, the command line and a recipe."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import datasets
import polars as pl
import pytest
from click.testing import CliRunner

from assay.cli import app
from assay.errors import ConfigError, InputError
from assay.io.corpus import Corpus
from assay.io.hub import parse_hf_dataset
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.score import score_corpus
from assay.selection.select import select

datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def records(demo_records: list[dict]) -> list[dict]:
    return [{"id": r["id"], "text": r["text"], "domain": r["domain"]} for r in demo_records]


def _texts(corpus: Corpus) -> dict[str, str]:
    return {i: t for b in corpus.iter_batches() for i, t in zip(b["id"], b["text"], strict=True)}


def test_a_saved_dataset_is_a_corpus(tmp_path: Path, records: list[dict]) -> None:
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(records).save_to_disk(str(saved), num_shards=3)
    corpus = Corpus(saved)
    assert [s.name for s in corpus.shards] == [f"data-0000{i}-of-00003.arrow" for i in range(3)]
    batches = list(corpus.iter_batches())
    assert [r for b in batches for r in b["id"]] == [r["id"] for r in records]  # in order
    assert _texts(corpus) == {r["id"]: r["text"] for r in records}
    assert batches[0].columns[:3] == ["id", "text", "domain"]

    # a DatasetDict: one split's folder is the corpus; the top folder is refused by name
    ddict = tmp_path / "ddict"
    ds = datasets.Dataset.from_list(records)
    datasets.DatasetDict(train=ds.select(range(100)), test=ds.select(range(100, 120))).save_to_disk(
        str(ddict)
    )
    assert len(_texts(Corpus(ddict / "test"))) == 20
    with pytest.raises(
        InputError, match=r"DatasetDict with splits \['train', 'test'\].*ddict/train"
    ):
        Corpus(ddict)


def test_a_bad_record_in_a_saved_dataset_names_file_and_row(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    rows = [{"id": "a", "text": "A real sentence."}, {"id": "b", "text": ""}]
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))
    with pytest.raises(InputError, match=r"data-00000-of-00001\.arrow, row 2: 'text' is empty"):
        list(Corpus(saved).iter_batches())
    assert len(_texts(Corpus(saved, on_error="skip"))) == 1


def test_selection_written_as_a_dataset_and_resumed(tmp_path: Path, demo_dir: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    scores = tmp_path / "stats"
    score_corpus(DocStatsScorer(), corpus, scores)
    out = tmp_path / "selected"
    result = select(corpus, scores, out, column="n_chars", keep=0.25, by="docs", format="arrow")
    ds = datasets.load_from_disk(str(out))
    kept = _texts(Corpus(out))
    assert len(ds) == result.kept_docs == len(kept)
    assert dict(zip(ds["id"], ds["text"], strict=True)) == kept
    # resumed: nothing changes, and the dataset still opens
    state = (out / "state.json").read_text()
    select(corpus, scores, out, column="n_chars", keep=0.25, by="docs", format="arrow")
    assert (out / "state.json").read_text() == state
    assert len(datasets.load_from_disk(str(out))) == result.kept_docs


def _cache_a_named_dataset(cache: Path, source: Path, records: list[dict]) -> None:
    """What `load_dataset("org/tiny")` leaves in the datasets cache after a download: the
    prepared Arrow files under `org___tiny/<config>/<version>/<hash>/` (built here from local
    parquet files with the packaged parquet builder, then placed under that name)."""
    source.mkdir(parents=True)
    pl.DataFrame(records[:200]).write_parquet(source / "train.parquet")
    pl.DataFrame(records[200:]).write_parquet(source / "test.parquet")
    files = {"train": str(source / "train.parquet"), "test": str(source / "test.parquet")}
    builder = datasets.load_dataset_builder("parquet", data_files=files, cache_dir=str(cache))
    builder.download_and_prepare()
    target = cache / "org___tiny" / "default" / "0.0.0" / "abc123"
    target.parent.mkdir(parents=True)
    shutil.move(builder.cache_dir, target)
    for f in target.glob("parquet-*.arrow"):
        f.rename(f.with_name(f.name.replace("parquet-", "tiny-")))


def test_a_dataset_by_name_from_the_local_cache(
    tmp_path: Path, records: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # nothing may come from the Hub
    cache = tmp_path / "hf-cache"
    _cache_a_named_dataset(cache, tmp_path / "src", records)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)

    test = Corpus("hf-dataset:org/tiny?config=default&split=test")
    assert _texts(test) == {r["id"]: r["text"] for r in records[200:]}
    assert all(s.path.startswith(str(cache)) for s in test.shards)  # the cache, memory-mapped
    train = Corpus("hf-dataset:org/tiny")  # split defaults to train
    assert list(_texts(train)) == [r["id"] for r in records[:200]]

    # streamed from a local dataset folder: the same records, nothing prepared
    stream = Corpus(f"hf-dataset:{tmp_path / 'src'}?split=test&streaming=true")
    assert _texts(stream) == _texts(test)
    assert stream.fingerprint()[0]["dataset"][2] == "test"

    # from the command line, into a selection that is itself a dataset
    cli = CliRunner()
    res = cli.invoke(
        app,
        [
            "score",
            "hf-dataset:org/tiny?split=test",
            "--scorer",
            "doc_stats",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert res.exit_code == 0, res.output
    res = cli.invoke(
        app,
        [
            "select", "hf-dataset:org/tiny?split=test", "--scores", str(tmp_path / "s"),
            "--column", "n_chars", "--keep", "0.5", "--by", "docs", "--format", "arrow",
            "--out", str(tmp_path / "sel"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (
        len(datasets.load_from_disk(str(tmp_path / "sel" / "selected"))) == len(records[200:]) // 2
    )


def test_bad_dataset_names_are_clear() -> None:
    assert parse_hf_dataset("hf-dataset:org/x?config=c&split=test&streaming=1") == {
        "name": "org/x", "config": "c", "split": "test", "streaming": True,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="unknown key 'splt'"):
        parse_hf_dataset("hf-dataset:org/x?splt=test")
    with pytest.raises(ConfigError, match="give a dataset name"):
        parse_hf_dataset("hf-dataset:?split=test")
    with pytest.raises(InputError, match="hf-dataset:org/absent: cannot load it"):
        Corpus("hf-dataset:org/absent")


def test_a_recipe_reads_a_saved_dataset_and_writes_one(tmp_path: Path, records: list[dict]) -> None:
    from assay.recipe.pipeline import run_recipe
    from assay.recipe.recipe import parse_recipe

    saved = tmp_path / "saved"
    datasets.Dataset.from_list(records).save_to_disk(str(saved), num_shards=2)
    data = {
        "name": "hf",
        "corpus": {"paths": [str(saved)]},
        "steps": [
            {"score": {"name": "stats", "scorer": "doc_stats"}},
            {"select": {"scores": ["stats"], "column": "n_words", "keep": 0.5, "by": "docs"}},
        ],
    }
    run = tmp_path / "run"
    outcome = run_recipe(parse_recipe(data), run_dir=run, progress=False)
    kept = outcome.step("select").summary["kept_docs"]
    selected = datasets.load_from_disk(str(run / "select" / "selected"))  # the input's format
    assert len(selected) == kept == len(records) // 2
    assert set(selected["id"]) <= {r["id"] for r in records}
    again = run_recipe(parse_recipe(data), run_dir=run, progress=False)
    assert [s.status for s in again.steps] == ["reused"] * 2
