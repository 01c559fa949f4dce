"""Decontamination by word n-grams: benchmark items planted in real demo documents are found,
verbatim and lightly edited; clean documents are not; the filter drops exactly the planted
ones; the report names the planted items."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import write_jsonl

from assay.common.targets import load_targets
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import load_scorer
from assay.selection.decontam import (
    REPORT_FILE,
    DecontamScorer,
    contamination_report,
    fit_decontam,
    normalize,
)
from assay.selection.score import score_corpus
from assay.selection.select import select

TARGETS = "assay_mmlu_dev"


def _edit(item: str) -> str:
    """A lightly edited copy: case swapped, punctuation changed, two words replaced at each end."""
    words = item.swapcase().replace(".", "!").replace(",", " ;").replace("?", "...").split()
    return " ".join(["Quoth", "someone", *words[2:-2], "they", "said."])


@pytest.fixture(scope="module")
def planted(demo_records: list[dict], tmp_path_factory: pytest.TempPathFactory):
    """The demo corpus in two shards, with 4 MMLU dev items planted verbatim and 4 edited, each
    in the middle of a non-math document: (corpus folder, {doc id: item index}, targets)."""
    targets = load_targets(TARGETS)
    lengths = [len(normalize(t).split()) for t in targets]
    chosen = [i for i, n in enumerate(lengths) if 30 <= n <= 120][::7][:8]
    assert len(chosen) == 8
    records = [dict(r) for r in demo_records]
    hosts = [k for k, r in enumerate(records) if r["domain"] != "math"][5::33][:8]
    plants: dict[str, int] = {}
    for j, (k, item) in enumerate(zip(hosts, chosen, strict=True)):
        text = records[k]["text"]
        mid = text.find(" ", len(text) // 2)
        body = targets[item] if j < 4 else _edit(targets[item])
        records[k]["text"] = f"{text[:mid]}\n\n{body}\n\n{text[mid:]}"
        plants[records[k]["id"]] = item
    root = tmp_path_factory.mktemp("planted")
    half = len(records) // 2
    write_jsonl(root / "corpus" / "a.jsonl", records[:half])
    write_jsonl(root / "corpus" / "b.jsonl", records[half:])
    return root / "corpus", plants, targets


def _scores(folder: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted(folder.glob("*.parquet"))]).sort("id")


def test_normalisation_is_datatrove_s() -> None:
    # lower case, punctuation deleted (not split on), diacritics stripped, digit runs to 0
    assert normalize("Héllo, WORLD! It's 2024; naïve café — «ok» x_1").split() == [
        "hello", "world", "its", "0", "naive", "cafe", "ok", "x0",
    ]  # fmt: skip
    assert normalize("Ça\tva\n\nbien?").split() == ["ca", "va", "bien"]


def test_planted_items_found_and_clean_documents_not(planted, tmp_path: Path) -> None:
    folder, plants, targets = planted
    scorer = DecontamScorer().fit(targets)
    assert scorer.hashes is not None and np.all(np.diff(scorer.hashes.astype(np.uint64)) > 0)
    score_corpus(scorer, Corpus(folder), tmp_path / "s")
    table = _scores(tmp_path / "s")
    assert table.height == 360
    hit = table.filter(pl.col("contam_ngrams") > 0)
    # recall 1.0 (verbatim and edited) and no false positives among the 352 clean documents
    assert set(hit.get_column("id")) == set(plants)
    found = dict(zip(hit.get_column("id"), hit.get_column("contam_item").cast(int), strict=True))
    assert found == plants
    clean = table.filter(~pl.col("id").is_in(list(plants)))
    assert (clean.get_column("contam_item") == -1).all()
    # a verbatim item of w words inside a document yields all its w - 12 13-grams
    for doc_id, item in list(plants.items())[:4]:
        n_words = len(normalize(targets[item]).split())
        got = table.filter(pl.col("id") == doc_id).get_column("contam_ngrams").item()
        assert got >= n_words - 12


def test_short_items_whole_or_skipped() -> None:
    item = "Which planet has the most moons in the solar system"  # 10 words
    doc = "Astronomy quiz: which PLANET has the most moons, in the solar system? Saturn."
    partial = "which planet has the most moons in the solar"
    whole = DecontamScorer().fit([item, "an unrelated target " * 10])
    out = whole.score_table([doc, partial, "nothing here"])
    assert out["contam_ngrams"].tolist() == [1.0, 0.0, 0.0]
    assert out["contam_item"].tolist() == [0.0, -1.0, -1.0]
    # min_words = n: short items give nothing, as in datatrove
    skipped = DecontamScorer(min_words=13).fit([item, "an unrelated target " * 10])
    assert skipped.score_table([doc])["contam_ngrams"].tolist() == [0.0]
    assert skipped.report["short_targets_skipped"] == 1


def test_save_load_round_trip_and_workers(planted, tmp_path: Path) -> None:
    folder, _, _ = planted
    scorer = fit_decontam(TARGETS, n=13).save(tmp_path / "model")
    loaded = load_scorer(tmp_path / "model")
    assert isinstance(loaded, DecontamScorer) and loaded.get_params() == scorer.get_params()
    for name in ("hashes", "item_ptr", "item_ids", "lengths"):
        assert np.array_equal(getattr(loaded, name), getattr(scorer, name))
    assert loaded.targets == scorer.targets
    texts = [r["text"] for b in Corpus(folder).iter_batches() for r in b.to_dicts()]
    a, b = scorer.score_table(texts), loaded.score_table(texts)
    assert all(np.array_equal(a[c], b[c]) for c in scorer.columns)
    # a 2-worker pool (the saved scorer travels as its folder) equals one process
    score_corpus(loaded, Corpus(folder), tmp_path / "one")
    score_corpus(loaded, Corpus(folder), tmp_path / "two", runner=LocalRunner(workers=2))
    assert _scores(tmp_path / "one").equals(_scores(tmp_path / "two"))


def test_cli_decontaminate_then_select_drops_exactly_the_planted(planted, tmp_path) -> None:
    from assay.cli import app

    folder, plants, targets = planted
    cli = CliRunner()
    out = cli.invoke(
        app,
        ["decontaminate", str(folder), "--targets", TARGETS, "--out", str(tmp_path / "d")],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    assert re.search(r"8 of 360 documents overlap", out.output), out.output
    scores = tmp_path / "d" / "scores"
    report = json.loads((scores / REPORT_FILE).read_text())
    assert report == contamination_report(scores, load_scorer(tmp_path / "d" / "model"))
    assert report["documents"] == 360 and report["contaminated"] == 8
    assert {row["item"] for row in report["items"]} == set(plants.values())
    assert all(row["documents"] == 1 for row in report["items"])
    assert {row["text"] for row in report["items"]} == {targets[i][:200] for i in plants.values()}
    # the documented command: keep contam_ngrams <= 0
    args = [
        "select", str(folder), "--scores", str(scores), "--column", "contam_ngrams",
        "--policy", "threshold", "--threshold", "0", "--mode", "bottom",
        "--out", str(tmp_path / "sel"),
    ]  # fmt: skip
    sel = cli.invoke(app, args, catch_exceptions=False)
    assert sel.exit_code == 0, sel.output
    kept = Corpus(tmp_path / "sel" / "selected")
    kept_ids = {i for b in kept.iter_batches() for i in b.get_column("id")}
    all_ids = {i for b in Corpus(folder).iter_batches() for i in b.get_column("id")}
    assert kept_ids == all_ids - set(plants)
    # the same through the library's select
    res = select(
        Corpus(folder), scores, tmp_path / "sel2", column="contam_ngrams",
        policy="threshold", threshold=0, mode="bottom",
    )  # fmt: skip
    assert (res.docs, res.kept_docs) == (360, 352)


def test_ngrams_never_span_two_documents() -> None:
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "near",
        "a",
        "quiet",
        "river",
        "bank",
    ]
    scorer = DecontamScorer().fit([" ".join(words)])
    split = [" ".join(words[:6]), " ".join(words[6:]), " ".join(words)]
    assert scorer.score_table(split)["contam_ngrams"].tolist() == [0.0, 0.0, 2.0]


def test_ascii_fast_path_equals_the_text_normalisation(real_texts: list[str]) -> None:
    from assay.selection.decontam import normalized_bytes, position_hashes

    for text in [*real_texts[::3], "A\r\nb\x0bc\x1fd 1,000,000 x_99 it's"]:
        fast = re.sub(rb"0+", b"0", normalized_bytes(text)).split()
        assert fast == [w.encode() for w in normalize(text).split()]
    # accents and case do not change a word's hash: an ASCII target matches an accented text
    plain, accented = position_hashes(["creme brulee 1999"]), position_hashes(["Crème Brûlée 42"])
    assert np.array_equal(plain[0], accented[0]) and plain[1].tolist() == [3]


def test_recipe_decontaminate_then_select(planted, tmp_path: Path) -> None:
    from assay.recipe.pipeline import run_recipe

    folder, plants, _ = planted
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: decon\nseed: 0\ncorpus: {{paths: [{folder}]}}\nsteps:\n"
        f"  - decontaminate: {{targets: {{source: {TARGETS}}}}}\n"
        "  - select: {scores: [decontaminate], column: contam_ngrams, policy: threshold,"
        " threshold: 0, mode: bottom}\n"
    )
    run_recipe(recipe, run_dir=tmp_path / "run")
    kept = Corpus(tmp_path / "run" / "select" / "selected")
    ids = {i for b in kept.iter_batches() for i in b.get_column("id")}
    assert len(ids) == 360 - len(plants) and ids.isdisjoint(plants)
    assert (tmp_path / "run" / "decontaminate" / "scores" / REPORT_FILE).exists()


def test_targets_too_short_to_index_are_refused_not_silently_empty() -> None:
    from assay.errors import InputError

    with pytest.raises(InputError, match="none of the 2 target examples has 8 words"):
        DecontamScorer().fit(["What is 2 + 2?", "Name the capital of France."])
    with pytest.raises(InputError, match="target set is empty"):
        DecontamScorer().fit([])


def test_the_report_takes_a_bracketed_folder_literally(planted, tmp_path: Path) -> None:
    # 'scores[1]' as a glob would match 'scores1' beside it, whose documents are all clean
    folder, plants, targets = planted
    scorer = DecontamScorer().fit(targets)
    score_corpus(scorer, Corpus(folder), tmp_path / "scores[1]")
    score_corpus(
        DecontamScorer().fit(["an unrelated sentence " * 8]), Corpus(folder), tmp_path / "scores1"
    )
    report = contamination_report(tmp_path / "scores[1]", scorer)
    assert report["documents"] == 360 and report["contaminated"] == len(plants)
    assert {row["item"] for row in report["items"]} == set(plants.values())


def test_an_ngram_of_one_word_repeated_matches_no_table_of_numbers() -> None:
    # a solution listing numbers normalises to "0 0 ... 0": that 13-gram is in every table
    item = (
        "Count the strings of length six over the digits one two and three whose adjacent "
        "digits differ by at most one: the counts are 1, 3, 7, 17, 41, 99, 239, 577, 1393, "
        "3363, 8119, 19601, 47321, 114243 and so on."
    )
    table = "timings: " + " ".join(str(100 + 7 * i) for i in range(20)) + " done"
    copy = f"As a forum post: {item} Thanks!"
    scorer = DecontamScorer().fit([item])
    assert scorer.report["repeat_ngrams_skipped"] > 0
    assert scorer.score_table([table, copy])["contam_ngrams"].tolist()[0] == 0.0
    assert scorer.score_table([copy])["contam_item"].tolist() == [0.0]
    # datatrove's behaviour on request: the table then "overlaps" the item
    keep_all = DecontamScorer(skip_repeats=False).fit([item])
    assert keep_all.score_table([table])["contam_ngrams"].tolist()[0] > 0
