"""Recipes with mixing steps on an unlabeled corpus: cluster, search (RegMix), bimix, a
baseline mixture, proxies trained on what they chose, and compare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from assay.recipe import RecipeError, parse_recipe, run_recipe

pytest.importorskip("lightgbm")

TRAIN = {"batch_size": 8, "seq_len": 128}
PROXY = {"preset": "tiny", "train": TRAIN, "eval_docs": 8}
CLUSTERED = {"step": "cluster"}
HELDOUT = {"step": "cluster", "output": "heldout"}


def _mixing(demo_dir: Path, static_model: Path) -> dict:
    fitting = {"corpus": CLUSTERED, "heldout": HELDOUT, "tokenizer": "tokenizer", **PROXY}
    search = {"method": "regmix", "tokens": 4 * 8 * 128, "runs": 4, "candidates": 300}
    search["regmix_top_k"] = 4
    bimix = {"tokens": 8 * 8 * 128, "runs": 3, "evals": 4, "budget": 12 * 8 * 128}
    bimix["min_share"] = 0.01  # a floor (none by default)
    entropy = {"name": "entropy", "method": "entropy", "corpus": CLUSTERED}
    entropy.update(entropy="von_neumann", embedder=str(static_model), max_docs=200)
    proxies = [
        {"name": f"proxy_{m}", "mixture": m, "tokens": 4 * 8 * 128, **fitting}
        for m in ("search", "bimix", "entropy", "natural")
    ]
    cluster = {"embedder": str(static_model), "k_init": 8, "n_domains": 3}
    cluster["heldout"] = {"paths": [str(demo_dir / "heldout")]}
    return {
        "name": "mixing",
        "corpus": {"paths": [str(demo_dir / "train")]},
        "steps": [
            {"cluster": cluster},
            {"tokenizer": {"corpus": CLUSTERED, "vocab_size": 512, "sample_docs": 500}},
            {"search": {**search, **fitting}},
            {"bimix": {**bimix, **fitting}},
            {"mixture": {**entropy, "tokenizer": "tokenizer"}},
            *[{"train_proxy": p} for p in proxies],
            {"compare": {"runs": [p["name"] for p in proxies], "target": "domain_mean"}},
        ],
    }


def test_mixing_recipe_end_to_end(demo_dir: Path, static_model: Path, tmp_path: Path) -> None:
    recipe = parse_recipe(_mixing(demo_dir, static_model))
    outcome = run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    cluster = outcome.step("cluster").summary
    domains = set(cluster["domains"])
    assert len(domains) == 3 and all(v["top_terms"] for v in cluster["domains"].values())

    search = outcome.step("search").summary
    assert set(search["mixture"]) == domains and search["iterations"] == [4]
    assert set(search["spearman"]) == {"lightgbm", "linear"}
    bimix = outcome.step("bimix").summary
    assert set(bimix["mixture"]) == domains
    assert sum(bimix["mixture"].values()) == pytest.approx(1.0)
    assert set(bimix["extrapolation_mean_rel_error"]) == domains
    fit = json.loads(Path(outcome.step("bimix").outputs["fit"]).read_text())
    # the plots land in the run directory
    assert (tmp_path / "run" / "bimix" / "bimix" / "fits.png").stat().st_size > 2_000
    assert (tmp_path / "run" / "search" / "search" / "predicted_vs_measured.png").exists()
    assert len(fit["runs"]) == 3 and len(fit["budget_curve"]) == 6
    entropy = outcome.step("entropy").summary
    assert set(entropy["entropies"]) == domains
    assert all(v["von_neumann"] > 0 for v in entropy["entropies"].values())
    assert bimix["unit"] == "loss" and fit["unit"] == "loss"

    # each proxy trained on the mixture its step chose, evaluated on the clustered held-out set
    for m in ("search", "bimix", "entropy"):
        chosen = yaml.safe_load(Path(outcome.step(m).outputs["mixture"]).read_text())
        run = outcome.step(f"proxy_{m}").summary
        assert set(run["bpb"]) == domains
        assert set(run["effective_mixture"]) <= set(chosen)
        assert sum(run["effective_mixture"].values()) == pytest.approx(1.0)
    assert min(bimix["mixture"].values()) >= 0.01 - 1e-9  # the floor
    compare = outcome.step("compare").summary
    assert compare["target"] == "domain_mean" and compare["best"] in compare["runs"]

    # its report draws every mixing step's section (search, bimix, mixture, proxies)
    from assay.report import write_report

    html = write_report(tmp_path / "run").read_text(encoding="utf-8")
    alts = set(re.findall(r'<img class="plot" alt="([^"]*)"', html))
    assert {"chosen mixture", "predicted vs measured", "proxy learning curves"} <= alts
    assert {"BiMix fits: measured points, fitted curves", "predicted loss by budget"} <= alts
    assert "BiMix law: predicted vs measured" in alts  # the law at the proxies of the run
    assert {"mixture weights", "learning curve", "mixture weights per step"} <= alts
    assert "could not be drawn" not in html and html.count('id="step-') == len(recipe.steps)

    again = run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    assert {s.status for s in again.steps} == {"reused"}
    assert again.step("search").summary["mixture"] == search["mixture"]


def test_mixing_steps_refuse_bad_input(demo_dir: Path, static_model: Path, tmp_path: Path) -> None:
    data = _mixing(demo_dir, static_model)
    with pytest.raises(RecipeError, match="mixture names 'cluster'"):
        parse_recipe(data, ["proxy_search.mixture=cluster"])
    bad = parse_recipe(data, ["search.runs=3", "search.method=climb", "search.split=[4,2,1,1]"])
    bad.steps = bad.steps[:3]
    with pytest.raises(ValueError, match="too small for 4 iterations"):
        run_recipe(bad, run_dir=tmp_path / "bad", progress=False)
    unknown = parse_recipe(data, ["proxy_natural.mixture={cluster_09: 1.0}"])
    unknown.steps = [unknown.steps[0], unknown.steps[1], unknown.steps[-2]]
    with pytest.raises(ValueError, match="unknown domains"):
        run_recipe(unknown, run_dir=tmp_path / "bad", progress=False)
