"""Recipes with target-driven steps: betr, preselect (with a trained proxy family), compare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import write_jsonl

from assay.io.corpus import Corpus
from assay.recipe import RecipeError, parse_recipe, run_recipe

pytest.importorskip("fasttext")

PROXY = {"preset": "tiny", "train": {"batch_size": 8, "seq_len": 128}, "eval_docs": 10}


def _targeted(demo_dir: Path, static_model: Path) -> dict:
    """BETR vs random selection at the same character budget, each feeding a proxy."""
    heldout = {"paths": [str(demo_dir / "heldout"), str(demo_dir / "targets")]}
    select = {"keep": 0.2, "by": "chars", "group_by": None}
    return {
        "name": "targeted",
        "corpus": {"paths": [str(demo_dir / "train")]},
        "steps": [
            {
                "betr": {
                    "targets": {"source": "assay_champ"},
                    "sample": 300,
                    "embedder": str(static_model),
                    "params": {"lr": 0.3, "epoch": 20},
                }
            },
            {"select": {"name": "by_betr", "scores": "betr", "column": "betr", **select}},
            {"score": {"name": "random", "scorer": "random"}},
            {"select": {"name": "by_random", "scores": "random", "column": "random", **select}},
            {"tokenizer": {"vocab_size": 512}},
            *[
                {
                    "train_proxy": {
                        "name": f"proxy_{sel}",
                        "corpus": {"step": f"by_{sel}"},
                        "tokens": 32 * 8 * 128,
                        "tokenizer": "tokenizer",
                        "heldout": heldout,
                        **PROXY,
                    }
                }
                for sel in ("betr", "random")
            ],
            {"compare": {"runs": ["proxy_betr", "proxy_random"], "target": "competition_math"}},
        ],
    }


@pytest.mark.slow
def test_betr_random_proxies_and_compare(
    tmp_path: Path, demo_dir: Path, static_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_CACHE", str(tmp_path / "cache"))  # the embedding cache
    recipe = parse_recipe(_targeted(demo_dir, static_model))
    run_dir = tmp_path / "run"
    outcome = run_recipe(recipe, run_dir=run_dir, progress=False)
    assert [s.status for s in outcome.steps] == ["ran"] * 8

    betr = outcome.step("betr")
    assert betr.summary["fit"]["targets"] == 270 and betr.summary["fit"]["positives"] == 30
    assert betr.summary["docs"] == 360 and betr.summary["columns"] == ["betr"]
    assert (run_dir / "betr" / "model" / "labels.parquet").exists()
    for name in ("by_betr", "by_random"):
        sel = outcome.step(name).summary
        assert abs(sel["kept_fraction"] - 0.2) < 0.03, (name, sel["kept_fraction"])
    # BETR aimed at competition math keeps more math than a random draw of the same size
    kept = {
        name: pl.concat(
            [pl.read_ndjson(f) for f in (run_dir / name / "selected").glob("*.jsonl.gz")],
            how="diagonal_relaxed",
        )
        for name in ("by_betr", "by_random")
    }
    share = {n: (k.get_column("domain") == "math").mean() for n, k in kept.items()}
    assert share["by_betr"] > share["by_random"], share

    compare = json.loads((run_dir / "compare" / "compare.json").read_text())
    assert set(compare["runs"]) == {"proxy_betr", "proxy_random"}
    for row in compare["runs"].values():
        assert row["bpb.competition_math"] > 0
        assert {"bpb.math", "bpb.news", "bpb.code", "bpb.reference", "bpb.domain_mean"} <= set(row)
    assert compare["target"] == "competition_math"
    assert compare["best"] == min(
        compare["runs"], key=lambda n: compare["runs"][n]["bpb.competition_math"]
    )
    assert outcome.step("compare").outputs["compare"] == str(run_dir / "compare" / "compare.json")

    again = run_recipe(
        parse_recipe(_targeted(demo_dir, static_model)), run_dir=run_dir, progress=False
    )
    assert [s.status for s in again.steps] == ["reused"] * 8
    assert json.loads((run_dir / "compare" / "compare.json").read_text()) == compare

    # `assay run` on the same recipe as YAML reuses everything and prints the comparison
    out = _run_cli(tmp_path / "targeted.yaml", _targeted(demo_dir, static_model), run_dir)
    assert out.count(" reused ") == 8 and not re.search(r"\bran\b", out)
    assert "compare: held-out bits per byte, target competition_math" in out
    assert f"{compare['best']} (best)" in out and "competition_math" in out
    assert "270 target examples ranked 300 sampled documents" in out


def _run_cli(path: Path, data: dict, run_dir: Path) -> str:
    from click.testing import CliRunner

    from assay.cli.main import app

    path.write_text(yaml.safe_dump(data))
    args = ["run", str(path), "--run-dir", str(run_dir), "--no-progress"]
    result = CliRunner().invoke(app, args, catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout  # what `assay run` shows; its log lines go to stderr


def _short_pool(folder: Path, records: list[dict], chars: int) -> Path:
    """The demo documents cut to `chars` characters: a pool a tiny LM family scores in seconds."""
    by_domain: dict[str, list[dict]] = {}
    for r in records:
        by_domain.setdefault(r["domain"], []).append({**r, "text": r["text"][:chars]})
    for domain, rows in by_domain.items():
        write_jsonl(folder / f"{domain}.jsonl", rows)
    return folder


@pytest.mark.slow
def test_preselect_with_a_mixture_family(tmp_path: Path, demo_records: list[dict]) -> None:
    pool = _short_pool(tmp_path / "pool", demo_records, 400)
    data = {
        "name": "preselect",
        "corpus": {"paths": [str(pool)]},
        "steps": [
            {"tokenizer": {"vocab_size": 512}},
            {
                "preselect": {
                    "family": {
                        "vary": "mixture",
                        "n": 3,
                        "tokens": 20_000,
                        "preset": "tiny",
                        "tokenizer": "tokenizer",
                        "train": {"batch_size": 8, "seq_len": 128},
                    },
                    "targets": {"source": "assay_champ"},
                    "calibration": 300,
                    "params": {"lr": 0.3, "epoch": 20},
                }
            },
            {"select": {"scores": "preselect", "column": "preselect", "keep": 0.1, "by": "chars"}},
        ],
    }
    run_dir = tmp_path / "run"
    outcome = run_recipe(parse_recipe(data), run_dir=run_dir, progress=False)
    step = outcome.step("preselect")
    assert step.summary["docs"] == 360 and step.summary["columns"] == ["preselect"]
    fit = step.summary["fit"]["preselect"]
    assert fit["calibration_docs"] == 300 and fit["models"] == 3
    assert fit["positives"] == fit["negatives"] >= 10
    model = run_dir / "preselect" / "model"
    calib = pl.read_parquet(model / "calibration.parquet")
    assert calib.height == 300
    assert {f"bpc.mixture-{i}" for i in range(3)} <= set(calib.columns)
    family = json.loads((model / "family.json").read_text())
    assert sorted(family["order"]) == ["mixture-0", "mixture-1", "mixture-2"]
    scores = pl.concat(
        [pl.read_parquet(f) for f in (run_dir / "preselect" / "scores").glob("*.parquet")]
    )
    assert scores.height == 360 and scores.get_column("preselect").is_between(0, 1).all()
    assert abs(outcome.step("select").summary["kept_fraction"] - 0.1) < 0.03
    for i in range(3):  # the family's proxies live in the step's folder
        assert (run_dir / "preselect" / "family" / f"mixture-{i}" / "model").is_dir()

    again = run_recipe(parse_recipe(data), run_dir=run_dir, progress=False)
    assert [s.status for s in again.steps] == ["reused"] * 3
    out = _run_cli(tmp_path / "preselect.yaml", data, run_dir)
    assert "model family, worst to best: mixture-" in out and "perfect predictive strength" in out


# -- validation ------------------------------------------------------------------------------------


def _validate(*steps: dict) -> None:
    parse_recipe({"name": "v", "corpus": {"paths": ["data"]}, "steps": list(steps)})


def test_compare_needs_train_proxy_steps() -> None:
    with pytest.raises(RecipeError, match="'stats' is not an earlier train_proxy or mates step"):
        _validate({"stats": {}}, {"compare": {"runs": ["stats"]}})
    with pytest.raises(RecipeError, match="'later' is not an earlier train_proxy or mates step"):
        _validate(
            {"compare": {"runs": ["later"]}},
            {"train_proxy": {"name": "later", "tokens": 1000}},
        )


def test_preselect_needs_scores_or_targets() -> None:
    with pytest.raises(RecipeError, match="benchmark score, or targets"):
        _validate({"preselect": {"family": {"n": 3}}})
    with pytest.raises(RecipeError, match="benchmark score, or targets"):
        _validate(
            {
                "preselect": {
                    "family": {
                        "models": [
                            {"path": "a", "score": 1.0},
                            {"path": "b"},
                            {"path": "c", "score": 0.5},
                        ]
                    }
                }
            }
        )
    # scores for every model, or targets: both fine
    models = [{"path": p, "score": s} for p, s in (("a", 0.1), ("b", 0.2), ("c", 0.3))]
    _validate({"preselect": {"family": {"models": models}}})
    _validate({"preselect": {"targets": {"source": "assay_champ"}}})
    with pytest.raises(RecipeError, match=r"preselect\.family\.n"):
        _validate({"preselect": {"targets": {"source": "assay_champ"}, "family": {"n": 2}}})


def test_select_by_target_driven_steps_is_accepted() -> None:
    betr = {"betr": {"targets": {"source": "assay_champ"}}}
    pre = {"preselect": {"targets": {"source": "assay_champ"}}}
    recipe = parse_recipe({
        "name": "v", "corpus": {"paths": ["data"]},
        "steps": [
            betr, pre,
            {"select": {"name": "a", "scores": "betr", "column": "betr", "keep": 0.1}},
            {"select": {"name": "b", "scores": ["betr", "preselect"], "column": "preselect", "keep": 0.1}},
        ],
    })  # fmt: skip
    assert [s.kind for s in recipe.steps] == ["betr", "preselect", "select", "select"]
    assert recipe.steps[2].scores == ["betr"]
    # a step that writes no scores is still refused
    with pytest.raises(RecipeError, match="is a tokenizer step, not a score step"):
        _validate(
            {"tokenizer": {}}, {"select": {"scores": "tokenizer", "column": "x", "keep": 0.1}}
        )


def test_mass_step_reads_reference_as_targets() -> None:
    """`reference`, the mass step's name for its targets before assay said "targets"."""
    spec = {"source": "assay_champ", "max_items": 12}
    recipe = parse_recipe({
        "name": "m", "corpus": {"paths": ["data"]},
        "steps": [{"mass": {"name": "new", "targets": spec}}, {"mass": {"name": "old", "reference": spec}}],
    })  # fmt: skip
    new, old = recipe.steps
    assert old.targets == new.targets and old.targets.max_items == 12
    assert old.model_dump(exclude={"name"}) == new.model_dump(exclude={"name"})
    assert (
        "reference" not in new.model_dump()
        and new.model_dump()["targets"]["source"] == "assay_champ"
    )
    with pytest.raises(RecipeError, match="targets"):
        _validate({"mass": {"skills": "tags"}})


