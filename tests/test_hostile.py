"""Hostile input: what a careless or adversarial user can do to assay, and what assay does.

One section per class of failure found by trying assay as a hostile user would (issue 11):
outputs that would clobber inputs, names used as paths, glob characters in file names, fields
that appear late, concurrent writers, resume after an input changed, non-string texts, lone
surrogates, reserved column names, duplicate ids, giant lines, temporary files on shared
storage, and the smaller cases (BOM, mislabelled compression, disk full, NaN settings...).
Every test here failed before the fix it guards.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import read_all, write_jsonl, write_parquet

from assay.cli.main import app, main
from assay.io.corpus import Corpus
from assay.io.shards import CorpusError
from assay.recipe import RecipeError, parse_recipe, run_recipe
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.random_scorer import RandomScorer
from assay.selection.score import score_corpus
from assay.selection.select import SelectConfig, select
from assay.util.files import OutputError, host_name, remove_stale_temps, temp_path_for
from assay.util.guard import (
    LOCK_NAME,
    FolderLockedError,
    UnsafeOutputError,
    folder_lock,
    safe_rmtree,
)

cli = CliRunner()


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` with the sha256 of its bytes: equal digests, untouched tree."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def corpus_dir(tmp_path: Path, demo_records: list[dict]) -> Path:
    """A two-shard JSONL corpus of 120 real documents."""
    root = tmp_path / "c"
    recs = [{"id": r["id"], "text": r["text"], "domain": r["domain"]} for r in demo_records]
    write_jsonl(root / "a.jsonl", recs[:60])
    write_jsonl(root / "b.jsonl", recs[60:120])
    return root


@pytest.fixture
def scored(tmp_path: Path, corpus_dir: Path) -> Path:
    scores = tmp_path / "s"
    score_corpus(DocStatsScorer(stat="n_chars"), Corpus(corpus_dir), scores)
    return scores


def _cli_fails(args: list[str], match: str) -> str:
    """Run the `assay` entry point in this process; it must exit 2 with a one-line error."""
    err = io.StringIO()
    with (
        mock.patch.object(sys, "argv", ["assay", *args]),
        mock.patch.object(sys, "stderr", err),
        pytest.raises(SystemExit) as exit_,
    ):
        main()
    said = " ".join(err.getvalue().split())
    assert exit_.value.code == 2, said
    assert match in said and "Traceback" not in said, said
    return said


# ---------------------------------------------------------------------------------------------
# 1. An output that equals, contains or lies inside an input


def test_select_into_its_own_corpus_is_refused_and_nothing_changes(
    corpus_dir: Path, scored: Path
) -> None:
    before = _tree_digest(corpus_dir)
    base = ["select", str(corpus_dir), "--scores", str(scored), "--column", "n_chars"]
    _cli_fails([*base, "--keep", "0.5", "--out", str(corpus_dir)], "is the input")
    _cli_fails([*base, "--keep", "0.5", "--out", str(corpus_dir), "--overwrite"], "is the input")
    _cli_fails([*base, "--keep", "0.5", "--out", str(corpus_dir / "sub")], "lies inside the input")
    _cli_fails([*base, "--keep", "0.5", "--out", str(corpus_dir.parent)], "contains the input")
    _cli_fails([*base, "--keep", "0.5", "--out", str(scored)], "is the input")
    assert _tree_digest(corpus_dir) == before
    assert read_all(Corpus(corpus_dir)).height == 120


def test_an_output_symlinked_to_an_input_is_that_input(
    tmp_path: Path, corpus_dir: Path, scored: Path
) -> None:
    link = tmp_path / "innocent"
    link.symlink_to(corpus_dir, target_is_directory=True)
    before = _tree_digest(corpus_dir)
    with pytest.raises(UnsafeOutputError, match="is the input"):
        select(Corpus(corpus_dir), scored, link, column="n_chars", keep=0.5)
    assert _tree_digest(corpus_dir) == before


def test_scoring_a_parquet_corpus_into_itself_is_refused(
    tmp_path: Path, demo_records: list[dict]
) -> None:
    root = tmp_path / "pq"
    write_parquet(
        root / "p.parquet", [{"id": r["id"], "text": r["text"]} for r in demo_records[:40]]
    )
    before = _tree_digest(root)
    _cli_fails(["score", str(root), "--scorer", "doc_stats", "--out", str(root)], "is the input")
    with pytest.raises(UnsafeOutputError):
        score_corpus(DocStatsScorer(), Corpus(root / "p.parquet"), root)
    assert _tree_digest(root) == before


def test_every_writer_refuses_an_output_inside_its_corpus(corpus_dir: Path) -> None:
    from assay.common.tokenizer import train_tokenizer
    from assay.mixing.cluster import cluster_corpus
    from assay.proxies.train import train_proxy
    from assay.selection.dedup import dedup_corpus

    corpus = Corpus(corpus_dir)
    inside = corpus_dir / "out"
    before = _tree_digest(corpus_dir)
    for call in (
        lambda: corpus.write(inside),
        lambda: train_tokenizer(corpus, 512, inside),
        lambda: train_proxy(corpus, "natural", 1000, out_dir=inside, progress=False),
        lambda: cluster_corpus(corpus, corpus_dir),
        lambda: dedup_corpus(corpus, inside),
    ):
        with pytest.raises(UnsafeOutputError):
            call()
    assert _tree_digest(corpus_dir) == before and not inside.exists()


def test_discovery_skips_assay_outputs_nested_in_a_folder(
    tmp_path: Path, corpus_dir: Path, scored: Path, demo_records: list[dict]
) -> None:
    # a selection written beside other data, then that parent folder read as a corpus
    data = tmp_path / "data"
    write_jsonl(
        data / "raw.jsonl",
        [{"id": f"x{i}", "text": r["text"]} for i, r in enumerate(demo_records[200:230])],
    )
    select(Corpus(corpus_dir), scored, data / "selected", column="n_chars", keep=0.5)
    assert (data / "selected" / "a.jsonl").exists()
    assert read_all(Corpus(data)).height == 30  # the selection is not read as input
    assert read_all(Corpus(data / "selected")).height > 0  # but it is a corpus of its own
    assert read_all(Corpus(str(data / "**" / "*.jsonl"))).height == 30


def test_writing_into_a_folder_of_someone_elses_files_is_refused(
    tmp_path: Path, corpus_dir: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UnsafeOutputError, match="did not write"):
        score_corpus(DocStatsScorer(), Corpus(corpus_dir), mine)
    with pytest.raises(UnsafeOutputError, match="did not write"):
        DocStatsScorer().save(mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


# ---------------------------------------------------------------------------------------------
# 2. Recipe and step names used as paths


def _recipe(corpus_dir: Path, run_dir: Path, **step) -> dict:
    return {
        "name": "r",
        "run_dir": str(run_dir),
        "corpus": {"paths": [str(corpus_dir)]},
        "steps": [{"score": {"scorer": "doc_stats", **step}}],
    }


@pytest.mark.parametrize("name", ["/tmp/victim", "../victim", "a/b", "..", ".hidden", "a.b", ""])
def test_step_and_recipe_names_must_be_plain(tmp_path: Path, name: str) -> None:
    data = _recipe(tmp_path, tmp_path / "run", name=name)
    with pytest.raises(RecipeError, match="plain name"):
        parse_recipe(data)
    with pytest.raises(RecipeError, match="plain name"):
        parse_recipe({**_recipe(tmp_path, tmp_path / "run"), "name": name})


def test_a_changed_step_never_deletes_a_folder_assay_did_not_make(
    tmp_path: Path, corpus_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    run_recipe(parse_recipe(_recipe(corpus_dir, run_dir)), progress=False)
    # the step's folder is replaced by a user's folder with the step's name
    step = run_dir / "score"
    safe_rmtree(step, within=run_dir)
    step.mkdir()
    (step / "precious.txt").write_text("keep me")
    with pytest.raises(UnsafeOutputError, match="did not write"):
        run_recipe(
            parse_recipe(_recipe(corpus_dir, run_dir, params={"stat": "n_words"})), progress=False
        )
    assert (step / "precious.txt").read_text() == "keep me"


def test_safe_rmtree_stays_inside_the_run_directory(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    outside.mkdir()
    (outside / "_assay.json").write_text("{}")
    for victim in (outside, run / ".." / "elsewhere", run):
        with pytest.raises(UnsafeOutputError):
            safe_rmtree(victim, within=run)
    assert outside.exists() and run.exists()


def test_a_run_directory_is_never_an_input_or_a_foreign_folder(
    tmp_path: Path, corpus_dir: Path
) -> None:
    before = _tree_digest(corpus_dir)
    for run_dir in (corpus_dir, corpus_dir / "runs", tmp_path):
        with pytest.raises(UnsafeOutputError):
            run_recipe(parse_recipe(_recipe(corpus_dir, run_dir)), progress=False)
    assert _tree_digest(corpus_dir) == before


# ---------------------------------------------------------------------------------------------
# 3. Shard names with glob characters


@pytest.mark.parametrize("streaming", [False, True])
def test_a_bracket_in_a_name_is_taken_literally(
    tmp_path: Path, demo_records: list[dict], streaming: bool
) -> None:
    a = [{"id": f"a{i}", "text": r["text"]} for i, r in enumerate(demo_records[:20])]
    b = [{"id": f"b{i}", "text": r["text"]} for i, r in enumerate(demo_records[20:30])]
    write_jsonl(tmp_path / "j" / "p[1].jsonl", a)
    write_jsonl(tmp_path / "j" / "p1.jsonl", b)
    write_parquet(tmp_path / "q" / "p[1].parquet", a)
    write_parquet(tmp_path / "q" / "p1.parquet", b)
    opts = {"whole_file_bytes": 0, "block_bytes": 4096} if streaming else {}
    for folder in ("j", "q"):
        ids = read_all(Corpus(tmp_path / folder, **opts)).get_column("id").to_list()
        assert sorted(ids) == sorted(r["id"] for r in a + b), folder
        for name in (f"p[1].{'jsonl' if folder == 'j' else 'parquet'}",):
            single = read_all(Corpus(tmp_path / folder / name, **opts))
            assert single.get_column("id").to_list() == [r["id"] for r in a]


def test_select_and_score_work_on_a_bracketed_shard_alone(
    tmp_path: Path, demo_records: list[dict]
) -> None:
    recs = [{"id": f"d{i}", "text": r["text"]} for i, r in enumerate(demo_records[:40])]
    write_jsonl(tmp_path / "c" / "part[1].jsonl", recs)
    corpus = Corpus(tmp_path / "c" / "part[1].jsonl")
    score_corpus(DocStatsScorer(stat="n_chars"), corpus, tmp_path / "s")
    result = select(corpus, tmp_path / "s", tmp_path / "o", column="n_chars", keep=0.5)
    out = read_all(Corpus(tmp_path / "o"))
    assert result.kept_docs == out.height == 20
    longest = sorted(recs, key=lambda r: -len(r["text"]))[:20]
    assert set(out.get_column("id")) == {r["id"] for r in longest}


def test_a_bracketed_target_file_is_read_literally(
    tmp_path: Path, demo_records: list[dict]
) -> None:
    from assay.common.targets import load_targets

    mine = [{"text": r["text"]} for r in demo_records[:5]]
    other = [{"text": r["text"]} for r in demo_records[5:8]]
    write_parquet(tmp_path / "t[1].parquet", mine)
    write_parquet(tmp_path / "t1.parquet", other)  # what '[1]' matches as a glob
    write_parquet(tmp_path / "plain" / "mine.parquet", mine)
    got = load_targets(tmp_path / "t[1].parquet")
    assert len(got) == 5 and got == load_targets(tmp_path / "plain" / "mine.parquet")


# ---------------------------------------------------------------------------------------------
# 4. A field that first appears deep in a shard


@pytest.mark.parametrize("streaming", [False, True])
def test_a_field_first_seen_after_record_100_is_read(
    tmp_path: Path, demo_records: list[dict], streaming: bool
) -> None:
    recs = [{"id": f"d{i}", "text": r["text"]} for i, r in enumerate(demo_records[:200])]
    recs[150]["domain"] = "late"
    recs[170]["source"] = "found"
    write_jsonl(tmp_path / "c" / "s.jsonl", recs)
    opts = {"whole_file_bytes": 0, "block_bytes": 1 << 20} if streaming else {}
    df = read_all(Corpus(tmp_path / "c", **opts))
    assert df.get_column("domain").drop_nulls().to_list() == ["late"]
    assert df.get_column("source").drop_nulls().to_list() == ["found"]
    score_corpus(DocStatsScorer(stat="n_chars"), Corpus(tmp_path / "c", **opts), tmp_path / "s")
    select(
        Corpus(tmp_path / "c", **opts), tmp_path / "s", tmp_path / "o", column="n_chars", keep=1.0
    )
    out = read_all(Corpus(tmp_path / "o"))
    assert out.filter(pl.col("id") == "d150").get_column("domain").to_list() == ["late"]


# ---------------------------------------------------------------------------------------------
# 5. Concurrent writers to one folder

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from assay.util.guard import folder_lock
    folder, ready, release = map(Path, sys.argv[1:4])
    with folder_lock(folder):
        ready.write_text("locked")
        while not release.exists():
            time.sleep(0.05)
    """
)


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    while not path.exists():  # no deadline: a slow machine only waits longer
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path: Path, corpus_dir: Path) -> None:
    out, ready, release = tmp_path / "s", tmp_path / "ready", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), str(ready), str(release)])
    try:
        _wait_for(ready, holder)
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid} on {host_name()}"):
            score_corpus(DocStatsScorer(), Corpus(corpus_dir), out)
        assert not list(out.glob("*.parquet"))
    finally:
        release.write_text("go")
        holder.wait()
    score_corpus(DocStatsScorer(), Corpus(corpus_dir), out)
    assert len(list(out.glob("*.parquet"))) == 2 and not (out / LOCK_NAME).exists()


