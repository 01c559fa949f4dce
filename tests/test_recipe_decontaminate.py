"""The target-driven recipes decontaminate by default: a `decontaminate` step drops the pool
documents that hold benchmark text (the scorer's targets and the evaluation set) and every
selection reads what is left; `decontaminate.drop=false` switches it off; a real run removes a
planted evaluation item from the selection, reports it, and resumes by content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_jsonl

from assay.common.targets import load_targets
from assay.io.corpus import Corpus
from assay.recipe import load_recipe
from assay.selection.decontam import DecontamScorer, fit_decontam

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TARGET_DRIVEN = {"betr": "betr", "preselect": "preselect", "mass": "mass", "mates": "mates"}


def _corpus_step(step) -> str | None:
    spec = getattr(step, "corpus", None)
    return spec.step if spec is not None else None


@pytest.mark.parametrize("name", sorted(TARGET_DRIVEN))
def test_target_driven_recipes_select_from_the_decontaminated_pool(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    steps = {s.name: s for s in recipe.steps}
    decon = steps["decontaminate"]
    assert decon.kind == "decontaminate" and decon.drop
    # the scorer's own targets, and the documents the compare step measures, are both indexed
    scorer = steps[TARGET_DRIVEN[name]]
    assert scorer.targets.source == decon.targets.source == "assay_champ"
    assert decon.targets.max_items is None  # every example, not the scorer's sample
    compare = steps["compare"]
    heldout = [
        p for s in recipe.steps if s.kind in ("train_proxy", "mates") for p in s.heldout.paths
    ]
    eval_dirs = {p for p in heldout if Path(p).name == "targets"}
    assert eval_dirs and all(
        any(
            Path(t).parent == Path(d) and compare.target in Path(t).name for t in decon.also_targets
        )
        for d in eval_dirs
    )
    # every step that scores or selects reads the decontaminated pool; proxies read selections
    order = [s.name for s in recipe.steps]
    for step in recipe.steps:
        if step.kind in ("betr", "preselect", "mass", "mates", "score", "select"):
            assert _corpus_step(step) == "decontaminate", step.name
            assert order.index(step.name) > order.index("decontaminate")
        if step.kind == "train_proxy":
            assert steps[_corpus_step(step)].kind == "select"
    # switched off with one override: the steps then read the pool as it is
    off = load_recipe(RECIPES / f"{name}.yaml", ["decontaminate.drop=false"])
    assert not {s.name: s for s in off.steps}["decontaminate"].drop


@pytest.fixture(scope="module")
def planted_pool(demo_records: list[dict], tmp_path_factory: pytest.TempPathFactory):
    """The small demo pool with one evaluation document's text planted in a news document, the
    benchmark examples and that evaluation set as files: (pool, targets, eval file, planted id).
    The pool's champ documents hold benchmark examples too."""
    root = tmp_path_factory.mktemp("planted-eval")
    champ = [{"text": t} for t in load_targets("assay_champ")]  # a file: read in no time
    write_jsonl(root / "champ.jsonl", champ)
    item = (
        "A bag holds seven marbles of which three are crimson and the rest are teal; two are "
        "drawn without replacement, and we want the probability that both drawn are crimson, "
        "written as a common fraction in lowest terms."
    )
    write_jsonl(
        root / "eval.jsonl",
        [
            {"id": "e0", "text": item},
            {
                "id": "e1",
                "text": "An unrelated evaluation item about the boiling point of water at sea level.",
            },
        ],
    )
    records = [dict(r) for r in demo_records]
    host = next(k for k, r in enumerate(records) if r["domain"] == "news")
    records[host]["text"] += "\n\n" + item
    write_jsonl(root / "pool" / "a.jsonl", records[:180])
    write_jsonl(root / "pool" / "b.jsonl", records[180:])
    return root / "pool", root / "champ.jsonl", root / "eval.jsonl", records[host]["id"]