def test_mass_step_and_verb(tmp_path: Path, demo_dir: Path, static_model: Path) -> None:
    mass = {"targets": {"source": "assay_champ"}, "skills": "tags", "embedder": str(static_model)}
    keep = {"scores": "mass", "column": "mass", "keep": 0.2, "by": "chars", "group_by": None}
    data = {
        "name": "mass",
        "corpus": {"paths": [str(demo_dir / "train")]},
        "steps": [{"mass": mass}, {"select": keep}],
    }
    run_dir = tmp_path / "run"
    outcome = run_recipe(parse_recipe(data), run_dir=run_dir, progress=False)
    fit = outcome.step("mass").summary["fit"]
    assert fit["skills_source"] == "tags" and fit["reference_examples"] == 270
    assert fit["merged_skills"] <= fit["raw_skills"] and fit["edges"] > 0
    kept = pl.concat(list(Corpus(run_dir / "select" / "selected").iter_batches()), how="diagonal_relaxed")  # fmt: skip
    pool = pl.concat(list(Corpus(demo_dir / "train").iter_batches()), how="diagonal_relaxed")
    base = (pool.get_column("domain") == "math").mean()
    # skills of competition math pull math in: far above its share of the pool (0.57 vs 0.25)
    assert (kept.get_column("domain") == "math").mean() > 2 * base
    out = _run_cli(tmp_path / "mass.yaml", data, run_dir)
    assert out.count(" reused ") == 2 and "270 reference examples, skills from tags" in out