def test_a_stale_lock_of_this_host_is_broken_and_another_hosts_is_not(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "f"
    folder.mkdir()
    lock = folder / LOCK_NAME
    lock.write_text(json.dumps({"host": host_name(), "pid": dead.pid, "since": "then"}))
    with folder_lock(folder):  # the dead process' lock is taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with folder_lock(folder):  # and it is re-entrant within a process
            pass
        assert lock.exists()
    assert not lock.exists()
    lock.write_text(json.dumps({"host": "other-machine", "pid": 1, "since": "then"}))
    with pytest.raises(FolderLockedError, match=r"delete .*assay-lock"), folder_lock(folder):
        pass
    assert json.loads(lock.read_text())["host"] == "other-machine"


def test_two_scorers_racing_for_one_folder_lose_nothing(tmp_path: Path, corpus_dir: Path) -> None:
    out = tmp_path / "s"
    score = [sys.executable, "-m", "assay.cli", "score", str(corpus_dir), "--out", str(out)]
    cmds = [[*score, "--scorer", name, "--no-progress"] for name in ("doc_stats", "random")]
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds
    ]
    results = [(p.wait(), *p.communicate()) for p in procs]
    winners = [i for i, (rc, _, _) in enumerate(results) if rc == 0]
    assert len(winners) == 1, results
    rc, _, stderr = results[1 - winners[0]]
    said = " ".join(stderr.split())
    assert rc == 2 and ("being written by another" in said or "other settings" in said), said
    column = json.loads((out / "scores" / "_scores.json").read_text())["columns"]
    for f in (out / "scores").glob("*.parquet"):
        assert pl.read_parquet(f).columns == ["id", *column]
    assert len(list((out / "scores").glob("*.parquet"))) == 2


