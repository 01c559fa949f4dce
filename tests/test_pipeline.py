"""Running recipes: run directories, reuse, invalidation, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.recipe import parse_recipe, run_recipe


def _recipe(demo_dir: Path, run_dir: Path, **select: object) -> dict:
    return {
        "name": "mini",
        "seed": 0,
        "corpus": {"paths": [str(demo_dir / "train")]},
        "steps": [
            {
                "score": {
                    "name": "quality",
                    "scorer": "fasttext",
                    # one fastText thread: two runs train the same classifier
                    "params": {
                        "column": "quality",
                        "params": {"lr": 0.3, "epoch": 15, "thread": 1},
                    },
                    "fit": {
                        "positive": {"paths": [str(demo_dir / "heldout" / "math.jsonl.gz")]},
                        "n": 300,
                    },
                }
            },
            {"score": {"name": "doc_stats", "scorer": "doc_stats"}},
            {
                "select": {
                    "scores": ["quality", "doc_stats"],
                    "column": "quality",
                    "keep": 0.25,
                    "by": "chars",
                    **select,
                }
            },
            # a step may read what an earlier step wrote
            {
                "stats": {
                    "name": "selected_stats",
                    "corpus": {"paths": [str(run_dir / "select" / "selected")]},
                }
            },
        ],
    }


def _run(demo_dir: Path, run_dir: Path, overrides: list[str] | None = None, **select: object):
    return run_recipe(
        parse_recipe(_recipe(demo_dir, run_dir, **select), overrides),
        run_dir=run_dir,
        progress=False,
    )


def test_run_directory_is_self_describing(tmp_path: Path, demo_dir: Path) -> None:
    run_dir = tmp_path / "run"
    outcome = _run(demo_dir, run_dir)
    assert {p.name for p in run_dir.iterdir()} >= {
        "recipe.yaml",
        "env.json",
        "inputs.json",
        "quality",
        "doc_stats",
        "select",
        "selected_stats",
    }
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["polars"] and env["seed"] == 0
    inputs = json.loads((run_dir / "inputs.json").read_text())
    assert any(k.endswith("math-00000.jsonl.gz") for k in inputs)
    assert all("sha256_edges" in v for v in inputs.values())
    assert (run_dir / "quality" / "model" / "model.bin").exists()
    sel = outcome.step("select").summary
    assert abs(sel["kept_fraction"] - 0.25) < 0.02
    # the classifier was trained on math: math dominates the selection
    assert sel["groups"]["math"]["kept_docs"] > sel["groups"]["code"]["kept_docs"]
    stats = outcome.step("selected_stats").summary
    assert stats["docs"] == sel["kept_docs"]
    assert [s.status for s in outcome.steps] == ["ran"] * 4


def test_rerun_reuses_and_changed_steps_are_redone(tmp_path: Path, demo_dir: Path) -> None:
    run_dir = tmp_path / "run"
    _run(demo_dir, run_dir)
    model_mtime = (run_dir / "quality" / "model" / "model.bin").stat().st_mtime_ns
    again = _run(demo_dir, run_dir)
    assert [s.status for s in again.steps] == ["reused"] * 4
    changed = _run(demo_dir, run_dir, ["select.keep=0.1"])
    assert [s.status for s in changed.steps] == ["reused", "reused", "ran", "ran"]
    assert (
        run_dir / "quality" / "model" / "model.bin"
    ).stat().st_mtime_ns == model_mtime  # never re-scored
    assert abs(changed.step("select").summary["kept_fraction"] - 0.1) < 0.02
    refit = _run(demo_dir, run_dir, ["quality.fit.n=200"])
    assert [s.status for s in refit.steps] == ["ran", "reused", "ran", "ran"]


def test_same_seed_same_selection_bit_for_bit(tmp_path: Path, demo_dir: Path) -> None:
    a = _run(demo_dir, tmp_path / "a", policy="gumbel", tau=0.2)
    b = _run(demo_dir, tmp_path / "b", policy="gumbel", tau=0.2)
    files_a = sorted((tmp_path / "a" / "select" / "selected").glob("*.jsonl.gz"))
    assert files_a
    for f in files_a:
        assert f.read_bytes() == (tmp_path / "b" / "select" / "selected" / f.name).read_bytes()
    assert a.step("select").summary["kept_docs"] == b.step("select").summary["kept_docs"]


def test_overrides_need_a_recipe_file(tmp_path: Path, demo_dir: Path) -> None:
    with pytest.raises(ValueError, match="overrides apply to recipe files"):
        run_recipe(parse_recipe(_recipe(demo_dir, tmp_path)), ["seed=1"])


def test_tokenizer_train_proxy_and_eval_steps(tmp_path: Path, demo_dir: Path) -> None:
    data = {
        "name": "proxy",
        "corpus": {"paths": [str(demo_dir / "train")]},
        "steps": [
            {"select": {"scores": ["doc_stats"], "column": "alpha_frac", "keep": 0.8}},
            {"tokenizer": {"vocab_size": 512}},
            {
                "train_proxy": {
                    "corpus": {"step": "select"},
                    "tokens": 16 * 8 * 128,
                    "tokenizer": "tokenizer",
                    "heldout": {"paths": [str(demo_dir / "heldout")]},
                    "eval_docs": 5,
                    "train": {"batch_size": 8, "seq_len": 128},
                }
            },
            {"eval": {"model": "train_proxy", "tasks": ["assay_mmlu_dev"], "limit": 8}},
        ],
    }
    data["steps"].insert(0, {"score": {"name": "doc_stats", "scorer": "doc_stats"}})
    outcome = run_recipe(parse_recipe(data), run_dir=tmp_path / "run", progress=False)
    proxy = outcome.step("train_proxy")
    assert set(proxy.summary["bpb"]) == {"code", "math", "news", "reference"}
    assert proxy.summary["tokens"] == 16 * 8 * 128
    assert outcome.step("eval").summary["tasks"]["assay_mmlu_dev"]["n"] == 8
    assert (tmp_path / "run" / "runs.parquet").exists()
    again = run_recipe(parse_recipe(data), run_dir=tmp_path / "run", progress=False)
    assert [s.status for s in again.steps] == ["reused"] * 5
