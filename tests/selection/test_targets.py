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