# ---------------------------------------------------------------------------------------------
# 6. Resume trusts what an output was made from, not that it exists


def test_an_edited_shard_is_scored_again(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    score_corpus(DocStatsScorer(stat="n_chars"), Corpus(corpus_dir), out)
    edited = [{"id": f"t{i}", "text": "x"} for i in range(10)]
    write_jsonl(corpus_dir / "b.jsonl", edited)
    again = score_corpus(DocStatsScorer(stat="n_chars"), Corpus(corpus_dir), out)
    assert again.stale == 1 and again.resumed == 1
    b = pl.read_parquet(out / "b.parquet")
    assert b.get_column("id").to_list() == [r["id"] for r in edited]
    assert b.get_column("n_chars").to_list() == [1.0] * 10


def test_select_redoes_what_a_changed_shard_or_new_scores_invalidate(
    corpus_dir: Path, tmp_path: Path
) -> None:
    scores, sel = tmp_path / "s", tmp_path / "sel"
    score_corpus(DocStatsScorer(stat="n_chars"), Corpus(corpus_dir), scores)
    select(Corpus(corpus_dir), scores, sel, column="n_chars", keep=0.5, by="docs")
    # the user replaces a shard by ten one-character documents and scores again
    write_jsonl(corpus_dir / "b.jsonl", [{"id": f"t{i}", "text": "x"} for i in range(10)])
    score_corpus(DocStatsScorer(stat="n_chars"), Corpus(corpus_dir), scores, overwrite=True)
    result = select(Corpus(corpus_dir), scores, sel, column="n_chars", keep=0.5, by="docs")
    fresh = select(
        Corpus(corpus_dir), scores, tmp_path / "fresh", column="n_chars", keep=0.5, by="docs"
    )
    assert result.to_dict() | {"out_dir": ""} == fresh.to_dict() | {"out_dir": ""}
    kept = read_all(Corpus(sel))
    assert kept.height == result.kept_docs == 35
    assert set(kept.get_column("id")) == set(read_all(Corpus(tmp_path / "fresh")).get_column("id"))
    assert "x" not in kept.get_column("text").to_list()


def test_keys_follow_the_score_files_not_their_existence(corpus_dir: Path, tmp_path: Path) -> None:
    scores, sel = tmp_path / "s", tmp_path / "sel"
    score_corpus(DocStatsScorer(stat="n_chars", column="q"), Corpus(corpus_dir), scores)
    first = select(Corpus(corpus_dir), scores, sel, column="q", keep=0.3)
    # the same column, another statistic (a re-scored folder): the selection must follow
    score_corpus(
        DocStatsScorer(stat="n_words", column="q"), Corpus(corpus_dir), scores, overwrite=True
    )
    second = select(Corpus(corpus_dir), scores, sel, column="q", keep=0.3)
    assert second.score_cutoff != first.score_cutoff
    assert (
        second.score_cutoff
        == select(Corpus(corpus_dir), scores, tmp_path / "f", column="q", keep=0.3).score_cutoff
    )


# ---------------------------------------------------------------------------------------------
# 7 and 8. Non-string texts and lone surrogates are bad records


_BAD_TEXTS = {
    "42": (b'{"id": "n", "text": 42}', "text_not_string"),
    "list": (b'{"id": "l", "text": ["hello", "world"]}', "text_not_string"),
    "object": (b'{"id": "o", "text": {"a": 1}}', "text_not_string"),
    "true": (b'{"id": "t", "text": true}', "text_not_string"),
    "high surrogate": (b'{"id": "h", "text": "\\ud800"}', "invalid_unicode"),
    "low surrogate": (b'{"id": "w", "text": "x\\udc00y"}', "invalid_unicode"),
    "surrogate in metadata": (b'{"id": "m", "text": "fine", "src": "\\ud800"}', "invalid_unicode"),
}


@pytest.mark.parametrize("case", list(_BAD_TEXTS))
@pytest.mark.parametrize("mode", ["whole", "streaming", "gzip"])
def test_non_string_texts_and_lone_surrogates_are_bad_records(
    tmp_path: Path, real_texts: list[str], case: str, mode: str
) -> None:
    raw, reason = _BAD_TEXTS[case]
    good = [{"id": f"g{i}", "text": t} for i, t in enumerate(real_texts[:8])]
    # lines that look suspicious but are fine: a text "42", a paired surrogate, a literal
    # backslash-u, a real NUL
    good += [
        {"id": "s42", "text": "42"},
        {"id": "emoji", "text": "ok \U0001f600"},
        {"id": "lit", "text": "\\ud800 is how JSON escapes a surrogate"},
        {"id": "nul", "text": "a\x00b"},
    ]
    path = write_jsonl(tmp_path / "c" / "s.jsonl", [*good, good[0]], raw_lines={len(good): raw})
    if mode == "gzip":
        gz = path.with_suffix(".jsonl.gz")
        gz.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        path = gz
    opts = {"whole_file_bytes": 0, "block_bytes": 1024} if mode == "streaming" else {}
    with pytest.raises(CorpusError, match=rf"s\.jsonl(\.gz)?, line {len(good) + 1}: "):
        read_all(Corpus(path, **opts))
    from assay.io.shards import ShardStats

    stats = ShardStats("s")
    corpus = Corpus(path, on_error="skip", **opts)
    df = pl.concat(list(corpus.shards[0].read(corpus.options, stats)), how="diagonal_relaxed")
    assert stats.skipped == {reason: 1}
    assert df.get_column("id").to_list() == [r["id"] for r in good]
    assert df.get_column("text").to_list() == [r["text"] for r in good]


# ---------------------------------------------------------------------------------------------
# 9 and 10. Reserved column names, duplicate ids


@pytest.mark.parametrize("column", ["id", "text", "domain", "shard"])
def test_reserved_score_column_names_are_refused(
    tmp_path: Path, corpus_dir: Path, column: str
) -> None:
    with pytest.raises(ValueError, match="reserved"):
        score_corpus(DocStatsScorer(column=column), Corpus(corpus_dir), tmp_path / "s")
    with pytest.raises(ValueError, match="reserved"):
        SelectConfig(column=column, keep=0.5)
    assert not (tmp_path / "s").exists()


def test_a_score_named_like_a_corpus_field_is_refused(tmp_path: Path) -> None:
    recs = [{"id": f"d{i}", "text": "some text", "source_quality": 1.0} for i in range(5)]
    write_jsonl(tmp_path / "c2" / "a.jsonl", recs)
    score_corpus(RandomScorer(column="source_quality"), Corpus(tmp_path / "c2"), tmp_path / "s2")
    with pytest.raises(ValueError, match="fields named like score columns"):
        select(
            Corpus(tmp_path / "c2"),
            tmp_path / "s2",
            tmp_path / "o",
            column="source_quality",
            keep=0.5,
        )


def test_select_refuses_duplicate_ids_like_score_does(tmp_path: Path, corpus_dir: Path) -> None:
    scores = tmp_path / "s"
    score_corpus(DocStatsScorer(stat="n_chars"), Corpus(corpus_dir), scores)
    lines = (corpus_dir / "a.jsonl").read_text().splitlines()
    (corpus_dir / "a.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")  # id repeated
    with pytest.raises(ValueError, match="duplicate id"):
        score_corpus(DocStatsScorer(stat="n_chars"), Corpus(corpus_dir), tmp_path / "s3")
    with pytest.raises(ValueError, match="duplicate id"):
        select(Corpus(corpus_dir), scores, tmp_path / "o", column="n_chars", keep=0.5)


# ---------------------------------------------------------------------------------------------
# 11. One huge line: memory bounded by max_chars


@pytest.mark.parametrize("compressed", [False, True])
def test_a_giant_line_is_refused_without_being_held(
    tmp_path: Path, real_texts: list[str], compressed: bool
) -> None:
    good = [{"id": f"g{i}", "text": t[:500]} for i, t in enumerate(real_texts[:6])]
    giant = b'{"id": "big", "text": "' + b"a" * (8 << 20)  # 8 MiB and no newline for a while
    data = (
        b"\n".join(
            [json.dumps(r).encode() for r in good[:3]]
            + [giant + b'"}']
            + [json.dumps(r).encode() for r in good[3:]]
        )
        + b"\n"
    )
    path = tmp_path / ("g.jsonl.gz" if compressed else "g.jsonl")
    path.write_bytes(gzip.compress(data) if compressed else data)
    # max_chars=1000 bounds a line to 6 x 1000 bytes + 1 MiB; blocks of 64 KiB
    opts = {"max_chars": 1000, "whole_file_bytes": 0, "block_bytes": 64 << 10}
    with pytest.raises(CorpusError, match=r"g\.jsonl(\.gz)?, line 4: line longer than"):
        read_all(Corpus(path, **opts))
    tracemalloc.start()
    try:
        df = read_all(Corpus(path, on_error="skip", **opts))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert df.get_column("id").to_list() == [r["id"] for r in good]
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB while reading past an 8 MiB line"


# ---------------------------------------------------------------------------------------------
# 13. Temporary files on storage shared by several hosts


def test_only_this_hosts_dead_temporary_files_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = temp_path_for(tmp_path / "out.parquet")
    assert tmp.name.startswith(f".tmp-{host_name()}-{os.getpid()}-")
    mine_dead = tmp_path / f".tmp-{host_name()}-{dead.pid}-0123abcd.out.parquet"
    mine_live = tmp_path / f".tmp-{host_name()}-{os.getpid()}-0123abcd.out.parquet"
    other_host = tmp_path / f".tmp-node7-{dead.pid}-0123abcd.out.parquet"
    legacy = tmp_path / f".tmp-{dead.pid}-0123abcd.out.parquet"
    for f in (mine_dead, mine_live, other_host, legacy):
        f.write_text("x")
    assert remove_stale_temps(tmp_path) == 1
    assert not mine_dead.exists() and mine_live.exists() and other_host.exists() and legacy.exists()


# ---------------------------------------------------------------------------------------------
# Lower: BOM, mislabelled compression, outputs that cannot be written, bad settings, bookkeeping


@pytest.mark.parametrize("streaming", [False, True])
def test_a_bom_and_a_compressed_file_named_jsonl_read_like_plain_jsonl(
    tmp_path: Path, demo_records: list[dict], streaming: bool
) -> None:
    import zstandard

    recs = [{"id": r["id"], "text": r["text"]} for r in demo_records[:30]]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + data)
    (tmp_path / "gz.jsonl").write_bytes(gzip.compress(b"\xef\xbb\xbf" + data))
    (tmp_path / "zst.jsonl").write_bytes(zstandard.ZstdCompressor().compress(data))
    opts = {"whole_file_bytes": 0, "block_bytes": 2048} if streaming else {}
    for name in ("bom.jsonl", "gz.jsonl", "zst.jsonl"):
        df = read_all(Corpus(tmp_path / name, **opts))
        assert df.get_column("text").to_list() == [r["text"] for r in recs], name
        assert df.get_column("id").to_list() == [r["id"] for r in recs], name


