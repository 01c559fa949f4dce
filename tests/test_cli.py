"""The CLI verbs: one per step, generated from its model, with clear errors and exit code 2.

A verb runs its step in the folder given by --out, laid out as that step's folder in a run
directory; a folder written by one verb can be given to the next as its corpus, scores, model
or tokenizer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_jsonl

from assay.cli import app

runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _assay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "assay.cli", *args],
        capture_output=True,
        text=True,
        env={"ASSAY_PROGRESS": "0", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_demo_stats_fit_score_select(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert "reference" in _ok(["demo-corpus", str(demo), "--size", "small"])
    assert "360 documents" in _ok(["stats", str(demo / "train")])
    _ok(["stats", str(demo / "train"), "--out", str(tmp_path / "st")])
    stats = json.loads((tmp_path / "st" / "stats.json").read_text())
    assert stats["docs"] == 360 and set(stats["groups"]) == {"news", "math", "code", "reference"}

    # a DCLM-style classifier: fit on held-out news and reference prose against the pool
    heldout = demo / "heldout"
    q = tmp_path / "q"
    out = _ok([
        "score", str(demo / "train"), "--scorer", "fasttext", "--fit-positive",
        str(heldout / "news.jsonl.gz"), "--fit-positive", str(heldout / "reference.jsonl.gz"),
        "--fit-n", "300", "--params", "column=quality", "--params", "params={lr: 0.3, epoch: 15}",
        "--out", str(q),
    ])  # fmt: skip
    assert "scored 360 documents" in out and "ROC AUC" in out
    assert (q / "model" / "model.bin").exists() and (q / "scores" / "_scores.json").exists()
    again = runner.invoke(app, ["score", str(demo / "train"), "--model", str(q), "--out", str(q)])
    assert again.exit_code != 0  # the same folder, another step's settings: refused
    # the classifier of that folder scores another copy of the corpus
    assert "scored 360" in _ok(
        ["score", str(demo / "train"), "--model", str(q), "--out", str(tmp_path / "q2")]
    )
    _ok(["score", str(demo / "train"), "--scorer", "doc_stats", "--out", str(tmp_path / "s"), "-j", "2"])  # fmt: skip
    out = _ok([
        "select", str(demo / "train"), "--scores", str(q), "--scores", str(tmp_path / "s"),
        "--column", "quality", "--keep", "0.2", "--by", "chars", "--out", str(tmp_path / "sel"),
    ])  # fmt: skip
    # a budget of 20% of the characters, filled with whole documents: the count whose
    # characters come closest to it (the last one may cross it; a document is ~0.3% here)
    share = float(re.search(r"= ([0-9.]+)% of chars", out).group(1))
    assert "kept per domain" in out and 19.0 <= share <= 21.0
    assert len(list((tmp_path / "sel" / "selected").glob("*.jsonl.gz"))) == 4
    # a folder written by a verb is the next verb's corpus
    assert "documents" in _ok(["stats", str(tmp_path / "sel")])
    assert "fasttext" in _ok(["scorers"])


def test_every_step_field_has_a_flag_and_every_flag_a_field() -> None:
    from assay.cli.steps import RUN_FLAGS, step_flags, step_verbs
    from assay.io.shards import ReadOptions

    def leaves(model: type, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        from assay.cli.steps import model_in
        from assay.recipe.spec import CorpusSpec

        out = set()
        for name, field in model.model_fields.items():
            inner = model_in(field.annotation)
            if inner is not None and not issubclass(inner, CorpusSpec):
                out |= leaves(inner, (*prefix, name))
            else:
                out.add((*prefix, name))
        return out

    verbs = step_verbs()
    assert {"score", "select", "train-proxy", "betr", "preselect", "mass", "mates", "cluster"} <= set(verbs)  # fmt: skip
    for verb, cls in verbs.items():
        flags = step_flags(cls)
        paths = {f.path for f in flags}
        positional = getattr(cls, "positional", None)
        expected = {p for p in leaves(cls) if p[0] not in ("kind", "name", "corpus", positional)}
        if "corpus" in cls.model_fields:
            expected |= {("read", f) for f in ReadOptions.model_fields}
        assert paths == expected, (verb, paths ^ expected)
        command = app.get_command(None, verb)  # type: ignore[arg-type]
        names = {p.name for p in command.params}
        generated = {f.dest for f in flags}
        assert names - generated - {"paths", "positional"} <= set(RUN_FLAGS), verb
        for flag in flags:
            assert flag.option.help, (verb, flag.option.opts)  # help text from the model


def test_help_explains_every_option() -> None:
    for verb in ("demo-corpus", "stats", "betr", "preselect", "score", "select", "run", "mates"):
        assert "Usage" in _ok([verb, "--help"])
    assert {"betr", "preselect", "random", "fasttext"} <= set(_ok(["scorers"]).split())
    assert "PATH[:SCORE]" in _ok(["preselect", "--help"])
    text = " ".join(_ok(["score", "--help"]).split())
    assert "--on-error" in text and "'skip' counts them" in text
    assert "--train-lr" in _ok(["train-proxy", "--help"])


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


def test_missing_inputs_and_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    result = _assay("stats", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "corpus file not found" in result.stderr
    assert "Traceback" not in result.stderr
    result = _assay("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "recipe not found" in result.stderr
    result = _assay("select", str(tmp_path), "--scores", str(tmp_path), "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.returncode == 2 and "--column" in result.stderr  # a missing field, by its flag
    result = _assay("select", str(tmp_path), "--column", "q", "--keep", "2", "--scores", "s", "--out", "o")  # fmt: skip
    assert result.returncode == 2 and "--keep" in result.stderr and "less than or equal" in result.stderr  # fmt: skip


def test_train_tokenizer_train_proxy_and_eval(tmp_path: Path, demo_dir: Path) -> None:
    tok = tmp_path / "tok"
    _ok(["train-tokenizer", str(demo_dir / "train"), "--vocab-size", "512", "--out", str(tok)])
    assert (tok / "tokenizer" / "tokenizer.json").exists()
    out = _ok([
        "train-proxy", str(demo_dir / "train"), "--out", str(tmp_path / "run"), "--tokens", "20480",
        "--mixture", "news=0.5,code=0.5", "--tokenizer", str(tok), "--heldout", str(demo_dir / "heldout"),
        "--eval-docs", "5", "--train-batch-size", "8", "--train-seq-len", "128",
        "--runs-table", str(tmp_path / "runs.parquet"),
    ])  # fmt: skip
    assert "held-out bits per byte" in out and "news" in out and "20,480 tokens" in out
    assert (tmp_path / "run" / "run" / "model" / "model.safetensors").exists()
    assert (tmp_path / "runs.parquet").exists()
    out = _ok([
        "eval", str(tmp_path / "run"), "--heldout", str(demo_dir / "heldout"), "--eval-docs", "5",
        "--tasks", "assay_champ", "--limit", "8", "--out", str(tmp_path / "ev"),
    ])  # fmt: skip
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(result["bpb"]) == {"code", "math", "news", "reference"}
    assert result["tasks"]["assay_champ"]["n"] == 8 and "assay_champ" in out
    bad = _assay(
        "train-proxy", str(demo_dir / "train"), "--out", str(tmp_path / "r2"), "--tokens", "20480",
        "--mixture", "poetry=1", "--tokenizer", str(tok),
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown domains ['poetry']" in bad.stderr


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
        "--embedder", str(static_model), "--params", "lr=0.3", "--params", "epoch=20", "--no-progress",
    ])  # fmt: skip
    assert "270 target examples ranked 300 sampled documents" in out
    assert "30 positives" in out and "worst positive rank" in out and "ROC AUC" in out
    scorer = load_scorer(tmp_path / "betr" / "model")
    assert scorer.kind == "betr" and scorer.columns == ["betr"]
    assert scorer.report["targets"] == 270 and scorer.report["sample"] == 300
    assert (tmp_path / "betr" / "scores" / "_scores.json").exists()
    assert "scored 360 documents" in _ok(
        ["score", train, "--model", str(tmp_path / "betr"), "--out", str(tmp_path / "s")]
    )

    # a target file with chosen fields, a subset of it, mean aggregation and a column name
    items = [{"question": f"What is {i} + {i}?", "solution": f"It is {2 * i}."} for i in range(30)]
    write_jsonl(tmp_path / "t" / "targets.jsonl", items)
    out = _ok([
        "betr", train, "--targets", str(tmp_path / "t" / "targets.jsonl"), "--targets-fields", "question",
        "--targets-fields", "solution", "--targets-max-items", "12", "--out", str(tmp_path / "b2"),
        "--sample", "200", "--embedder", str(static_model), "--aggregation", "mean",
        "--positive-fraction", "0.2", "--column", "arith", "--params", "lr=0.3", "--seed", "1", "--no-progress",
    ])  # fmt: skip
    assert "12 target examples ranked 200 sampled documents (mean aggregation); 40 positives" in out
    assert "worst positive rank" not in out  # only max aggregation has one
    again = load_scorer(tmp_path / "b2" / "model")
    assert again.columns == ["arith"] and again.get_config()["aggregation"] == "mean"
    assert again.get_config()["params"]["lr"] == 0.3

    # an unknown field names the record's fields
    bad = _assay(
        "betr", train, "--targets", str(tmp_path / "t" / "targets.jsonl"), "--targets-fields", "answer",
        "--out", str(tmp_path / "b3"), "--embedder", str(static_model),
    )  # fmt: skip
    assert bad.returncode == 2 and "no field 'answer'" in bad.stderr


def test_betr_empty_targets_is_a_one_line_error(tmp_path: Path, demo_dir: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    result = _assay(
        "betr", str(demo_dir / "train"), "--targets", str(tmp_path / "empty.jsonl"),
        "--out", str(tmp_path / "b"), "--embedder", "static",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "no target examples" in result.stderr
    assert "empty.jsonl" in result.stderr and "Traceback" not in result.stderr
    result = _assay(
        "betr", str(demo_dir / "train"), "--targets", str(tmp_path / "nope.jsonl"),
        "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert result.returncode == 2 and "target file" in result.stderr
    assert "does not exist" in result.stderr


def test_family_model_specs() -> None:
    from assay.recipe.steps.preselect import FamilyModel

    def spec(s: str) -> dict:
        return FamilyModel.model_validate(s).model_dump(exclude_none=True)

    assert spec("runs/a/model") == {"path": "runs/a/model"}
    assert spec("runs/a/model:0.42") == {"path": "runs/a/model", "score": 0.42}
    assert spec("m:-1e-3") == {"path": "m", "score": -0.001}
    # a ':' that is not followed by a number belongs to the path
    assert spec("C:/models/x") == {"path": "C:/models/x"}
    assert spec("a:b/model:2") == {"path": "a:b/model", "score": 2.0}
    assert spec(":0.5") == {"path": ":0.5"}


def test_preselect_bad_input(tmp_path: Path, demo_dir: Path) -> None:
    train = str(demo_dir / "train")
    # fewer than three models: a usage error before any model is loaded
    two = _assay(
        "preselect", train, "--family-models", str(tmp_path / "a:0.1"),
        "--family-models", str(tmp_path / "b:0.2"), "--out", str(tmp_path / "p"),
    )  # fmt: skip
    assert two.returncode == 2 and "at least 3 models (got 2)" in two.stderr
    assert "--family-models" in two.stderr
    # a model without a score and no --targets to compute one
    three = ["--family-models", "x:0.1", "--family-models", "y:0.2", "--family-models", "z"]
    result = _assay("preselect", train, *three, "--out", str(tmp_path / "p"))
    assert result.returncode == 2 and "benchmark score, or targets" in result.stderr
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
        "preselect", pool, "--family-models", f"{nat}:0.5", "--family-models", f"{math}:0.7",
        "--family-models", f"{code}:0.2", "--calibration", "100", "--out", str(tmp_path / "ps"),
        "--params", "lr=0.3", "--params", "epoch=20",
    ])  # fmt: skip
    assert "model family, worst to best" in out and "perfect predictive strength" in out
    assert "positives" in out and "negatives" in out
    scorer = load_scorer(tmp_path / "ps" / "model")
    assert scorer.kind == "preselect" and scorer.columns == ["preselect"]
    fam = scorer.family
    assert fam["order"] == ["code", "run", "math"]  # worst to best by the given scores
    assert [m["benchmark_score"] for m in fam["models"]] == [0.5, 0.7, 0.2]
    rep = scorer.report["preselect"]
    assert rep["calibration_docs"] == 100 and rep["models"] == 3 and rep["pairs"] == 3
    assert rep["positives"] == rep["negatives"] >= 10
    assert f"{rep['perfect']:,} of 100 calibration documents" in out
    calib = pl.read_parquet(tmp_path / "ps" / "model" / "calibration.parquet")
    assert calib.height == 100 and {"bpc.run", "bpc.math", "bpc.code"} <= set(calib.columns)
    assert scorer.score(["a sentence about numbers"]).shape == (1,)

    # scores from target examples instead: minus bits per character on them
    _ok([
        "preselect", pool, "--family-models", nat, "--family-models", math, "--family-models", code,
        "--targets", "assay_champ", "--targets-max-items", "40", "--calibration", "100",
        "--out", str(tmp_path / "ps2"), "--column", "pre", "--positive-fraction", "0.2",
        "--params", "lr=0.3", "--seed", "1",
    ])  # fmt: skip
    again = load_scorer(tmp_path / "ps2" / "model")
    assert again.columns == ["pre"]
    scores = {m["name"]: m["benchmark_score"] for m in again.family["models"]}
    assert all(s < 0 for s in scores.values())  # minus bits per character
    assert scores["math"] > scores["code"]  # the math-heavy proxy predicts competition math better


def test_mixing_verbs(tmp_path: Path, demo_dir: Path, static_model: Path) -> None:
    c = tmp_path / "clusters"
    shown = _ok([
        "cluster", str(demo_dir / "train"), "--out", str(c), "--embedder", str(static_model),
        "--k-init", "6", "--n-domains", "3", "--heldout", str(demo_dir / "heldout"), "--no-progress",
    ])  # fmt: skip
    assert "3 domains from 6 clusters" in shown and "held-out corpus with these domains" in shown
    corpus, heldout = str(c), str(c / "heldout" / "corpus")  # the folder stands for its corpus
    m = tmp_path / "entropy"
    shown = _ok(["mixture", corpus, "--method", "entropy", "--out", str(m), "--vocab-size", "512"])
    assert "entropy" in shown and (m / "mixture.yaml").exists()
    small = [
        "--tokenizer", str(m / "tokenizer"), "--train-batch-size", "8", "--train-seq-len", "128",
        "--eval-docs", "5", "--heldout", heldout, "--no-progress",
    ]  # fmt: skip
    shown = _ok([
        "search", corpus, "--out", str(tmp_path / "s"), "--method", "regmix", "--tokens",
        str(3 * 8 * 128), "--runs", "3", "--candidates", "200", *small,
    ])  # fmt: skip
    assert "held-out Spearman" in shown and (tmp_path / "s" / "search" / "mixture.yaml").exists()
    shown = _ok([
        "bimix", corpus, "--out", str(tmp_path / "b"), "--tokens", str(8 * 8 * 128), "--runs", "3",
        "--evals", "4", *small,
    ])  # fmt: skip
    assert "BiMix law" in shown and "predicted total loss by budget" in shown
    # a mixture folder is a mixture to train on
    shown = _ok([
        "train-proxy", corpus, "--mixture", str(tmp_path / "b"), "--tokens", "2048",
        "--out", str(tmp_path / "p"), *small,
    ])  # fmt: skip
    assert "held-out bits per byte" in shown


def test_mixing_verbs_bad_input(tmp_path: Path, demo_dir: Path) -> None:
    train = str(demo_dir / "train")
    result = _assay(
        "search", train, "--out", str(tmp_path / "s"), "--tokens", "1000", "--runs", "2"
    )
    assert result.returncode == 2 and "--runs" in result.stderr  # at least 3 runs
    result = _assay("mixture", train, "--method", "zipf", "--out", str(tmp_path / "m"))
    assert result.returncode == 2 and "--method" in result.stderr


def test_mates_and_mass_verbs(tmp_path: Path, demo_dir: Path, static_model: Path) -> None:
    shown = _ok([
        "mates", str(demo_dir / "train"), "--targets", "assay_champ", "--targets-max-items", "12",
        "--out", str(tmp_path / "m"), "--stage-tokens", str(12 * 8 * 256), "--probes", "12",
        "--keep", "0.3", "--embedder", str(static_model),
        "--heldout", str(demo_dir / "heldout"), "--eval-docs", "5", "--no-progress",
    ])  # fmt: skip
    assert "stage 1 (mates)" in shown and "probes/s" in shown and "Spearman" in shown
    mates_help = _ok(["mates", "--help"])
    # MATES' targets are `--targets*`; MASS's `--reference` (examples) is not one of its flags
    assert "--targets-max-items" in mates_help and not re.search(r"--reference\b(?!-)", mates_help)
    assert "--reference-scoring" in mates_help
    shown = _ok([
        "mass", str(demo_dir / "train"), "--targets", "assay_champ", "--skills", "keyphrase",
        "--embedder", str(static_model), "--out", str(tmp_path / "mass"), "--no-progress",
    ])  # fmt: skip
    assert "skills from keyphrase" in shown and (tmp_path / "mass" / "model" / "scorer.json").exists()  # fmt: skip
    help_ = _ok(["mass", "--help"])
    assert "--targets-max-items" in help_ and "--reference" not in help_
