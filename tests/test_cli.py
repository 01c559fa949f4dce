"""The CLI verbs: each a thin wrapper, with clear errors and exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from assay.cli import app

runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_stats_train_score_select(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert "reference" in _ok(["demo-corpus", str(demo), "--size", "small"])
    stats = json.loads(_ok(["stats", str(demo / "train"), "--json"]))
    assert stats["docs"] == 360 and set(stats["groups"]) == {"news", "math", "code", "reference"}
    assert "by domain" in _ok(["stats", str(demo / "train")])

    out = _ok([
        "train-classifier", "-p", str(demo / "heldout" / "news.jsonl.gz"), "-p", str(demo / "heldout" / "reference.jsonl.gz"), "-n", str(demo / "train"),
        "--out", str(tmp_path / "clf"), "--n", "300", "--param", "lr=0.3", "--param", "epoch=15",
    ])  # fmt: skip
    assert "held-out accuracy" in out
    assert "scored 360 documents" in _ok(
        [
            "score",
            str(demo / "train"),
            "--model",
            str(tmp_path / "clf"),
            "--out",
            str(tmp_path / "q"),
        ]
    )
    assert "already done" in _ok(
        [
            "score",
            str(demo / "train"),
            "--model",
            str(tmp_path / "clf"),
            "--out",
            str(tmp_path / "q"),
        ]
    )
    _ok(
        [
            "score",
            str(demo / "train"),
            "--scorer",
            "doc_stats",
            "--out",
            str(tmp_path / "s"),
            "-j",
            "2",
        ]
    )
    out = _ok([
        "select", str(demo / "train"), "--scores", str(tmp_path / "q"), "--scores", str(tmp_path / "s"),
        "--column", "quality", "--keep", "0.2", "--by", "chars", "--out", str(tmp_path / "sel"),
    ])  # fmt: skip
    assert "kept per domain" in out and "20.0% of chars" in out
    assert len(list((tmp_path / "sel").glob("*.jsonl.gz"))) == 4
    assert "fasttext" in _ok(["scorers"])


def test_help_explains_every_option() -> None:
    for verb in ("demo-corpus", "stats", "train-classifier", "score", "select", "run"):
        text = _ok([verb, "--help"])
        assert "Usage" in text
    assert "--on-error" in _ok(["score", "--help"]) and "'skip' counts them" in _ok(
        ["score", "--help"]
    )


def _assay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "assay.cli", *args],
        capture_output=True,
        text=True,
        env={"ASSAY_PROGRESS": "0", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


@pytest.mark.parametrize("skip", [False, True])
def test_bad_input_exit_code_and_message(tmp_path: Path, real_texts: list[str], skip: bool) -> None:
    write_jsonl(
        tmp_path / "in" / "s.jsonl",
        [{"id": str(i), "text": t} for i, t in enumerate(real_texts[:5])],
        raw_lines={3: b'{"id": "3", "text": 12'},
    )
    args = ["score", str(tmp_path / "in"), "--scorer", "doc_stats", "--out", str(tmp_path / "o")]
    result = _assay(*args, *(["--on-error", "skip"] if skip else []))
    if skip:
        assert result.returncode == 0, result.stderr
        assert "skipped {'malformed_json': 1}" in result.stdout
    else:
        assert result.returncode == 2
        assert "error:" in result.stderr and "s.jsonl, line 4: malformed JSON" in result.stderr


def test_missing_inputs_are_one_line_errors(tmp_path: Path) -> None:
    result = _assay("stats", str(tmp_path / "nope.jsonl"))
    assert (
        result.returncode == 2
        and "corpus file not found" in result.stderr
        and "Traceback" not in result.stderr
    )
    result = _assay("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "recipe not found" in result.stderr


def test_train_tokenizer_train_proxy_and_eval(tmp_path: Path, demo_dir: Path) -> None:
    _ok(
        [
            "train-tokenizer",
            str(demo_dir / "train"),
            "--vocab-size",
            "512",
            "--out",
            str(tmp_path / "tok"),
        ]
    )
    out = _ok([
        "train-proxy", str(demo_dir / "train"), "--out", str(tmp_path / "run"), "--tokens", "20480",
        "--mixture", "news=0.5,code=0.5", "--tokenizer", str(tmp_path / "tok"), "--heldout", str(demo_dir / "heldout"),
        "--eval-docs", "5", "--param", "batch_size=8", "--param", "seq_len=128", "--runs-table", str(tmp_path / "runs.parquet"),
    ])  # fmt: skip
    assert "held-out bits per byte" in out and "news" in out and "20,480 tokens" in out
    assert (tmp_path / "run" / "model" / "model.safetensors").exists() and (
        tmp_path / "runs.parquet"
    ).exists()
    args = ["eval", str(tmp_path / "run" / "model"), "--heldout", str(demo_dir / "heldout")]
    done = runner.invoke(
        app, [*args, "--eval-docs", "5", "--tasks", "assay_champ", "--limit", "8", "--json"]
    )
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)  # progress bars go to stderr
    assert set(result["bpb"]) == {"code", "math", "news", "reference"}
    assert result["tasks"]["assay_champ"]["n"] == 8
    bad = runner.invoke(
        app,
        [
            "train-proxy",
            str(demo_dir / "train"),
            "--out",
            str(tmp_path / "r2"),
            "--tokens",
            "20480",
            "--mixture",
            "poetry=1",
            "--tokenizer",
            str(tmp_path / "tok"),
        ],
    )
    assert bad.exit_code != 0 and "unknown domains ['poetry']" in str(bad.exception)