def test_a_full_disk_or_a_file_in_the_way_is_one_clear_message(
    tmp_path: Path, corpus_dir: Path, scored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OutputError, match=r"cannot write .*file"):
        select(Corpus(corpus_dir), scored, blocker / "sel", column="n_chars", keep=0.5)
    _cli_fails(
        ["score", str(corpus_dir), "--scorer", "doc_stats", "--out", str(blocker / "s")],
        "a parent of this path is a file",
    )

    real_replace = os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith(".parquet"):
            raise OSError(errno.ENOSPC, "No space left on device", str(src))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="disk full"):
        score_corpus(DocStatsScorer(), Corpus(corpus_dir), tmp_path / "s2")
    monkeypatch.setattr(os, "replace", real_replace)
    assert not list((tmp_path / "s2").glob(".tmp-*")), "no temporary file is left behind"


@pytest.mark.parametrize(
    "override",
    [
        "select.threshold=.nan",
        "select.keep=true",
        "select.keep=.inf",
        "tok.vocab_size=1000000000000",
    ],
)
def test_nonsense_settings_are_refused_before_any_work(tmp_path: Path, override: str) -> None:
    data = {
        "name": "r",
        "corpus": {"paths": [str(tmp_path)]},
        "steps": [
            {
                "select": {
                    "scores": [str(tmp_path)],
                    "column": "q",
                    "policy": "threshold",
                    "threshold": 0.5,
                }
            },
            {"tokenizer": {"name": "tok"}},
        ],
    }
    with pytest.raises(RecipeError):
        parse_recipe(data, [override])
    with pytest.raises(ValueError):
        SelectConfig(column="q", policy="threshold", threshold=float("nan"))
    with pytest.raises(ValueError):
        SelectConfig(column="q", keep=True)


