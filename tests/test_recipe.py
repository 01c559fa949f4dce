"""Recipe parsing, validation and dotted overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from assay.recipe import RecipeError, dump_recipe, load_recipe, parse_recipe
from assay.recipe.steps.score import ScoreStep
from assay.recipe.steps.select import SelectStep

BASE = {
    "name": "t",
    "corpus": {"paths": "data/x"},
    "steps": [
        {"score": {"name": "quality", "scorer": "fasttext", "fit": {"positive": {"paths": ["p"]}}}},
        {"kind": "score", "name": "stats", "scorer": "doc_stats"},
        {"select": {"scores": ["quality", "stats"], "column": "quality", "keep": 0.3}},
    ],
}


def test_both_step_forms_and_defaults() -> None:
    r = parse_recipe(BASE)
    assert [s.name for s in r.steps] == ["quality", "stats", "select"]
    assert isinstance(r.steps[0], ScoreStep) and r.steps[0].fit.negative == "corpus"
    sel = r.steps[2]
    assert isinstance(sel, SelectStep) and sel.policy == "topk" and sel.by == "docs"
    assert r.corpus.paths == ["data/x"] and Path(r.resolved_run_dir) == Path("runs/t")


def test_overrides_reach_steps_and_top_level_and_parse_yaml_values() -> None:
    r = parse_recipe(
        BASE,
        [
            "select.keep=0.2",
            "select.by=chars",
            "seed=3",
            "runner.workers=2",
            "corpus.paths=[a, b]",
            "quality.fit.n=50",
            "corpus.id_field=null",
        ],
    )
    sel = r.steps[2]
    assert sel.keep == 0.2 and sel.by == "chars"
    assert (
        r.seed == 3
        and r.runner.workers == 2
        and r.corpus.paths == ["a", "b"]
        and r.corpus.id_field is None
    )
    assert r.steps[0].fit.n == 50


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("select.kep=0.2", r"select\.kep: Extra inputs are not permitted"),
        (
            "selekt.keep=0.2",
            r"'selekt' is neither a recipe key .* nor a step \(quality, stats, select\)",
        ),
        ("select.keep=2", r"select\.keep: Input should be less than or equal to 1"),
        ("select.by=bytes", r"select\.by: Input should be 'docs', 'chars' or 'tokens'"),
        ("select", r"must look like key\.path=value"),
        ("select=1", r"name a field of step 'select'"),
        ("runner.kind=slurm", r"runner\.kind: Input should be 'local' or 'ray'"),
    ],
)
def test_bad_overrides_are_clear(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(BASE, [override])


def test_structural_errors() -> None:
    dup = {**BASE, "steps": [*BASE["steps"], {"score": {"name": "stats", "scorer": "doc_stats"}}]}
    with pytest.raises(RecipeError, match="two steps are named 'stats'"):
        parse_recipe(dup)
    wrong_ref = {**BASE, "steps": [{"select": {"scores": ["nothing"], "column": "q", "keep": 0.1}}]}
    with pytest.raises(RecipeError, match="'nothing' is neither an earlier score step"):
        parse_recipe(wrong_ref)
    with pytest.raises(RecipeError, match="unknown step kind 'shuffle'"):
        parse_recipe({**BASE, "steps": [{"shuffle": {}}]})
    no_corpus = {"name": "t", "steps": [{"stats": {}}]}
    with pytest.raises(RecipeError, match="needs a corpus"):
        parse_recipe(no_corpus)
    both = {
        **BASE,
        "steps": [
            {"score": {"scorer": "fasttext", "model": "m", "fit": {"positive": {"paths": ["p"]}}}}
        ],
    }
    with pytest.raises(RecipeError, match=r"either model .* or fit"):
        parse_recipe(both)
    with pytest.raises(RecipeError, match="must be a mapping"):
        parse_recipe(["not", "a", "mapping"])


def test_load_dump_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    r = load_recipe(path, ["select.keep=0.1"])
    again = parse_recipe(yaml.safe_load(dump_recipe(r)))
    assert again == r
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_shipped_recipes_parse() -> None:
    for recipe in sorted(Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml")):
        load_recipe(recipe)


def test_proxy_steps_and_references() -> None:
    data = {
        "name": "p",
        "corpus": {"paths": ["data/x"]},
        "steps": [
            {"tokenizer": {"vocab_size": 1024}},
            {"train_proxy": {"tokens": 1000, "tokenizer": "tokenizer", "train": {"lr": 0.01}}},
            {"eval": {"model": "train_proxy", "tasks": ["assay_champ"]}},
        ],
    }
    r = parse_recipe(data, ["train_proxy.train.batch_size=4", "train_proxy.mixture=uniform"])
    assert r.steps[1].train.model_dump(exclude_unset=True) == {"lr": 0.01, "batch_size": 4}
    assert r.steps[1].mixture == "uniform"
    with pytest.raises(RecipeError, match=r"unknown training settings \['learning_rate'\]"):
        parse_recipe(data, ["train_proxy.train.learning_rate=1"])
    with pytest.raises(RecipeError, match="unknown proxy preset 'huge'"):
        parse_recipe(data, ["train_proxy.preset=huge"])
    with pytest.raises(RecipeError, match="model names 'tokenizer', a tokenizer step"):
        parse_recipe(data, ["eval.model=tokenizer"])
    with pytest.raises(
        RecipeError, match=r"corpus\.step names 'nowhere', which is not an earlier step"
    ):
        parse_recipe(data, ["train_proxy.corpus.step=nowhere"])
    with pytest.raises(RecipeError, match="either paths or step"):
        parse_recipe(data, ["train_proxy.corpus.step=tokenizer", "train_proxy.corpus.paths=[a]"])
