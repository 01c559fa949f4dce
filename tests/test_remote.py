"""Remote storage through fsspec, against a real S3-compatible server (moto's server mode on
127.0.0.1, started and stopped here) with s3fs as the client: a corpus read from S3, scores and
selections written there, a recipe whose run directory is there, killed and resumed elsewhere."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import upload

from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.io.scores import read_scores
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.score import score_corpus
from assay.selection.select import select
from assay.util.guard import UnsafeOutputError

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")


def _texts(corpus: Corpus) -> dict[str, str]:
    return {i: t for b in corpus.iter_batches() for i, t in zip(b["id"], b["text"], strict=True)}


def test_read_score_select_on_s3(s3, tmp_path: Path, demo_dir: Path) -> None:
    upload(s3, demo_dir / "train", "bkt/demo/train")
    local = Corpus(demo_dir / "train")
    remote = Corpus("s3://bkt/demo/train")
    assert [s.name for s in remote.shards] == [s.name for s in local.shards]
    assert _texts(remote) == _texts(local)

    result = score_corpus(DocStatsScorer(), remote, "s3://bkt/out/stats")
    assert result.ran == len(remote.shards)
    written = {p.split("/out/stats/", 1)[1] for p in s3.find("bkt/out/stats")}
    for s in remote.shards:  # each output, and the stats that say it is complete
        assert f"{s.stem}.parquet" in written and f"_stats/{s.name}.json" in written
    picked = select(remote, "s3://bkt/out/stats", "s3://bkt/out/sel", column="n_chars", keep=0.3)
    score_corpus(DocStatsScorer(), local, tmp_path / "stats")
    reference = select(local, tmp_path / "stats", tmp_path / "sel", column="n_chars", keep=0.3)
    assert picked.kept_docs == reference.kept_docs
    assert _texts(Corpus("s3://bkt/out/sel")) == _texts(Corpus(tmp_path / "sel"))

    # resumed from the remote alone: a fresh mirror finds every shard done
    shutil.rmtree(os.environ["ASSAY_REMOTE_CACHE"])
    again = score_corpus(DocStatsScorer(), remote, "s3://bkt/out/stats")
    assert again.ran == 0 and again.resumed == len(remote.shards)
    # worker processes read and publish too
    pooled = score_corpus(DocStatsScorer(), remote, "s3://bkt/out/j2", runner=LocalRunner(2))
    assert pooled.ran == len(remote.shards)
    pooled_scores = read_scores("s3://bkt/out/j2", remote).sort("id")
    assert pooled_scores.equals(read_scores("s3://bkt/out/stats", remote).sort("id"))

    with pytest.raises(UnsafeOutputError):
        score_corpus(DocStatsScorer(), remote, "s3://bkt/demo/train/scores")


def _recipe(corpus: str, run_dir: str) -> dict:
    return {
        "name": "remote",
        "corpus": {"paths": [corpus]},
        "run_dir": run_dir,
        "steps": [
            {"score": {"name": "stats", "scorer": "doc_stats"}},
            {"select": {"scores": ["stats"], "column": "n_words", "keep": 0.5, "by": "chars"}},
        ],
    }


def _run_stats(fs, run: str) -> dict:
    import json

    return json.loads(fs.cat_file(f"{run}/stats/scores/_stats.json"))


def test_a_recipe_on_s3_fails_midway_and_resumes_on_a_fresh_machine(
    s3, tmp_path: Path, demo_records: list[dict]
) -> None:
    from conftest import write_jsonl

    from assay.errors import InputError
    from assay.recipe.pipeline import run_recipe
    from assay.recipe.recipe import parse_recipe

    shards = tmp_path / "shards"
    for i in range(6):
        write_jsonl(shards / f"part-{i}.jsonl", demo_records[i * 40 : (i + 1) * 40])
    bad = [*demo_records[240:250], {"id": "broken", "text": 42}]
    write_jsonl(shards / "part-6.jsonl", bad)
    upload(s3, shards, "bkt/c2")
    data = _recipe("s3://bkt/c2", "s3://bkt/runs/r2")
    with pytest.raises(InputError, match=r"s3://bkt/c2/part-6\.jsonl, line 11"):
        run_recipe(parse_recipe(data), progress=False)
    done = [p for p in s3.find("bkt/runs/r2/stats/scores/_stats") if p.endswith(".json")]
    assert len(done) == 6  # the good shards are finished on the remote, the bad one is not

    # the input is fixed; another machine (no mirror) resumes: only the changed shard runs
    s3.pipe_file(
        "bkt/c2/part-6.jsonl",
        (shards / "part-6.jsonl").read_bytes().replace(b'"text": 42}', b'"text": "A sentence."}'),
    )
    shutil.rmtree(os.environ["ASSAY_REMOTE_CACHE"])
    outcome = run_recipe(parse_recipe(data), progress=False)
    stats = _run_stats(s3, "bkt/runs/r2")
    assert (stats["ran"], stats["resumed"]) == (1, 6)
    kept = outcome.step("select").summary["kept_docs"]
    assert 0 < kept < 251
    assert len(_texts(Corpus("s3://bkt/runs/r2/select/selected"))) == kept


def test_a_killed_cli_run_resumes_from_s3(s3, tmp_path: Path, demo_records: list[dict]) -> None:
    """SIGKILL while shards are being published; the second run (fresh mirror) completes, and
    the selection equals that of an uninterrupted local run, whenever the kill came."""
    import yaml
    from conftest import write_jsonl

    shards = tmp_path / "shards"
    for i in range(24):
        write_jsonl(shards / f"p{i:02d}.jsonl", demo_records[i * 15 : (i + 1) * 15])
    upload(s3, shards, "bkt/c3")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_recipe("s3://bkt/c3", "s3://bkt/runs/r3")))
    env = {**os.environ, "ASSAY_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "assay.cli", "run", str(recipe)], env=env)
    try:
        for _ in range(3000):  # until the first shard is published (or the run ends)
            if proc.poll() is not None or s3.exists("bkt/runs/r3/stats/scores/_stats"):
                break
            time.sleep(0.02)
            s3.invalidate_cache()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    shutil.rmtree(os.environ["ASSAY_REMOTE_CACHE"])
    again = subprocess.run(
        [sys.executable, "-m", "assay.cli", "run", str(recipe)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    stats = _run_stats(s3, "bkt/runs/r3")
    assert stats["ran"] + stats["resumed"] == 24

    local = _recipe(str(shards), str(tmp_path / "local-run"))
    from assay.recipe.pipeline import run_recipe
    from assay.recipe.recipe import parse_recipe

    run_recipe(parse_recipe(local), progress=False)
    assert _texts(Corpus("s3://bkt/runs/r3/select/selected")) == _texts(
        Corpus(tmp_path / "local-run" / "select" / "selected")
    )


def test_cli_verbs_write_and_read_s3(s3, demo_dir: Path) -> None:
    from click.testing import CliRunner

    from assay.cli import app

    upload(s3, demo_dir / "train", "bkt/cli/train")
    cli = CliRunner()
    res = cli.invoke(
        app, ["score", "s3://bkt/cli/train", "--scorer", "doc_stats", "--out", "s3://bkt/cli/st"]
    )
    assert res.exit_code == 0, res.output
    res = cli.invoke(
        app,
        [
            "select", "s3://bkt/cli/train", "--scores", "s3://bkt/cli/st", "--column", "n_chars",
            "--keep", "0.5", "--by", "docs", "--out", "s3://bkt/cli/sel",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    shutil.rmtree(os.environ["ASSAY_REMOTE_CACHE"])  # read back from the store alone
    kept = _texts(Corpus("s3://bkt/cli/sel/selected"))
    assert len(kept) == len(_texts(Corpus(demo_dir / "train"))) // 2
    # a step folder on the store stands for its corpus, as a local one does
    res = cli.invoke(app, ["stats", "s3://bkt/cli/sel"])
    assert res.exit_code == 0 and f"{len(kept)} documents" in res.output, res.output
    # the output may not be the input, or inside it
    res = cli.invoke(
        app,
        ["score", "s3://bkt/cli/train", "--scorer", "doc_stats", "--out", "s3://bkt/cli/train/x"],
    )
    assert isinstance(res.exception, UnsafeOutputError), res.output
    assert "lies inside the input s3://bkt/cli/train" in str(res.exception)


def test_files_written_without_atomic_path_reach_the_store(s3, demo_dir: Path) -> None:
    """A tokenizer folder is saved by transformers (not through assay's atomic writes); the
    step's folder is published when its writer is done."""
    from assay.recipe.pipeline import run_recipe
    from assay.recipe.recipe import parse_recipe

    upload(s3, demo_dir / "train", "bkt/tok/train")
    data = {
        "name": "tok",
        "corpus": {"paths": ["s3://bkt/tok/train"]},
        "run_dir": "s3://bkt/runs/tok",
        "steps": [{"tokenizer": {"vocab_size": 300, "sample_docs": 100}}],
    }
    run_recipe(parse_recipe(data), progress=False)
    s3.invalidate_cache()
    names = {p.rsplit("/", 1)[1] for p in s3.find("bkt/runs/tok/tokenizer")}
    assert {"tokenizer.json", "step.json"} <= names
    assert not any(n.startswith(".") for n in names)  # locks and temporary files stay local


def test_any_fsspec_store_memory(tmp_path: Path, demo_dir: Path, monkeypatch) -> None:
    """Not only S3: fsspec's in-memory store (one process) holds a corpus and its scores."""
    import fsspec

    monkeypatch.setenv("ASSAY_REMOTE_CACHE", str(tmp_path / "mirrors"))
    mem = fsspec.filesystem("memory")
    for f in sorted((demo_dir / "train").glob("*")):
        mem.pipe_file(f"/m/train/{f.name}", f.read_bytes())
    corpus = Corpus("memory://m/train")
    assert _texts(corpus) == _texts(Corpus(demo_dir / "train"))
    score_corpus(DocStatsScorer(), corpus, "memory://m/stats")
    assert {f"{s.stem}.parquet" for s in corpus.shards} <= {
        p.rsplit("/", 1)[1] for p in mem.find("/m/stats")
    }
    assert read_scores("memory://m/stats", corpus).height == len(_texts(corpus))
    # an object that exists is read as it is, even with glob characters in its name
    mem.pipe_file("/m/odd/a[1].jsonl", b'{"id": "x", "text": "A real sentence."}\n')
    mem.pipe_file("/m/odd/a1.jsonl", b'{"id": "y", "text": "Another sentence."}\n')
    assert list(_texts(Corpus("memory://m/odd/a[1].jsonl"))) == ["x"]
    assert list(_texts(Corpus("memory://m/odd/a[0-9].jsonl"))) == ["y"]  # absent: a glob
    mem.rm("/m", recursive=True)
