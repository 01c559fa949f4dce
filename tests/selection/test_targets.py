"""Target examples: built-in benchmarks, files, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.common.targets import load_targets


def test_builtin_benchmark_examples_join_question_and_answer() -> None:
    texts = load_targets("assay_champ")
    assert len(texts) > 200
    assert all("\n" in t for t in texts)  # question, then the answer text (not its index)
    sub = load_targets("assay_mmlu_dev", max_items=20, seed=1)
    assert len(sub) == 20 and sub == load_targets("assay_mmlu_dev", max_items=20, seed=1)


def test_files_with_fields(tmp_path: Path) -> None:
    path = tmp_path / "targets.jsonl"
    rows = [
        {"question": "What is 2+2?", "choices": ["3", "4"], "answer": 1, "support": "Add."},
        {
            "question": "Capital of France?",
            "choices": ["Paris", "Rome"],
            "answer": 0,
            "support": "",
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_targets(path) == ["What is 2+2?\n4", "Capital of France?\nParis"]
    assert load_targets(path, ["question", "answer", "support"])[0] == "What is 2+2?\n4\nAdd."
    (tmp_path / "t.json").write_text(json.dumps([{"text": "a whole example"}]))
    assert load_targets(tmp_path / "t.json") == ["a whole example"]


def test_bad_target_sets_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2"}\n')
    with pytest.raises(ValueError, match=r"t.jsonl: line 2: .*no field 'answer'"):
        load_targets(path)
    path.write_text('{"question": "q1", "answer": "a1"}\n{not json\n')
    with pytest.raises(ValueError, match=r"t.jsonl: line 2: not valid JSON"):
        load_targets(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="target set is empty"):
        load_targets(path)
    with pytest.raises(FileNotFoundError):
        load_targets(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="target set is empty"):
        load_targets([])


def test_a_folder_of_shards_is_one_target_set(tmp_path: Path, demo_dir: Path) -> None:
    """A sharded reference set (the demo's held-out split: one gzip shard per domain) reads as
    its files' records in name order; a bad record names its own file and line, and a recipe's
    identity of the folder changes when one of its files does."""
    from assay.common.targets import file_records
    from assay.recipe.spec import TargetSpec
    from assay.recipe.step import targets_identity
    from assay.util.files import open_read

    held = demo_dir / "heldout"
    shards = sorted(held.glob("*.jsonl.gz"))
    assert len(shards) == 4
    expected = []
    for shard in shards:
        with open_read(shard) as f:
            expected += [json.loads(line)["text"].strip() for line in f.read().splitlines()]
    assert load_targets(held) == expected
    assert file_records(held)[0][0] == f"{shards[0]}: line 1"

    folder = tmp_path / "ref"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "first shard"}\n')
    (folder / "b.jsonl").write_text('{"text": "second"}\n{"txt": "no text field"}\n')
    (folder / "notes.md").write_text("not a target file\n")
    (folder / "_assay.json").write_text('{"kind": "selection"}\n')  # assay's own marker
    (folder / ".a.jsonl.tmp.jsonl").write_text('{"text": "a hidden partial write"}\n')
    before = targets_identity(TargetSpec(source=str(folder)))
    with pytest.raises(ValueError, match=r"b\.jsonl: line 2: .*no field"):
        load_targets(folder, ["text"])
    (folder / "b.jsonl").write_text('{"text": "second"}\n')
    assert load_targets(folder) == ["first shard", "second"]
    assert targets_identity(TargetSpec(source=str(folder))) != before
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no target files in the folder"):
        load_targets(empty)