def test_vocab_size_far_too_large_is_an_error_not_an_abort(
    corpus_dir: Path, tmp_path: Path
) -> None:
    from assay.common.tokenizer import train_tokenizer

    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(Corpus(corpus_dir), 10**12, tmp_path / "tok")


def test_stats_on_the_demo_folder_and_bookkeeping_in_globs(
    tmp_path: Path, demo_dir: Path, corpus_dir: Path
) -> None:
    _cli_ok = cli.invoke(app, ["stats", str(demo_dir), "--out", str(corpus_dir.parent / "st")])
    assert _cli_ok.exit_code == 0, _cli_ok.output
    stats = json.loads((corpus_dir.parent / "st" / "stats.json").read_text())
    assert stats["docs"] > 0  # manifest.json is not read as a shard
    (corpus_dir / "_stats").mkdir()
    write_jsonl(corpus_dir / "_stats" / "x.jsonl", [{"id": "no", "text": "bookkeeping"}])
    write_jsonl(corpus_dir / "_scratch.jsonl", [{"id": "no2", "text": "bookkeeping"}])
    df = read_all(Corpus(str(corpus_dir / "**" / "*.jsonl")))
    assert df.height == 120 and "no" not in df.get_column("id").to_list()


def test_dictionary_encoded_parquet_text_is_read(tmp_path: Path, real_texts: list[str]) -> None:
    df = pl.DataFrame({"id": [f"d{i}" for i in range(20)], "text": real_texts[:20]})
    df.with_columns(pl.col("text").cast(pl.Categorical)).write_parquet(tmp_path / "cat.parquet")
    out = read_all(Corpus(tmp_path / "cat.parquet"))
    assert out.get_column("text").to_list() == real_texts[:20]


# ---------------------------------------------------------------------------------------------
# A recipe's seed reaches every seeded component


def test_the_recipe_seed_reaches_a_random_scorer(tmp_path: Path, corpus_dir: Path) -> None:
    def scores(seed: int) -> list[float]:
        data = _recipe(corpus_dir, tmp_path / f"run{seed}")
        data["steps"] = [{"score": {"scorer": "random"}}]
        outcome = run_recipe(parse_recipe(data, [f"seed={seed}"]), progress=False)
        folder = Path(outcome.step("score").outputs["scores"])
        return pl.read_parquet(folder / "a.parquet").get_column("random").to_list()

    assert scores(0) != scores(1)
