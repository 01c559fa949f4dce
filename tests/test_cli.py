"""The CLI verbs: each a thin wrapper, with clear errors and exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from assay.cli.main import app

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
    verbs = (
        "demo-corpus",
        "stats",
        "train-classifier",
        "betr",
        "preselect",
        "score",
        "select",
        "run",
    )
    for verb in verbs:
        text = _ok([verb, "--help"])
        assert "Usage" in text
    assert {"betr", "preselect", "random", "fasttext"} <= set(_ok(["scorers"]).split())
    assert "PATH[:SCORE]" in _ok(["preselect", "--help"])
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


# -- target-driven scorers -------------------------------------------------------------------------


def _short_pool(folder: Path, records: list[dict], chars: int) -> Path:
    """The demo documents cut to `chars` characters: a pool a tiny LM family scores in seconds."""
    rows = [{**r, "text": r["text"][:chars]} for r in records]
    return write_jsonl(folder / "pool.jsonl", rows).parent


def test_betr_verb(
    tmp_path: Path, demo_dir: Path, static_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.selection.base import load_scorer

    monkeypatch.setenv("ASSAY_CACHE", str(tmp_path / "cache"))  # the embedding cache
    train = str(demo_dir / "train")
    out = _ok([
        "betr", train, "--targets", "assay_champ", "--out", str(tmp_path / "betr"), "--sample", "300",
        "--embedder", str(static_model), "--param", "lr=0.3", "--param", "epoch=20", "--no-progress",
    ])  # fmt: skip
    assert "270 target examples ranked 300 sampled documents" in out
    assert "30 positives" in out and "worst positive rank" in out and "ROC AUC" in out
    assert f"assay score {train} --model {tmp_path / 'betr'}" in out
    scorer = load_scorer(tmp_path / "betr")
    assert scorer.kind == "betr" and scorer.columns == ["betr"]
    assert scorer.report["targets"] == 270 and scorer.report["sample"] == 300
    assert "scored 360 documents" in _ok(
        ["score", train, "--model", str(tmp_path / "betr"), "--out", str(tmp_path / "s")]
    )

    # a target file with chosen fields, a subset of it, mean aggregation and a column name
    items = [{"question": f"What is {i} + {i}?", "solution": f"It is {2 * i}."} for i in range(30)]
    write_jsonl(tmp_path / "t" / "targets.jsonl", items)
    out = _ok([
        "betr", train, "--targets", str(tmp_path / "t" / "targets.jsonl"), "--field", "question",
        "--field", "solution", "--max-targets", "12", "--out", str(tmp_path / "b2"), "--sample", "200",
        "--embedder", str(static_model), "--aggregation", "mean", "--positive-fraction", "0.2",
        "--column", "arith", "--param", "lr=0.3", "--seed", "1", "--no-progress",
    ])  # fmt: skip
    assert "12 target examples ranked 200 sampled documents (mean aggregation); 40 positives" in out
    assert "worst positive rank" not in out  # only max aggregation has one
    again = load_scorer(tmp_path / "b2")
    assert again.columns == ["arith"] and again.get_config()["aggregation"] == "mean"
    assert again.get_config()["params"]["lr"] == 0.3

    # an unknown field names the record's fields
    bad = runner.invoke(app, [
        "betr", train, "--targets", str(tmp_path / "t" / "targets.jsonl"), "--field", "answer",
        "--out", str(tmp_path / "b3"), "--embedder", str(static_model),
    ])  # fmt: skip
    assert bad.exit_code != 0 and "no field 'answer'" in str(bad.exception)
    assert not (tmp_path / "b3").exists()


def test_betr_empty_targets_is_a_one_line_error(tmp_path: Path, demo_dir: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    result = _assay(
        "betr", str(demo_dir / "train"), "--targets", str(tmp_path / "empty.jsonl"),
        "--out", str(tmp_path / "b"), "--embedder", "static",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "no target examples" in result.stderr
    assert "empty.jsonl" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()
    result = _assay(
        "betr", str(demo_dir / "train"), "--targets", str(tmp_path / "nope.jsonl"),
        "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert result.returncode == 2 and "target file" in result.stderr
    assert "does not exist" in result.stderr


def test_preselect_model_specs() -> None:
    from assay.cli.main import _model_spec

    assert _model_spec("runs/a/model") == {"path": "runs/a/model"}
    assert _model_spec("runs/a/model:0.42") == {"path": "runs/a/model", "score": 0.42}
    assert _model_spec("m:-1e-3") == {"path": "m", "score": -0.001}
    # a ':' that is not followed by a number belongs to the path
    assert _model_spec("C:/models/x") == {"path": "C:/models/x"}
    assert _model_spec("a:b/model:2") == {"path": "a:b/model", "score": 2.0}
    assert _model_spec(":0.5") == {"path": ":0.5"}


def test_preselect_bad_input(tmp_path: Path, demo_dir: Path) -> None:
    train = str(demo_dir / "train")
    # fewer than three models: a usage error before any model is loaded
    two = runner.invoke(app, [
        "preselect", train, "-m", str(tmp_path / "a:0.1"), "-m", str(tmp_path / "b:0.2"), "--out", str(tmp_path / "p"),
    ])  # fmt: skip
    assert two.exit_code == 2 and "at least 3 models (got 2)" in two.output
    assert "--model" in two.output
    # a model without a score and no --targets to compute one
    args = [
        "preselect",
        train,
        "-m",
        "x:0.1",
        "-m",
        "y:0.2",
        "-m",
        "z",
        "--out",
        str(tmp_path / "p"),
    ]
    result = _assay(*args)
    assert result.returncode == 2 and "needs a benchmark score per model" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "p").exists()


@pytest.fixture(scope="module")
def proxy_family(
    tmp_path_factory: pytest.TempPathFactory, trained_proxy, token_cache, proxy_tokenizer
) -> list[str]:
    """Three tiny proxies of different data: natural (200 steps), math-heavy, code-heavy (40)."""
    from assay.proxies.train import train_proxy

    root = tmp_path_factory.mktemp("family")
    dirs = [trained_proxy.model_dir]
    for heavy in ("math", "code"):
        mix = {d: 0.7 if d == heavy else 0.1 for d in ("math", "news", "code", "reference")}
        run = train_proxy(
            token_cache, mix, 40 * 8 * 128, "tiny", 0, out_dir=root / heavy, tokenizer=proxy_tokenizer,
            progress=False, batch_size=8, seq_len=128,
        )  # fmt: skip
        dirs.append(run.model_dir)
    return dirs


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*perfect predictive strength:UserWarning")  # tiny family
def test_preselect_verb(tmp_path: Path, demo_records: list[dict], proxy_family: list[str]) -> None:
    import polars as pl

    from assay.selection.base import load_scorer

    pool = str(_short_pool(tmp_path / "pool", demo_records, 300))
    nat, math, code = proxy_family
    out = _ok([
        "preselect", pool, "-m", f"{nat}:0.5", "-m", f"{math}:0.7", "--model", f"{code}:0.2",
        "--calibration", "100", "--out", str(tmp_path / "ps"), "--param", "lr=0.3", "--param", "epoch=20",
    ])  # fmt: skip
    assert "model family, worst to best" in out and "perfect predictive strength" in out
    assert "positives" in out and "negatives" in out
    assert f"--model {tmp_path / 'ps'}" in out
    scorer = load_scorer(tmp_path / "ps")
    assert scorer.kind == "preselect" and scorer.columns == ["preselect"]
    fam = scorer.family
    assert fam["order"] == ["code", "run", "math"]  # worst to best by the given scores
    assert [m["benchmark_score"] for m in fam["models"]] == [0.5, 0.7, 0.2]
    rep = scorer.report["preselect"]
    assert rep["calibration_docs"] == 100 and rep["models"] == 3 and rep["pairs"] == 3
    assert rep["positives"] == rep["negatives"] >= 10
    assert f"{rep['perfect']:,} of 100 calibration documents" in out
    calib = pl.read_parquet(tmp_path / "ps" / "calibration.parquet")
    assert calib.height == 100 and {"bpc.run", "bpc.math", "bpc.code"} <= set(calib.columns)
    assert scorer.score(["a sentence about numbers"]).shape == (1,)

    # scores from target examples instead: minus bits per character on them
    out = _ok([
        "preselect", pool, "-m", nat, "-m", math, "-m", code, "--targets", "assay_champ",
        "--max-targets", "40", "--calibration", "100", "--out", str(tmp_path / "ps2"),
        "--column", "pre", "--positive-fraction", "0.2", "--param", "lr=0.3", "--seed", "1",
    ])  # fmt: skip
    again = load_scorer(tmp_path / "ps2")
    assert again.columns == ["pre"]
    scores = {m["name"]: m["benchmark_score"] for m in again.family["models"]}
    assert all(s < 0 for s in scores.values())  # minus bits per character
    assert scores["math"] > scores["code"]  # the math-heavy proxy predicts competition math better
    for name, s in scores.items():
        assert f"{s:.4g}" in out and name in out


def test_mixing_verbs(tmp_path: Path, demo_dir: Path, static_model: Path) -> None:
    c = tmp_path / "clusters"
    shown = _ok([
        "cluster", str(demo_dir / "train"), "--out", str(c), "--embedder", str(static_model),
        "--k-init", "6", "--n-domains", "3", "--heldout", str(demo_dir / "heldout"), "--no-progress",
    ])  # fmt: skip
    assert "3 domains from 6 clusters" in shown and "relabelled held-out corpus" in shown
    corpus, heldout = str(c / "corpus"), str(c / "heldout" / "corpus")
    shown = _ok(["mixture", "entropy", corpus, "--out", str(tmp_path / "entropy.yaml"), "--vocab-size", "512"])  # fmt: skip
    assert "conditional" in shown and (tmp_path / "entropy.yaml").exists()
    tok = tmp_path / ".entropy-tokens" / "tokenizer"
    small = ["--tokenizer", str(tok), "--param", "batch_size=8", "--param", "seq_len=128", "--eval-docs", "5", "--heldout", heldout, "--no-progress"]  # fmt: skip
    shown = _ok(["search", corpus, "--out", str(tmp_path / "s"), "--method", "regmix", "--tokens", str(3 * 8 * 128), "--runs", "3", "--candidates", "200", *small])  # fmt: skip
    assert "held-out Spearman" in shown and (tmp_path / "s" / "mixture.yaml").exists()
    shown = _ok(["bimix", corpus, "--out", str(tmp_path / "b"), "--tokens", str(8 * 8 * 128), "--runs", "3", "--evals", "4", *small])  # fmt: skip
    assert "BiMix law" in shown and "predicted total loss by budget" in shown


def test_mixing_verbs_bad_input(tmp_path: Path, demo_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "assay.cli", "search", str(demo_dir / "train"), "--out", str(tmp_path / "s"), "--tokens", "1000", "--runs", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "too small for 3 iterations" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "assay.cli", "mixture", "zipf", str(demo_dir / "train"), "--out", str(tmp_path / "m.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "unknown baseline 'zipf'" in result.stderr


def test_mates_and_mass_verbs(tmp_path: Path, demo_dir: Path, static_model: Path) -> None:
    shown = _ok([
        "mates", str(demo_dir / "train"), "--reference", "assay_champ", "--max-reference", "12",
        "--out", str(tmp_path / "m"), "--stage-tokens", str(12 * 8 * 256), "--probes", "12",
        "--keep", "0.3", "--embedder", str(static_model),
        "--heldout", str(demo_dir / "heldout"), "--eval-docs", "5", "--no-progress",
    ])  # fmt: skip
    assert "stage 1 (mates)" in shown and "probes at" in shown and "Spearman" in shown
    shown = _ok([
        "mass", str(demo_dir / "train"), "--reference", "assay_champ", "--skills", "keyphrase",
        "--embedder", str(static_model), "--out", str(tmp_path / "mass"), "--no-progress",
    ])  # fmt: skip
    assert "skills from keyphrase" in shown and (tmp_path / "mass" / "scorer.json").exists()