def _recipe(pool: Path, champ: Path, eval_file: Path, tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: decon\nseed: 0\ncorpus: {{paths: [{pool}]}}\nsteps:\n"
        f"  - decontaminate: {{targets: {{source: {champ}}}, also_targets: [{eval_file}],"
        " drop: true}\n"
        f"  - dsir: {{corpus: {{step: decontaminate}}, targets: {{source: {champ}}}}}\n"
        "  - select: {corpus: {step: decontaminate}, scores: [dsir], column: dsir, keep: 0.5,"
        " group_by: null}\n"
    )
    return path


def _ids(folder: str | Path) -> set[str]:
    return {i for b in Corpus(folder).iter_batches() for i in b.get_column("id")}


def test_a_planted_eval_item_is_removed_reported_and_resumed(planted_pool, tmp_path) -> None:
    from assay.recipe.pipeline import run_recipe

    pool, champ, eval_file, planted = planted_pool
    # what holds benchmark text, found independently of the step
    index = fit_decontam(str(champ), also=[str(eval_file)])
    texts = {i: t for b in Corpus(pool).iter_batches() for i, t in b.select("id", "text").rows()}
    counts = index.score(list(texts.values()))
    dirty = {i for i, c in zip(texts, counts, strict=True) if c > 0}
    assert planted in dirty and len(dirty) > 5  # the demo's champ documents, and the plant

    recipe = _recipe(pool, champ, eval_file, tmp_path)
    out = run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    decon = out.step("decontaminate")
    assert decon.summary["removed"] == len(dirty) == decon.summary["contaminated"]
    assert _ids(decon.outputs["clean"]) == set(texts) - dirty
    chosen = _ids(out.step("select").outputs["selected"])
    assert chosen and chosen.isdisjoint(dirty)
    # the report names the planted item by its source, with the document count
    report = json.loads((Path(decon.outputs["scores"]) / "contamination.json").read_text())
    rows = [r for r in report["items"] if r.get("source") == str(eval_file)]
    assert [(r["source_item"], r["documents"]) for r in rows] == [(0, 1)]
    assert rows[0]["text"].startswith("A bag holds seven marbles")
    assert {r["source"] for r in report["items"]} == {str(champ), str(eval_file)}

    # a second run reuses every step: nothing changed
    again = run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    assert [s.status for s in again.steps] == ["reused"] * 3
    assert _ids(again.step("select").outputs["selected"]) == chosen

    # switched off: the report stays, and a later step reads the pool itself, whole
    off = tmp_path / "off.yaml"
    off.write_text(
        f"name: nodrop\nseed: 0\ncorpus: {{paths: [{pool}]}}\nsteps:\n"
        f"  - decontaminate: {{targets: {{source: {champ}}}, also_targets: [{eval_file}]}}\n"
        "  - select: {corpus: {step: decontaminate}, scores: [decontaminate], policy: threshold,"
        " column: contam_ngrams, threshold: 0, group_by: null}\n"
    )
    whole = run_recipe(off, run_dir=tmp_path / "off", progress=False)
    assert whole.step("decontaminate").summary["removed"] == 0
    assert whole.step("decontaminate").summary["contaminated"] == len(dirty)
    assert whole.step("decontaminate").outputs["clean"] == str(pool)
    assert _ids(whole.step("select").outputs["selected"]) == set(texts)


def test_several_sources_are_indexed_in_order_and_named(tmp_path: Path) -> None:
    eval_file = write_jsonl(tmp_path / "e.jsonl", [{"text": "alpha beta gamma delta " * 4}])
    scorer = fit_decontam(["one two three four five six seven eight nine"], also=[eval_file])
    assert isinstance(scorer, DecontamScorer) and len(scorer.targets) == 2
    assert scorer.report["sources"] == [
        {"source": "texts", "targets": 1},
        {"source": str(eval_file), "targets": 1},
    ]
    got = scorer.score_table(["So: " + "alpha, beta. Gamma delta " * 4])
    assert got["contam_item"].tolist() == [1.0]
