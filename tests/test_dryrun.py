"""`assay run --dry-run`: a recipe's plan and compute estimate, from the recipe alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from assay.cli import app
from assay.common.lm import count_parameters
from assay.proxies.model import build_model, preset_parameters
from assay.recipe import RecipeError, dump_recipe, load_recipe, parse_recipe
from assay.recipe.costs import Hardware
from assay.recipe.dryrun import plan_recipe
from assay.recipe.spec import Scale

RECIPES = Path(__file__).parent.parent / "recipes"
PAPER = sorted(RECIPES.glob("paper/*.yaml"))
ALL = sorted(RECIPES.glob("*.yaml")) + PAPER
runner = CliRunner()


def _dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """Run `assay run --dry-run ARGS` in an empty folder; nothing may appear in it."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--dry-run", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing written
    return result.output


def test_paper_recipes_exist() -> None:
    names = {p.stem for p in PAPER}
    assert {"preselect", "mates", "group_mates", "betr", "mass", "dsir", "climb", "regmix"} < names
    assert {"bimix", "dclm_fasttext", "ccnet"} < names


@pytest.mark.parametrize("recipe", ALL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recipe_dry_runs(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _dry_run(tmp_path, monkeypatch, str(recipe))
    parsed = load_recipe(recipe)
    assert f"recipe {parsed.name}: dry run" in out
    for i, step in enumerate(parsed.steps, 1):
        assert f"{i}. {step.name} ({step.kind}):" in out
    assert "total: " in out and "GPU-hours (H100 SXM, 40% MFU)" in out
    plan = plan_recipe(parsed)
    assert f"total: {plan.total_flops:.3g} FLOPs" in out
    if recipe.parent.name == "paper" and recipe.stem != "ccnet":
        assert plan.total_flops > 1e18  # paper scale: GPU work
        assert "/data/" in out  # the corpus paths a user replaces


def _llama_params(vocab: int, d: int, layers: int, ffn: int) -> int:
    """By hand: q, k, v, o + SwiGLU + two RMSNorms per layer, a final norm, tied embedding."""
    return layers * (4 * d * d + 3 * d * ffn + 2 * d) + d + vocab * d


def test_flops_match_a_hand_computation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # RegMix: 512 proxies of the `1m` preset (2 x 256, SwiGLU 512, vocab 50,432) on
    # 1,000 x 512 x 2,048 tokens each, then two 1B models (16 x 2048, SwiGLU 5,632) on 25B.
    n_proxy = _llama_params(50432, 256, 2, 512)
    n_1b = _llama_params(50304, 2048, 16, 5632)
    assert n_proxy == 14_222_592
    proxies = 6 * n_proxy * 512 * (1000 * 512 * 2048)
    targets = 2 * 6 * n_1b * 25_000_000_000
    hours = (proxies + targets) / (989e12 * 0.4) / 3600

    plan = plan_recipe(load_recipe(RECIPES / "paper/regmix.yaml"))
    assert math.isclose(plan.steps[0].flops, proxies, rel_tol=1e-12)
    assert math.isclose(plan.total_flops, proxies + targets, rel_tol=1e-12)
    assert math.isclose(plan.gpu_hours, hours, rel_tol=1e-12)
    out = _dry_run(tmp_path, monkeypatch, str(RECIPES / "paper/regmix.yaml"))
    assert f"6 x {n_proxy:.3g} x {512 * 1000 * 512 * 2048:.3g}" in out
    assert f"= {hours:,.1f} GPU-hours" in out


def test_mates_probes_and_embedding_by_hand() -> None:
    # 5 stages of 5.24B tokens (and the random twin's); 80K probes in each of 4 later stages:
    # one step on a 1,024-token sequence, then the loss on 1,024 targets of <= 1,024 tokens;
    # the influence model (110M) is fine-tuned on 4 x 80K probes of <= 1,024 tokens for 5
    # epochs, then scores 4 of the 5 pools of C4's 156B tokens.
    n = _llama_params(50304, 1024, 24, 2816)
    stage = 10_000 * 512 * 1024
    train = 2 * 6 * n * 5 * stage
    probes = 6 * n * 4 * 80_000 * 1024 + 2 * n * 4 * 80_000 * 1024 * 1024
    finetune = 6 * 110_000_000 * 4 * 80_000 * 1024 * 5
    embed = 2 * 110_000_000 * 156_000_000_000 * 4 / 5
    plan = plan_recipe(load_recipe(RECIPES / "paper/mates.yaml"))
    assert math.isclose(plan.total_flops, train + probes + finetune + embed, rel_tol=1e-12)


def test_hardware_flags_several_recipes_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    regmix, dsir = str(RECIPES / "paper/regmix.yaml"), str(RECIPES / "paper/dsir.yaml")
    # overrides apply to every recipe given (here a top-level key both have)
    args = [regmix, dsir, "run_dir=elsewhere", "--gpu", "A100", "--peak-tflops", "312"]
    out = _dry_run(tmp_path, monkeypatch, *args)
    assert "recipe regmix_paper" in out and "recipe dsir_paper" in out
    assert "run directory elsewhere" in out and "writes: elsewhere/search/" in out
    assert "A100, 312 TFLOP/s peak" in out and "(A100, 40% MFU)" in out
    slow = Hardware(gpu="A100", peak_tflops=312, mfu=0.4)
    total = plan_recipe(load_recipe(regmix)).total_flops
    assert f"= {slow.gpu_hours(total):,.1f} GPU-hours (A100" in out
    out = _dry_run(tmp_path, monkeypatch, regmix, "target_regmix.tokens=50000000000")
    doubled = plan_recipe(load_recipe(regmix, ["target_regmix.tokens=50000000000"]))
    assert math.isclose(doubled.steps[1].flops, 2 * doubled.steps[2].flops, rel_tol=1e-12)
    assert f"total: {doubled.total_flops:.3g} FLOPs" in out


def test_estimate_flags_need_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", str(RECIPES / "paper/dsir.yaml"), "--mfu", "0.5"])
    assert result.exit_code == 2 and "--mfu apply to --dry-run only" in result.output
    assert list(tmp_path.iterdir()) == []
    bad = runner.invoke(app, ["run", "--dry-run", str(RECIPES / "paper/dsir.yaml"), "--mfu", "2"])
    assert "--mfu: Input should be less than or equal to 1" in str(bad.exception)


def test_unknown_sizes_are_said_not_guessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = load_recipe(RECIPES / "paper/preselect.yaml")
    plan = plan_recipe(recipe)
    assert plan.unestimated == ["preselect"]  # calibration tokens need the pool's documents
    out = _dry_run(tmp_path, monkeypatch, str(RECIPES / "paper/preselect.yaml"))
    assert "unknown: scale.corpus_docs and scale.corpus_tokens" in out
    # a flag gives the pool's documents: 900,000 x 300B / 1B tokens per model, 2 x N each
    docs = 1_000_000_000
    known = plan_recipe(recipe, scale=Scale(corpus_docs=docs))
    assert known.unestimated == [] and known.scale.corpus_tokens == 300_000_000_000
    calibration = 900_000 * 300_000_000_000 / docs
    extra = sum(2 * n * calibration for n in recipe.scale.params.values())
    assert math.isclose(known.total_flops, plan.total_flops + extra, rel_tol=1e-12)
    out = _dry_run(
        tmp_path, monkeypatch, str(RECIPES / "paper/preselect.yaml"), "--corpus-docs", str(docs)
    )
    assert "unknown sizes" not in out and f"total: {known.total_flops:.3g} FLOPs" in out


def test_scale_is_a_recipe_key_a_run_ignores() -> None:
    recipe = load_recipe(RECIPES / "paper/mates.yaml", ["scale.corpus_docs=1000"])
    assert recipe.scale is not None and recipe.scale.corpus_docs == 1000
    assert parse_recipe(yaml.safe_load(dump_recipe(recipe))) == recipe
    with pytest.raises(RecipeError, match="corpus_tokens"):
        load_recipe(RECIPES / "paper/mates.yaml", ["scale.corpus_tokens=0"])


def test_attention_flops_are_optional() -> None:
    recipe = load_recipe(RECIPES / "paper/dsir.yaml")  # one 160m model, seq_len 128
    plain = plan_recipe(recipe).total_flops
    with_attention = plan_recipe(recipe, hardware=Hardware(attention=True)).total_flops
    assert math.isclose(with_attention - plain, 6 * 12 * 128 * 768 * 26_214_400_000, rel_tol=1e-12)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_preset_parameters_count_the_built_model(arch: str) -> None:
    for preset in ("tiny", "xs"):
        built = count_parameters(build_model(preset, 1000, seq_len=64, arch=arch))
        assert preset_parameters(preset, 1000, seq_len=64, arch=arch) == built