def test_mates_step_reads_reference_as_targets() -> None:
    """`reference`, the mates step's name for its targets before assay said "targets"."""
    spec = {"source": "assay_champ", "max_items": 12}
    common = {"stage_tokens": 1000, "train": {"batch_size": 8}}
    recipe = parse_recipe({
        "name": "m", "corpus": {"paths": ["data"]},
        "steps": [{"mates": {"name": "new", "targets": spec, **common}},
                  {"mates": {"name": "old", "reference": spec, **common}}],
    })  # fmt: skip
    new, old = recipe.steps
    assert old.targets == new.targets and old.targets.max_items == 12
    assert old.model_dump(exclude={"name"}) == new.model_dump(exclude={"name"})
    assert "reference" not in new.model_dump() and new.model_dump()["targets"] == {
        "source": "assay_champ", "fields": None, "max_items": 12
    }  # fmt: skip
    # a partial `train` applies over the staged defaults (one WSD schedule), not TrainConfig's
    assert new.train.batch_size == 8 and new.train.schedule == "wsd"
    with pytest.raises(RecipeError, match="targets"):
        _validate({"mates": {"stage_tokens": 1000}})


def test_mates_steps_and_compare(tmp_path: Path, demo_dir: Path, static_model: Path) -> None:
    staged = {
        "targets": {"source": "assay_champ", "max_items": 12},
        "stage_tokens": 12 * 8 * 128, "stages": 2, "keep": 0.3, "tokenizer": "tokenizer",
        "heldout": {"paths": [str(demo_dir / "heldout")]}, "eval_docs": 5,
        "train": {"batch_size": 8, "seq_len": 128},
    }  # fmt: skip
    mates = {**staged, "probes": 12, "embedder": str(static_model)}
    random = {**staged, "reference": staged["targets"]}
    del random["targets"]
    data = {
        "name": "mates",
        "corpus": {"paths": [str(demo_dir / "train")]},
        "steps": [
            {"tokenizer": {"vocab_size": 512}},
            {"mates": mates},
            # the targets under their former name, `reference`, still read
            {"mates": {**random, "name": "mates_random", "method": "random"}},
            {"compare": {"runs": ["mates", "mates_random"], "target": "math"}},
        ],
    }
    run_dir = tmp_path / "run"
    outcome = run_recipe(parse_recipe(data), run_dir=run_dir, progress=False)
    stages = outcome.step("mates").summary["stages"]
    assert [s["method"] for s in stages] == ["random", "mates"]
    assert stages[1]["probes_per_second"] > 0 and stages[1]["spearman"] is not None
    assert [s["method"] for s in outcome.step("mates_random").summary["stages"]] == ["random"] * 2
    compare = outcome.step("compare").summary
    assert set(compare["runs"]) == {"mates", "mates_random"} and compare["best"] in compare["runs"]
    out = _run_cli(tmp_path / "mates.yaml", data, run_dir)
    assert out.count(" reused ") == 4 and "mates stage 1 (mates)" in out
